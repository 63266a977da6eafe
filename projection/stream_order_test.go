package projection_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// losePubJS is the real JetStream, except that the first asynchronous
// publish lose picks is never sent and fails, as a publish lost with its
// connection would.
type losePubJS struct {
	jetstream.JetStream
	lose func(m *nats.Msg) bool
	once sync.Once
	lost atomic.Bool
}

var errLost = errors.New("publish lost")

func (j *losePubJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	lose := false
	if j.lose(m) {
		j.once.Do(func() { lose = true })
	}
	if lose {
		j.lost.Store(true)
		errs := make(chan error, 1)
		errs <- errLost
		return failedFuture{m: m, errs: errs}, nil
	}
	return j.JetStream.PublishMsgAsync(m, opts...)
}

// failedFuture is a PubAckFuture that has failed.
type failedFuture struct {
	m    *nats.Msg
	errs chan error
}

func (f failedFuture) Ok() <-chan *jetstream.PubAck { return nil }
func (f failedFuture) Err() <-chan error            { return f.errs }
func (f failedFuture) Msg() *nats.Msg               { return f.m }

// lastChange returns the change CHANGES holds for addr.
func lastChange(tb testing.TB, js jetstream.JetStream, addr events.DocAddress) *events.Change {
	tb.Helper()
	s, err := js.Stream(context.Background(), events.StreamChanges)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), events.ChangeSubject(addr.Tenant, addr.Collection, addr.Doc))
	if err != nil {
		tb.Fatalf("last change of %v: %v", addr, err)
	}
	c, err := events.DecodeChange(m.Data)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// TestProjector_OutboxRetryKeepsVersionOrder loses the publish of v1 of a
// document whose v2 is in the same outbox chunk: the retry must not leave
// v1 as CHANGES' last word on it.
func TestProjector_OutboxRetryKeepsVersionOrder(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	w := newWriter("acme", "phone", 0)
	v1 := w.event("notes", "hot", events.OpPut, 0, map[string]any{"n": 1})
	publish(t, e.js, eventMsg(t, v1), v1.ID)
	v2 := w.event("notes", "hot", events.OpPatch, 1, map[string]any{"n": 2})
	last := publish(t, e.js, eventMsg(t, v2), v2.ID)
	hot := events.ChangeSubject("acme", "notes", "hot")
	js := &losePubJS{JetStream: e.js, lose: func(m *nats.Msg) bool {
		if m.Subject != hot {
			return false
		}
		c, err := events.DecodeChange(m.Data)
		return err == nil && c.Version == 1
	}}
	p, err := projection.New(js, store, projection.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	waitCheckpoint(t, p, last)
	if !js.lost.Load() {
		t.Fatal("v1's publish was never lost")
	}
	if s := p.Stats(); s.Batches != 1 {
		t.Logf("stats %+v: the two events went in separate batches; TestProjector_OutboxRetryKeepsVersionOrderAtStart covers one chunk for sure", s)
	}
	if c := lastChange(t, e.js, v1.Address()); c.Version != 2 {
		t.Fatalf("CHANGES holds v%d of %s (event %s), want v2", c.Version, hot, c.Event)
	}
}

// TestProjector_OutboxRetryKeepsVersionOrderAtStart is the same with the
// two changes left in the outbox by an earlier run, so they are certainly
// in one chunk: Start republishes the outbox, and CHANGES must end with
// v2. v1 is not published at all: the view's v2 supersedes it, and a
// republish leaves superseded changes out (see
// TestProjector_OutboxRepublishAfterServerRestartKeepsVersionOrder for
// why); were it sent, its publish would be lost.
func TestProjector_OutboxRetryKeepsVersionOrderAtStart(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	addr := events.DocAddress{Tenant: "acme", Collection: "notes", Doc: "hot"}
	subject := events.ChangeSubject(addr.Tenant, addr.Collection, addr.Doc)
	// Stream marks as a run that had published into this CHANGES would
	// leave them, so the start does not reseed CHANGES (which would hide
	// the order of the outbox).
	b := &projection.Batch{Streams: &projection.StreamMarks{}}
	for name, m := range map[string]*projection.StreamMark{events.StreamEvents: &b.Streams.Events, events.StreamChanges: &b.Streams.Changes} {
		s, err := e.js.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		m.Created = s.CachedInfo().Created
	}
	for v := uint64(1); v <= 2; v++ {
		d := projection.Doc{Tenant: addr.Tenant, Collection: addr.Collection, ID: addr.Doc, Version: v,
			Fields: events.Fields{"n": []byte(fmt.Sprint(v))}, Event: fmt.Sprintf("01JTESTEVENT00000000000%03d", v), Client: "phone", Seq: v}
		data, err := events.EncodeChange(d.Change(nil))
		if err != nil {
			t.Fatal(err)
		}
		b.Docs = append(b.Docs, d)
		b.Outbox = append(b.Outbox, projection.OutboxEntry{Subject: subject, MsgID: "chg:" + d.Event, Data: data})
	}
	if err := store.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	var v1Sent atomic.Int32
	js := &losePubJS{JetStream: e.js, lose: func(m *nats.Msg) bool {
		c, err := events.DecodeChange(m.Data)
		v1 := m.Subject == subject && err == nil && c.Version == 1
		if v1 {
			v1Sent.Add(1)
		}
		return v1
	}}
	p := startProjector(t, js, store, projection.Config{})
	if n := v1Sent.Load(); n != 0 {
		t.Fatalf("v1 was published %d times by the start, though the view's v2 supersedes it", n)
	}
	if s := p.Stats(); s.Reseeds != 0 {
		t.Fatalf("stats %+v: CHANGES was reseeded, which hides the outbox's order", s)
	}
	if c := lastChange(t, e.js, addr); c.Version != 2 {
		t.Fatalf("CHANGES holds v%d of %s, want v2", c.Version, subject)
	}
}
