package gateway

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// The receipts consumers of closed logs.
//
// Stopping an ordered consumer only leaves it on the server until its
// inactive threshold expires it (five minutes), and a log closed and
// reopened for every burst of an identity's writes would pile them up in
// RECEIPTS, whose consumer limit is shared with users' consumers. So a
// closed log's consumer is deleted, but best effort and never in a
// request's way: the log is closed locally and released from the pool at
// once, and the delete is queued to the Writer's consumerDeleter, whose
// few goroutines each try it once within consumerDeleteTimeout. A full
// queue, a failed or timed-out delete, or a Close that stops waiting
// leaves the consumer to expire on the server, logged.

const (
	// consumerDeleteTimeout bounds one delete of a closed log's receipts
	// consumer: short, because the server expires the consumer anyway.
	consumerDeleteTimeout = 2 * time.Second
	// consumerDeleteWorkers bounds the deletes in flight at once.
	consumerDeleteWorkers = 4
	// closeDeleteWait bounds how long Writer.Close waits for the queued
	// deletes before it leaves the rest to expire.
	closeDeleteWait = time.Second
)

// consumerDeleter deletes RECEIPTS consumers in goroutines it owns until
// close.
type consumerDeleter struct {
	js     JetStream
	lg     *slog.Logger
	ctx    context.Context // cancelled when close stops waiting
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	queue  chan string // consumer names
}

func newConsumerDeleter(js JetStream, lg *slog.Logger, queue int) *consumerDeleter {
	ctx, cancel := context.WithCancel(context.Background())
	d := &consumerDeleter{js: js, lg: lg, ctx: ctx, cancel: cancel, queue: make(chan string, queue)}
	d.wg.Add(consumerDeleteWorkers)
	for range consumerDeleteWorkers {
		go d.run()
	}
	return d
}

// delete queues the delete of RECEIPTS consumer name and returns at once.
// When the queue is full or d is closed, the consumer is left to expire.
func (d *consumerDeleter) delete(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		d.lg.Warn("receipts consumer of a closed write log not deleted (writer closing); the server expires it", "consumer", name)
		return
	}
	select {
	case d.queue <- name:
	default:
		d.lg.Warn("receipts consumer of a closed write log not deleted (too many deletes queued); the server expires it", "consumer", name)
	}
}

func (d *consumerDeleter) run() {
	defer d.wg.Done()
	var st jetstream.Stream // RECEIPTS, once read
	for name := range d.queue {
		if d.ctx.Err() != nil {
			continue // close gave up: the rest expire on the server
		}
		ctx, cancel := context.WithTimeout(d.ctx, consumerDeleteTimeout)
		var err error
		if st == nil {
			st, err = d.js.Stream(ctx, events.StreamReceipts)
		}
		if err == nil {
			err = st.DeleteConsumer(ctx, name)
		}
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) && d.ctx.Err() == nil {
			d.lg.Warn("delete the receipts consumer of a closed write log; the server expires it", "consumer", name, "err", err)
		}
	}
}

// close stops taking deletes, waits up to wait for the queued ones, then
// abandons those left (the server expires them, as logged) and returns
// once its goroutines have ended. Safe to call twice.
func (d *consumerDeleter) close(wait time.Duration) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	close(d.queue)
	d.mu.Unlock()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		left := len(d.queue)
		d.cancel()
		<-done
		d.lg.Warn("gave up deleting the receipts consumers of closed write logs at close (NATS slow or unreachable); the server expires them after their inactive threshold",
			"waited", wait, "queued", left)
	}
	d.cancel()
}
