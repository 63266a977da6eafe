package projection_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// outboxOfTwoVersions commits to store what a run leaves when it is killed
// after publishing a batch that made v1 and v2 of one document and before
// it removed them from the outbox: the view at v2, both changes in the
// outbox, and stream marks as that run recorded them (so the next start
// does not reseed CHANGES, which would hide the outbox's order). It
// publishes both changes to CHANGES, as the killed run did, and returns
// the document's address.
func outboxOfTwoVersions(t *testing.T, e *env, store projection.Store) events.DocAddress {
	t.Helper()
	ctx := context.Background()
	addr := events.DocAddress{Tenant: "acme", Collection: "notes", Doc: "hot"}
	subject := events.ChangeSubject(addr.Tenant, addr.Collection, addr.Doc)
	b := &projection.Batch{Streams: &projection.StreamMarks{}}
	for name, m := range map[string]*projection.StreamMark{events.StreamEvents: &b.Streams.Events, events.StreamChanges: &b.Streams.Changes} {
		s, err := e.js.Stream(ctx, name)
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
		b.Outbox = append(b.Outbox, projection.OutboxEntry{Subject: subject, MsgID: fmt.Sprintf("chg:acme/notes/hot:%d", v), Data: data})
	}
	for _, o := range b.Outbox {
		publish(t, e.js, &nats.Msg{Subject: subject, Data: o.Data}, o.MsgID)
	}
	b.Streams.Changes.LastSeq, b.Streams.Changes.Msgs = lastSeq(t, e.js, events.StreamChanges), 1
	b.Streams.Docs, b.Streams.DocsCounted = 1, true
	if err := store.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	return addr
}

// restartEnv restarts e's server on its storage and port and reconnects.
func restartEnv(t *testing.T, e *env) *env {
	t.Helper()
	e.nc.Close()
	s := embeddedtest.MustRestart(t, e.srv)
	nc := embeddedtest.MustConnect(t, s)
	return &env{srv: s, nc: nc, js: embeddedtest.MustJetStream(t, nc)}
}

// TestProjector_OutboxRepublishAfterServerRestartKeepsVersionOrder: a run
// published v1 and v2 of a document from one batch and was killed before it
// removed them from the outbox; the server restarted too (ebb serve's
// embedded NATS dies with it). A restarted JetStream rebuilds its dedupe
// window from the messages it still holds, and CHANGES, one message per
// document, no longer holds v1: republishing the outbox as it stands stores
// v1 again, after v2, and drops v2's republish as a duplicate, so CHANGES'
// last word on the document is the older state, for good.
func TestProjector_OutboxRepublishAfterServerRestartKeepsVersionOrder(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	addr := outboxOfTwoVersions(t, e, store)
	e = restartEnv(t, e)
	p := startProjector(t, e.js, store, projection.Config{})
	if s := p.Stats(); s.Reseeds != 0 {
		t.Fatalf("stats %+v: CHANGES was reseeded, which hides the outbox's order", s)
	}
	if c := lastChange(t, e.js, addr); c.Version != 2 {
		t.Fatalf("CHANGES holds v%d of %v, want v2", c.Version, addr)
	}
}

// storeThenRestartJS is the real JetStream, except that the first
// asynchronous publish hit picks is stored, then the server restarts
// (restart) and the publish fails, as one whose ack a cluster's leader
// change or a server restart lost would.
type storeThenRestartJS struct {
	jetstream.JetStream
	hit     func(m *nats.Msg) bool
	restart func() error
	once    sync.Once
	fired   atomic.Bool
	err     atomic.Value // error: of the store or the restart
}

func (j *storeThenRestartJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	fire := false
	if j.hit(m) {
		j.once.Do(func() { fire = true })
	}
	if !fire {
		return j.JetStream.PublishMsgAsync(m, opts...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := j.JetStream.PublishMsg(ctx, m, opts...); err != nil {
		j.err.Store(fmt.Errorf("store %s: %w", m.Subject, err))
	} else if err := j.restart(); err != nil {
		j.err.Store(fmt.Errorf("restart: %w", err))
	}
	j.fired.Store(true)
	errs := make(chan error, 1)
	errs <- errLost
	return failedFuture{m: m, errs: errs}, nil
}

// TestProjector_OutboxRetryAfterServerRestartKeepsVersionOrder: one batch
// makes v1 and v2 of a document; v1 is published, v2 is stored but its ack
// is lost to a server restart, so the projector retries the batch's
// outbox. The restarted server no longer knows v1's message id (CHANGES
// dropped v1 for v2): sending v1 again would store it after v2 and drop
// v2's retry as a duplicate. The retry must leave v1, which the view's v2
// supersedes, out.
func TestProjector_OutboxRetryAfterServerRestartKeepsVersionOrder(t *testing.T) {
	srv := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, srv, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	ejs := embeddedtest.MustJetStream(t, nc)
	if err := events.EnsureStreams(context.Background(), ejs, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	store := mustOpenBolt(t, "")
	w := newWriter("acme", "phone", 0)
	v1 := w.event("notes", "hot", events.OpPut, 0, map[string]any{"n": 1})
	publish(t, ejs, eventMsg(t, v1), v1.ID)
	v2 := w.event("notes", "hot", events.OpPatch, 1, map[string]any{"n": 2})
	last := publish(t, ejs, eventMsg(t, v2), v2.ID)
	hot := events.ChangeSubject("acme", "notes", "hot")
	var restarted *embedded.Server
	t.Cleanup(func() {
		if restarted != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			restarted.Shutdown(ctx)
		}
	})
	js := &storeThenRestartJS{JetStream: ejs, hit: func(m *nats.Msg) bool {
		c, err := events.DecodeChange(m.Data)
		return m.Subject == hot && err == nil && c.Version == 2
	}, restart: func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cfg := srv.Config()
		if err := srv.Shutdown(ctx); err != nil {
			return err
		}
		s, err := embedded.Start(ctx, cfg)
		restarted = s
		return err
	}}
	p := startProjector(t, js, store, projection.Config{})
	waitCheckpoint(t, p, last)
	if !js.fired.Load() {
		t.Fatal("v2's ack was never lost")
	}
	if err, _ := js.err.Load().(error); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Batches != 1 {
		t.Fatalf("stats %+v: the two events went in separate batches, so no retry held both", s)
	}
	// The retry is done once the outbox is empty.
	waitFor(t, 30*time.Second, "an empty outbox", func() bool {
		o, err := store.Outbox(context.Background(), 0)
		return err == nil && len(o) == 0
	})
	if c := lastChange(t, ejs, v1.Address()); c.Version != 2 {
		t.Fatalf("CHANGES holds v%d of %s (event %s), want v2", c.Version, hot, c.Event)
	}
}
