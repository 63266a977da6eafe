package consumer

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// gatedJS answers a stream info only once an ordered consumer has been
// asked for, and counts those: a start that reads the stream before it
// creates its consumer never gets its info.
type gatedJS struct {
	jetstream.JetStream
	once    sync.Once
	created chan struct{}
	n       atomic.Int32
}

func (g *gatedJS) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	g.n.Add(1)
	g.once.Do(func() { close(g.created) })
	return g.JetStream.OrderedConsumer(ctx, stream, cfg)
}

func (g *gatedJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	select {
	case <-g.created:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.JetStream.Stream(ctx, name)
}

// TestStartChanges_CreatesConsumerWhileReadingStream: the CHANGES
// follower's start creates the consumer its session reads with while it
// reads the stream's info (two round trips at once, not one after the
// other), and the session takes that consumer when the start resumes
// from the cursor; after a reset (a cursor beyond the stream) it is not
// taken, and the session creates one from the start.
func TestStartChanges_CreatesConsumerWhileReadingStream(t *testing.T) {
	_, _, js := mustServer(t)
	publishChange(t, js, testChange("t1", "c", "d1", 1, 1))
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, tc := range []struct {
		name     string
		cursor   uint64
		wantNext uint64
		wantMade int32 // ordered consumers created, the session's included
	}{
		{"resume", 0, 1, 1},
		{"reset", 5, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := r.log.Update(t.Context(), func(tx *producer.Tx) error {
				return putCursor(tx, events.StreamChanges, cursor{Seq: tc.cursor})
			}); err != nil {
				t.Fatal(err)
			}
			g := &gatedJS{JetStream: js, created: make(chan struct{})}
			ahead := &aheadReader{StreamReader: g}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			next, _, err := r.startChanges(ctx, g, ahead)
			if err != nil {
				t.Fatalf("start: %v (was the stream read before the consumer was asked for?)", err)
			}
			if next != tc.wantNext {
				t.Fatalf("start at %d, want %d", next, tc.wantNext)
			}
			if _, err := ahead.OrderedConsumer(ctx, events.StreamChanges, orderedConfig(r.filters, next)); err != nil {
				t.Fatal(err)
			}
			if got := g.n.Load(); got != tc.wantMade {
				t.Errorf("%d ordered consumers created, want %d", got, tc.wantMade)
			}
		})
	}
}
