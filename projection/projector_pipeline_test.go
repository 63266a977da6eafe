package projection_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// gateJS holds back the ack of every asynchronous publish until open is
// called, and records what was published, in order.
type gateJS struct {
	jetstream.JetStream
	gate     chan struct{}
	openOnce sync.Once
	wg       sync.WaitGroup

	mu       sync.Mutex
	subjects []string
}

func newGateJS(js jetstream.JetStream) *gateJS {
	return &gateJS{JetStream: js, gate: make(chan struct{})}
}

func (j *gateJS) open() { j.openOnce.Do(func() { close(j.gate) }) }

func (j *gateJS) published() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.subjects)
}

// gatedFuture delivers its inner future's result once the gate is open.
type gatedFuture struct {
	jetstream.PubAckFuture
	ok  chan *jetstream.PubAck
	err chan error
}

func (f *gatedFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *gatedFuture) Err() <-chan error            { return f.err }

func (j *gateJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	f, err := j.JetStream.PublishMsgAsync(m, opts...)
	if err != nil {
		return nil, err
	}
	j.mu.Lock()
	j.subjects = append(j.subjects, m.Subject)
	j.mu.Unlock()
	g := &gatedFuture{PubAckFuture: f, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		var ack *jetstream.PubAck
		var perr error
		select {
		case ack = <-f.Ok():
		case perr = <-f.Err():
		}
		<-j.gate
		if perr != nil {
			g.err <- perr
			return
		}
		g.ok <- ack
	}()
	return g, nil
}

// readsStore is a BoltStore that records the documents read (Get).
type readsStore struct {
	*projection.BoltStore
	mu   sync.Mutex
	read map[string]bool // by document id
}

func (s *readsStore) Get(ctx context.Context, addr events.DocAddress) (projection.Doc, error) {
	s.mu.Lock()
	s.read[addr.Doc] = true
	s.mu.Unlock()
	return s.BoltStore.Get(ctx, addr)
}

func (s *readsStore) wasRead(doc string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.read[doc]
}

// TestProjector_DecidesNextBatchWhilePublishing: while one batch's
// publishes wait for their acks, the projector decides the next batch
// (it reads the next batch's documents), but commits nothing of it,
// publishes nothing of it, acks nothing and reports no progress in Stats
// until the first batch has landed, so the outbox never holds more than
// the batch in flight; then everything goes out, in stream order.
func TestProjector_DecidesNextBatchWhilePublishing(t *testing.T) {
	e := newEnv(t)
	store := &readsStore{BoltStore: mustOpenBolt(t, ""), read: map[string]bool{}}
	w := newWriter("acme", "phone", 0)
	const n = 6
	var docs, subjects []string
	for i := range n {
		doc := fmt.Sprintf("d%d", i)
		docs = append(docs, doc)
		subjects = append(subjects, events.ChangeSubject("acme", "notes", doc))
		ev := w.event("notes", doc, events.OpPut, 0, map[string]any{"n": i})
		publish(t, e.js, eventMsg(t, ev), ev.ID)
	}
	js := newGateJS(e.js)
	t.Cleanup(func() { js.open(); js.wg.Wait() })
	p := startProjector(t, js, store, projection.Config{Policies: testPolicies(), BatchSize: 2})

	// A batch holds at most 2 events: reading d2 (the third event) is
	// deciding a second batch while the first waits for its acks.
	waitFor(t, 30*time.Second, "the next batch decided while the first is unacked", func() bool {
		return store.wasRead(docs[2])
	})
	cp, err := store.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cp > 2 {
		t.Fatalf("store checkpoint %d with the first batch unacked: a later batch was committed before it landed", cp)
	}
	if got := p.Stats().Checkpoint; got != 0 {
		t.Fatalf("Stats().Checkpoint = %d with no publish acked, want 0", got)
	}
	for _, s := range js.published() {
		if s == subjects[2] || s == subjects[3] {
			t.Fatalf("published %s of a later batch before the first batch landed: %v", s, js.published())
		}
	}

	js.open()
	waitCheckpoint(t, p, n)
	var changes []string
	for _, s := range js.published() {
		if slices.Contains(subjects, s) {
			changes = append(changes, s)
		}
	}
	if !slices.Equal(changes, subjects) {
		t.Fatalf("changes published in order %v, want %v", changes, subjects)
	}
	if got := msgCount(t, e.js, events.StreamChanges); got != n {
		t.Fatalf("CHANGES holds %d messages, want %d", got, n)
	}
}

// TestProjector_RepublishKeepsEveryUnpublishedVersion: a document whose
// version 1 is in CHANGES, and a projector killed before it published
// anything of a batch holding versions 2 and 3 of it: both stay in the
// outbox. The next start must publish both, in order: CHANGES holds
// neither, so neither can be stored after a newer one, and leaving 2 out
// (the view's version is 3) would drop it from the live feed, as
// TestProjector_Crash saw now and then ("version 3 never published").
func TestProjector_RepublishKeepsEveryUnpublishedVersion(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	ctx := context.Background()
	addr := events.DocAddress{Tenant: "acme", Collection: "notes", Doc: "d"}
	subject := events.ChangeSubject(addr.Tenant, addr.Collection, addr.Doc)
	var docs []projection.Doc
	var outbox []projection.OutboxEntry
	for v := uint64(1); v <= 3; v++ {
		d := projection.Doc{Tenant: addr.Tenant, Collection: addr.Collection, ID: addr.Doc, Version: v,
			Fields: events.Fields{"n": []byte(fmt.Sprint(v))}, HLC: events.HLC{Wall: 1, Logical: uint32(v)},
			Event: events.NewIDSource(nil).New().String(), Client: "phone", Seq: v}
		data, err := events.EncodeChange(d.Change(nil))
		if err != nil {
			t.Fatal(err)
		}
		msgID := fmt.Sprintf("chg:acme/notes/d:%d", v)
		if v == 1 { // published and removed from the outbox by an earlier batch
			publish(t, e.js, &nats.Msg{Subject: subject, Data: data}, msgID)
			continue
		}
		docs = append(docs, d)
		outbox = append(outbox, projection.OutboxEntry{Subject: subject, MsgID: msgID, Data: data})
	}
	// Stream marks as the earlier run left them, so the start does not
	// reseed CHANGES.
	b := &projection.Batch{Docs: docs, Outbox: outbox, Streams: &projection.StreamMarks{}}
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
	var mu sync.Mutex
	var seen []uint64
	sub, err := e.nc.Subscribe(subject, func(m *nats.Msg) {
		c, err := events.DecodeChange(m.Data)
		if err != nil {
			t.Errorf("change on %s: %v", m.Subject, err)
			return
		}
		mu.Lock()
		seen = append(seen, c.Version)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	p := startProjector(t, e.js, store, projection.Config{})
	waitFor(t, 10*time.Second, "version 3 published", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(seen, 3)
	})
	mu.Lock()
	got := slices.Clone(seen)
	mu.Unlock()
	if !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("published versions %v from the outbox, want [2 3]", got)
	}
	if s := p.Stats(); s.Reseeds != 0 {
		t.Fatalf("stats %+v: CHANGES was reseeded, which hides the outbox's order", s)
	}
	if c := lastChange(t, e.js, addr); c.Version != 3 {
		t.Fatalf("CHANGES holds v%d, want v3", c.Version)
	}
}
