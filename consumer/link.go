package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/producer"
)

// link is one attachment to a connection and the goroutines it runs.
type link struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	pub    *producer.Publisher
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// ready is closed once the CHANGES follower has checked the stream
	// (and resynced if it had to): Sync waits for it so it never judges
	// "caught up" by a cursor about to be reset.
	ready     chan struct{}
	readyOnce sync.Once
	// changes and receipts are the link's followers, restarted (kicked)
	// when a gap check finds their stream needs start's recovery.
	changes  *follower[change]
	receipts *follower[receipt]
	// feed is how changes reads CHANGES under sync rules (rules.go).
	feed *rulesFeed
	// What Syncs have reported so far, so each Sync reports what happened
	// since attaching or the previous Sync (the followers and the publisher
	// run from Attach on, not only during a Sync): publishes of pub, and
	// the replica's pulled and rejected counters.
	pushed, pulled, rejected, resyncs reported
}

// reported is a count already reported by a Sync.
type reported struct{ n atomic.Uint64 }

// since returns how much of total no Sync has reported yet and marks it
// reported; concurrent Syncs never count anything twice.
func (r *reported) since(total uint64) int {
	for {
		old := r.n.Load()
		if total <= old {
			return 0
		}
		if r.n.CompareAndSwap(old, total) {
			return int(total - old)
		}
	}
}

// Attach connects the replica: it starts publishing pending writes and
// following CHANGES (from the stored sequence) and the client's RECEIPTS on
// nc, replacing any previous attachment. nc stays the caller's: the replica
// never closes it, and nats.Conn reconnects by itself after network loss,
// so one Attach normally lasts the life of the app. Detach (or closing nc)
// takes the replica offline; it keeps working locally either way.
func (r *Replica) Attach(ctx context.Context, nc *nats.Conn) error {
	if nc == nil {
		return fmt.Errorf("attach replica: %w: nil connection", ErrInvalidConfig)
	}
	pc := r.publisherConfig()
	js, err := jetstream.New(nc, asyncPublishOpts(pc)...)
	if err != nil {
		return fmt.Errorf("attach replica: %w", err)
	}
	pub, err := producer.NewPublisher(r.log, js, nc, pc)
	if err != nil {
		return fmt.Errorf("attach replica: %w", err)
	}
	// attachMu makes stopping the old link and installing the new one one
	// step: two Attach calls can no longer both find no link and each
	// install its own, leaking one. The old link is stopped without r.mu
	// held, since its goroutines take r.mu.
	r.attachMu.Lock()
	defer r.attachMu.Unlock()
	r.detach()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("attach replica: %w", ErrClosed)
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &link{nc: nc, js: js, pub: pub, cancel: cancel, ready: make(chan struct{})}
	l.pulled.n.Store(uint64(r.pulled))
	l.rejected.n.Store(uint64(r.rejected))
	l.resyncs.n.Store(uint64(r.resyncs))
	if err := pub.Start(lctx); err != nil {
		cancel()
		return fmt.Errorf("attach replica: start publisher: %w", err)
	}
	r.link = l
	r.links.Add(1)
	r.lastErr = nil
	changes, receipts := r.changesLink(l), r.receiptsFollower(js)
	l.changes, l.receipts = changes, receipts
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		r.watchGaps(lctx, l, orDefault(r.cfg.GapCheckInterval, DefaultGapCheckInterval))
	}()
	for _, f := range []struct {
		stream string
		run    func(context.Context) error
	}{{changes.stream, changes.run}, {receipts.stream, receipts.run}} {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if err := f.run(lctx); err != nil && !errors.Is(err, context.Canceled) {
				r.logger.Error("follower stopped", logStream, f.stream, logErr, err)
				r.mu.Lock()
				r.lastErr = err
				r.mu.Unlock()
			}
		}()
	}
	return nil
}

// defaultAsyncMaxPending is nats.go's own bound on async publishes awaiting
// their PubAck.
const defaultAsyncMaxPending = 4000

// asyncPublishOpts configures the JetStream context the replica's publisher
// publishes on. The publisher gives up on a PubAck after its AckTimeout and
// publishes again; without a timeout of its own nats.go keeps every future
// given up on in its pending map, and once that holds max-pending of them
// every async publish fails with ErrTooManyStalledMsgs until a reconnect.
// So the context drops a future after the same AckTimeout, and allows at
// least the publisher's MaxInFlight futures.
func asyncPublishOpts(pc producer.PublisherConfig) []jetstream.JetStreamOpt {
	timeout := pc.AckTimeout
	if timeout == 0 {
		timeout = producer.DefaultAckTimeout
	}
	return []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncTimeout(timeout),
		jetstream.WithPublishAsyncMaxPending(max(defaultAsyncMaxPending, pc.MaxInFlight)),
	}
}

// Detach takes the replica offline: it stops its followers and publisher
// and waits for them. Local reads and writes go on. Safe to call when not
// attached.
func (r *Replica) Detach() {
	r.attachMu.Lock()
	defer r.attachMu.Unlock()
	r.detach()
}

// detach is Detach with r.attachMu held.
func (r *Replica) detach() {
	r.mu.Lock()
	l := r.link
	r.link = nil
	r.mu.Unlock()
	if l == nil {
		return
	}
	l.cancel()
	l.wg.Wait()
	if err := l.pub.Close(); err != nil {
		r.logger.Warn("close publisher", logErr, err)
	}
	r.links.Add(-1)
}
