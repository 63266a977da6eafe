package projection_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// lossyJS is the real JetStream, except that the consumers the projector
// creates through it lose the deliveries drop picks (nil: none), as a
// connection dropped mid-pull or nats.go's slow-consumer limit would: the
// server counts them delivered, the projector never sees them. It counts
// the calls of the projector's consume callback, begun and returned.
type lossyJS struct {
	jetstream.JetStream
	drop              func(md *jetstream.MsgMetadata) bool
	entered, returned atomic.Int64
}

func (j *lossyJS) CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := j.JetStream.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, err
	}
	return &lossyConsumer{Consumer: c, js: j}, nil
}

type lossyConsumer struct {
	jetstream.Consumer
	js *lossyJS
}

func (c *lossyConsumer) Consume(h jetstream.MessageHandler, opts ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error) {
	return c.Consumer.Consume(func(m jetstream.Msg) {
		if md, err := m.Metadata(); err == nil && c.js.drop != nil && c.js.drop(md) {
			return
		}
		c.js.entered.Add(1)
		defer c.js.returned.Add(1)
		h(m)
	}, opts...)
}

// dropOnce loses the first delivery of stream sequence seq.
func dropOnce(seq uint64) func(*jetstream.MsgMetadata) bool {
	var dropped atomic.Bool
	return func(md *jetstream.MsgMetadata) bool {
		return md.Sequence.Stream == seq && dropped.CompareAndSwap(false, true)
	}
}

// publishPuts publishes n events of one writer into EVENTS, each a put of
// its own document (so an event lost changes the view), and returns them
// with the stream sequence of the last.
func publishPuts(tb testing.TB, e *env, w *writer, n int) ([]*events.Event, uint64) {
	tb.Helper()
	evs := make([]*events.Event, n)
	for i := range evs {
		evs[i] = w.event("notes", fmt.Sprintf("n%d.%d", w.seq, i), events.OpPut, 0, map[string]any{"i": i})
		if _, err := e.js.PublishMsgAsync(eventMsg(tb, evs[i]), jetstream.WithMsgID(evs[i].ID)); err != nil {
			tb.Fatal(err)
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		tb.Fatal("publishing events stalled")
	}
	return evs, lastSeq(tb, e.js, events.StreamEvents)
}

// checkAppliedOnce checks that every event in evs was applied exactly once:
// the projector's counters, one receipt each (RECEIPTS drops a republished
// one by its msg id, so also the count of applied outcomes), and a view
// equal to its rebuild from EVENTS.
func checkAppliedOnce(t *testing.T, e *env, p *projection.Projector, store projection.Store, evs []*events.Event) {
	t.Helper()
	if s := p.Stats(); s.Applied != uint64(len(evs)) || s.Duplicates != 0 || s.Dead != 0 {
		t.Errorf("stats %+v, want %d applied, no duplicates", s, len(evs))
	}
	waitFor(t, 10*time.Second, "a receipt per event", func() bool { return msgCount(t, e.js, events.StreamReceipts) >= uint64(len(evs)) })
	got := map[string]events.Outcome{}
	for _, m := range readAll(t, e.js, events.StreamReceipts) {
		r, err := events.DecodeReceipt(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := got[r.Event]; ok {
			t.Errorf("event %s has two receipts", r.Event)
		}
		got[r.Event] = r.Outcome
	}
	for _, ev := range evs {
		if got[ev.ID] != events.OutcomeApplied {
			t.Errorf("event %s (client seq %d): receipt %q, want applied", ev.ID, ev.Seq, got[ev.ID])
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := projection.Verify(context.Background(), e.js, store, projection.Config{}); err != nil {
		t.Fatal(err)
	}
}

// TestProjector_MissedDeliveries loses deliveries between a real JetStream
// and the projector, and checks that every event is still applied exactly
// once: a delivery missing in the middle (the next one shows the gap), the
// last one missing (nothing later shows it), and the consumer deleted
// under the running projector.
func TestProjector_MissedDeliveries(t *testing.T) {
	const n = 200
	tests := []struct {
		name string
		// drop picks the deliveries to lose, given the stream sequence of
		// the last event (events are 1..last).
		drop func(last uint64) func(*jetstream.MsgMetadata) bool
		// during runs once the projector has applied the first n events;
		// it may publish more and returns them.
		during func(t *testing.T, e *env, w *writer) []*events.Event
	}{
		{name: "gap", drop: func(last uint64) func(*jetstream.MsgMetadata) bool { return dropOnce(last / 4) }},
		{name: "lost tail", drop: func(last uint64) func(*jetstream.MsgMetadata) bool { return dropOnce(last) }},
		{
			name: "consumer deleted",
			during: func(t *testing.T, e *env, w *writer) []*events.Event {
				if err := e.js.DeleteConsumer(context.Background(), events.StreamEvents, projection.DefaultDurable); err != nil {
					t.Fatal(err)
				}
				evs, _ := publishPuts(t, e, w, n)
				return evs
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			store := mustOpenBolt(t, "")
			w := newWriter("acme", "phone", 0)
			evs, last := publishPuts(t, e, w, n)
			js := &lossyJS{JetStream: e.js}
			if tt.drop != nil {
				js.drop = tt.drop(last)
			}
			p, err := projection.New(js, store, projection.Config{BatchSize: 16})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			waitCheckpoint(t, p, last)
			if tt.during != nil {
				evs = append(evs, tt.during(t, e, w)...)
				waitCheckpoint(t, p, lastSeq(t, e.js, events.StreamEvents))
			}
			if s := p.Stats(); s.Resets == 0 {
				t.Errorf("stats %+v: the consumer was never recreated", s)
			}
			checkAppliedOnce(t, e, p, store, evs)
		})
	}
}

// failingStore is a BoltStore whose Commit number failAt fails, after
// calling before with the batch.
type failingStore struct {
	*projection.BoltStore
	failAt  int
	before  func(*projection.Batch)
	commits atomic.Int32
}

var errCommit = errors.New("disk on fire")

func (s *failingStore) Commit(ctx context.Context, b *projection.Batch) error {
	if int(s.commits.Add(1)) == s.failAt {
		if s.before != nil {
			s.before(b)
		}
		return errCommit
	}
	return s.BoltStore.Commit(ctx, b)
}

// TestProjector_StopsOnFatalError fails the second commit while thousands
// of events are waiting, once the projector's consume callback is blocked
// on its full channel of messages: the projector must still stop (Done
// closed) and report the commit error.
func TestProjector_StopsOnFatalError(t *testing.T) {
	const batchSize = 8
	e := newEnv(t)
	js := &lossyJS{JetStream: e.js}
	store := &failingStore{BoltStore: mustOpenBolt(t, ""), failAt: 2}
	store.before = func(b *projection.Batch) {
		// Events are stream sequences 1..3000 and every one the loop took
		// is in a batch, so it took b.Checkpoint. The callbacks that
		// returned filled the loop's channel (2*BatchSize) with the rest;
		// one more under way is blocked.
		// Commit runs on the projector's goroutine: no t.Fatal here.
		deadline := time.Now().Add(10 * time.Second)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			returned := js.returned.Load()
			if returned-int64(b.Checkpoint) == 2*batchSize && js.entered.Load() == returned+1 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("the consume callback never blocked: %d calls returned, %d begun, %d messages taken",
					returned, js.entered.Load(), b.Checkpoint)
				return
			}
			<-tick.C
		}
	}
	publishPuts(t, e, newWriter("acme", "phone", 0), 3000)
	p, err := projection.New(js, store, projection.Config{BatchSize: batchSize})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("projector still running 10s after its commit failed: stats %+v, err %v", p.Stats(), p.Err())
	}
	if err := p.Err(); !errors.Is(err, errCommit) {
		t.Fatalf("Err() = %v, want the commit error", err)
	}
	if err := p.Close(); !errors.Is(err, errCommit) {
		t.Fatalf("Close() = %v, want the commit error", err)
	}
	if s := p.Stats(); s.Checkpoint == 0 || s.Batches != 1 {
		t.Fatalf("stats %+v, want the first batch only", s)
	}
}

// stallJS is the real JetStream, except that the first asynchronous
// publish is never sent and its ack never comes, as when a PubAck is lost
// while the connection stays up.
type stallJS struct {
	jetstream.JetStream
	once    sync.Once
	stalled atomic.Bool
}

func (j *stallJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	stall := false
	j.once.Do(func() { stall = true })
	if stall {
		j.stalled.Store(true)
		return stuckFuture{m}, nil
	}
	return j.JetStream.PublishMsgAsync(m, opts...)
}

// stuckFuture is a PubAckFuture that never resolves.
type stuckFuture struct{ m *nats.Msg }

func (f stuckFuture) Ok() <-chan *jetstream.PubAck { return nil }
func (f stuckFuture) Err() <-chan error            { return nil }
func (f stuckFuture) Msg() *nats.Msg               { return f.m }

// TestProjector_PublishAckTimeout loses the ack of the projector's first
// publish: the projector must give up waiting after PublishTimeout,
// publish the outbox again and carry on, every change and receipt
// published once.
func TestProjector_PublishAckTimeout(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	evs, last := publishPuts(t, e, newWriter("acme", "phone", 0), 50)
	js := &stallJS{JetStream: e.js}
	p, err := projection.New(js, store, projection.Config{PublishTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	waitCheckpoint(t, p, last)
	if !js.stalled.Load() {
		t.Fatal("no publish was stalled")
	}
	waitFor(t, 10*time.Second, "a change per event", func() bool { return msgCount(t, e.js, events.StreamChanges) == uint64(len(evs)) })
	checkAppliedOnce(t, e, p, store, evs)

	_, err = projection.New(e.js, store, projection.Config{PublishTimeout: -time.Second})
	if !errors.Is(err, projection.ErrInvalidConfig) {
		t.Fatalf("negative PublishTimeout: %v, want ErrInvalidConfig", err)
	}
}
