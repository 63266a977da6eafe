package producer

import (
	"context"
	"sync"
)

// maxQueuedResults bounds the publish results waiting for the committer:
// a put waits while the queue holds this many or more, then appends its
// whole batch (at most MaxInFlight), so the queue may hold up to this plus
// one batch. Publishing never waits on a commit below it: acks keep arriving while a
// commit (and its fsync) runs, and the next commit stores all of them. It
// is reached only when the disk is slower than the server for long; then
// the run goroutine waits for room, which bounds memory.
const maxQueuedResults = 1 << 16

// resultQueue hands publish results from the run goroutine to the
// committer in the order they were put, without a fixed number of batches:
// however small the batches run makes, the committer takes everything
// queued since its last commit into its next transaction.
type resultQueue struct {
	mu     sync.Mutex
	rs     []result
	closed bool
	ready  chan struct{} // capacity 1: results were put, or the queue closed
	room   chan struct{} // capacity 1: the committer took results
}

func newResultQueue() *resultQueue {
	return &resultQueue{ready: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

// put appends rs, waiting while the queue holds maxQueuedResults or more.
// It returns errStop if ctx ends first.
func (q *resultQueue) put(ctx context.Context, rs []result) error {
	q.mu.Lock()
	for len(q.rs) >= maxQueuedResults {
		q.mu.Unlock()
		select {
		case <-q.room:
		case <-ctx.Done():
			return errStop
		}
		q.mu.Lock()
	}
	q.rs = append(q.rs, rs...)
	q.mu.Unlock()
	poke(q.ready)
	return nil
}

// close tells the committer no more results come; what is queued is still
// taken.
func (q *resultQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	poke(q.ready)
}

// take returns every queued result, waiting until there is one; ok is
// false once the queue is closed and empty. spare, if not nil, is reused
// for the next put.
func (q *resultQueue) take(spare []result) (rs []result, ok bool) {
	for {
		q.mu.Lock()
		if len(q.rs) > 0 {
			rs, q.rs = q.rs, spare[:0]
			q.mu.Unlock()
			poke(q.room)
			return rs, true
		}
		if q.closed {
			q.mu.Unlock()
			return nil, false
		}
		q.mu.Unlock()
		<-q.ready
	}
}

// poke signals c without blocking; a signal already pending stands for
// this one.
func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
