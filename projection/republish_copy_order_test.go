package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestProjector_RepublishAfterServerRestartPutsTheOldAudienceLast: one batch
// held t1's change (v1, readers team red) and, after l1 moved to team
// blue, reemitFollowers' copy of t1 at the SAME version (readers blue, was
// red). Both were published; the machine died before the next commit
// removed them (kill -9 of projector and NATS alike). NATS restarted
// remembers only the ids of messages it holds: the copy's. The restarted
// projector's republish keeps every change "at or above the stored
// version" (current): the original v1 is >= 1, goes, is stored (its id is
// forgotten); the copy is then dropped as a duplicate. CHANGES ends with
// t1 readable by team red, which may no longer read it, and no Left.
func TestProjector_RepublishAfterServerRestartPutsTheOldAudienceLast(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	ctx := context.Background()
	rs := mustRules(t, testRules)
	ann := newWriter("acme", "ann", 0)
	now := events.HLC{Wall: time.Now().UnixMilli()}
	l1 := projection.Doc{Tenant: "acme", Collection: "lists", ID: "l1", Version: 2, HLC: now,
		Fields: events.Fields{"owner": []byte(`"ann"`), "team": []byte(`"blue"`)}, Event: ann.ids.New().String(), Client: "ann", Seq: 2}
	t1 := projection.Doc{Tenant: "acme", Collection: "todos", ID: "t1", Version: 1, HLC: now,
		Fields: events.Fields{"list": []byte(`"l1"`)}, Event: ann.ids.New().String(), Client: "ann", Seq: 1}
	enc := func(d projection.Doc) []byte {
		b, err := events.EncodeChange(d.Change(nil))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	subj := events.ChangeSubject("acme", "todos", "t1")
	red := map[string][]string{events.HeaderReaders: {"g:red u:ann"}, events.HeaderWasReaders: {""}}
	blue := map[string][]string{events.HeaderReaders: {"g:blue u:ann"}, events.HeaderWasReaders: {"g:red u:ann"}}
	orig := projection.OutboxEntry{Subject: subj, MsgID: "chg:acme/todos/t1:1", Header: red, Data: enc(t1)}
	cp := projection.OutboxEntry{Subject: subj, MsgID: "follow:" + l1.Event + ":" + subj + ":1", Header: blue, Data: enc(t1)}
	lch := projection.OutboxEntry{Subject: events.ChangeSubject("acme", "lists", "l1"), MsgID: "chg:acme/lists/l1:2",
		Header: map[string][]string{events.HeaderReaders: {"g:blue u:ann"}, events.HeaderWasReaders: {"g:red u:ann"}}, Data: enc(l1)}
	outbox := []projection.OutboxEntry{orig, lch, cp} // the batch's order: t1's change, l1's, the copy
	// What the crashed run had published (rounds: orig and lch, then cp).
	for _, en := range outbox {
		m := &nats.Msg{Subject: en.Subject, Data: en.Data, Header: nats.Header(en.Header)}
		publish(t, e.js, m, en.MsgID)
	}
	b := &projection.Batch{Docs: []projection.Doc{l1, t1}, Outbox: outbox, Streams: &projection.StreamMarks{Rules: rs.Fingerprint()}}
	for name, m := range map[string]*projection.StreamMark{events.StreamEvents: &b.Streams.Events, events.StreamChanges: &b.Streams.Changes} {
		s, err := e.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		m.Created = s.CachedInfo().Created
	}
	if err := store.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	if r, _, _ := audienceOf(lastChangeMsg(t, e.js, "acme", "todos", "t1")); r != "g:blue u:ann" {
		t.Fatalf("before the crash t1's last change reads %q", r)
	}
	e.nc.Close()
	srv := embeddedtest.MustRestart(t, e.srv)
	nc := embeddedtest.MustConnect(t, srv)
	js := embeddedtest.MustJetStream(t, nc)
	p := startProjector(t, js, store, projection.Config{Rules: rs})
	if s := p.Stats(); s.Reseeds != 0 {
		t.Fatalf("reseeded: %+v", s)
	}
	m := lastChangeMsg(t, js, "acme", "todos", "t1")
	if r, w, _ := audienceOf(m); r != "g:blue u:ann" {
		t.Fatalf("after the restart t1's last change in CHANGES reads readers=%q was=%q (msg id %s): team red reads it again",
			r, w, m.Header.Get("Nats-Msg-Id"))
	}
}
