package producer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// failingJS is the real JetStream except for publish number failAt, which
// never reaches the server and fails retryably: its future returns ackErr
// at once, or, with ackErr nil, never resolves (the publisher's AckTimeout
// fires, as when an ack is lost). Every other publish goes through.
type failingJS struct {
	jetstream.JetStream
	failAt int
	ackErr error

	mu     sync.Mutex
	calls  int
	failed string // subject of the failed publish
}

func (f *failingJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	f.mu.Lock()
	f.calls++
	fail := f.calls == f.failAt
	if fail {
		f.failed = m.Header.Get(jetstream.MsgIDHeader)
	}
	f.mu.Unlock()
	if !fail {
		return f.JetStream.PublishMsgAsync(m, opts...)
	}
	fut := &doneFuture{msg: m, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	if f.ackErr != nil {
		fut.err <- f.ackErr
	}
	return fut, nil
}

func (f *failingJS) failedID() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// TestPublisher_MidWindowFailure fails one publish in the middle of a full
// window retryably while the publishes sent after it are acked, with the
// server real. It shows (a) the later events of the failed event's document
// still reach EVENTS after it, in client-sequence order, while other
// documents' events overtook it (the failure really was mid-window); (b)
// every event reaches EVENTS exactly once; and, with a projector reading
// that stream, (c) every event is applied: the overtaken one is not dropped
// as a duplicate (invariant 1) and every document ends at version 6.
func TestPublisher_MidWindowFailure(t *testing.T) {
	const (
		docs   = 8
		window = 16
		n      = 6 * docs
		failAt = 5 // the first publish round sends events 1..8 (one per document): fail event 5
	)
	tests := []struct {
		name   string
		ackErr error
	}{
		{"ack timeout error", jetstream.ErrAsyncPublishTimeout},
		{"stream unavailable", &jetstream.APIError{Code: 503, Description: "stream leader change"}},
		{"ack lost", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := embeddedtest.MustStart(t, embeddedtest.InProcess())
			nc := embeddedtest.MustConnect(t, s)
			js := embeddedtest.MustJetStream(t, nc)
			mustEnsureStreams(t, js, events.StreamOptions{})
			l := tempLog(t)
			var ws []Write
			for i := range n {
				ws = append(ws, put("c", fmt.Sprintf("d%d", i%docs), i))
			}
			evs := mustAppend(t, l, ws...)
			fjs := &failingJS{JetStream: js, failAt: failAt, ackErr: tt.ackErr}
			p := mustPublisher(t, l, fjs, nc, PublisherConfig{
				MaxInFlight: window, AckTimeout: 300 * time.Millisecond, BackoffInitial: 10 * time.Millisecond,
			})
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			late := evs[failAt-1]
			if got := fjs.failedID(); got != late.ID {
				t.Fatalf("publish %d failed for %q, want event %d (%s)", failAt, got, late.Seq, late.ID)
			}

			stored := readEvents(t, js)
			if len(stored) != n {
				t.Fatalf("stream holds %d messages, want %d", len(stored), n)
			}
			pos := map[string]int{}
			for i, se := range stored {
				if _, dup := pos[se.MsgID]; dup {
					t.Fatalf("event %s in EVENTS twice", se.MsgID)
				}
				pos[se.MsgID] = i
			}
			for _, e := range evs {
				if _, ok := pos[e.ID]; !ok {
					t.Fatalf("event %d (%s) missing from EVENTS", e.Seq, e.ID)
				}
				if st := stateOf(t, l, e.ID); st != StatePublished {
					t.Fatalf("event %d is %s", e.Seq, st)
				}
			}
			// The failure was mid-window: later events of other documents
			// (sent in the same window) landed before the failed one...
			if next := evs[failAt]; pos[next.ID] > pos[late.ID] {
				t.Fatalf("event %d landed after the failed event %d: the failure was not mid-window", next.Seq, late.Seq)
			}
			// ...but none of its own document, and none by a window or more.
			checkOrder(t, stored, window)

			// A projector applies every event, the overtaken one included.
			store, err := projection.OpenBolt(t.TempDir()+"/view.db", projection.BoltOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { store.Close() })
			proj, err := projection.New(js, store, projection.Config{})
			if err != nil {
				t.Fatal(err)
			}
			if err := proj.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = proj.Close() })
			last := stored[len(stored)-1].StreamSeq
			waitFor(t, 20*time.Second, "the projector to apply EVENTS", func() bool { return proj.Stats().Checkpoint >= last })
			if st := proj.Stats(); st.Applied != n || st.Duplicates != 0 || st.Dead != 0 {
				t.Fatalf("projector stats %+v, want %d applied and no duplicates", st, n)
			}
			for d := range docs {
				doc, err := store.Get(t.Context(), events.DocAddress{Tenant: "t1", Collection: "c", Doc: fmt.Sprintf("d%d", d)})
				if err != nil {
					t.Fatal(err)
				}
				if want := fmt.Sprint(n - docs + d); doc.Version != n/docs || string(doc.Fields["v"]) != want {
					t.Fatalf("document d%d: version %d v=%s, want version %d v=%s", d, doc.Version, doc.Fields["v"], n/docs, want)
				}
			}
		})
	}
}
