package projection

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// maxResetStreak is how many times in a row the consumer may be recreated
// without a batch, or an idle consumer seen, in between before Ready
// reports it.
const maxResetStreak = 3

// health is what the projector's goroutines note for Ready. Times are
// wall clock (time.Now), never Config.Now.
type health struct {
	mu           sync.Mutex
	running      bool      // the loop has begun
	progress     time.Time // last batch committed, or consumer seen with nothing pending
	pending      uint64    // events the consumer had still to deliver or see acked, at the last look
	pubSince     time.Time // zero while publishing works
	pubErr       error
	feedSince    time.Time // zero while the consumer can be recreated
	feedErr      error
	resets       int // consumer recreations since the last progress
	lastResetWhy error
}

func (h *health) publishOK() {
	h.mu.Lock()
	h.pubSince, h.pubErr = time.Time{}, nil
	h.mu.Unlock()
}

func (h *health) publishFailed(since time.Time, err error) {
	h.mu.Lock()
	h.pubSince, h.pubErr = since, err
	h.mu.Unlock()
}

func (h *health) start() {
	h.mu.Lock()
	h.running, h.progress = true, time.Now()
	h.mu.Unlock()
}

// progressed notes a committed batch.
func (h *health) progressed() {
	h.mu.Lock()
	h.progress, h.resets = time.Now(), 0
	h.mu.Unlock()
}

// looked notes the consumer's backlog; none is progress (idle, caught up).
func (h *health) looked(pending uint64) {
	h.mu.Lock()
	h.pending = pending
	if pending == 0 {
		h.progress, h.resets = time.Now(), 0
	}
	h.mu.Unlock()
}

func (h *health) reset(cause error) {
	h.mu.Lock()
	h.resets++
	h.lastResetWhy = cause
	h.mu.Unlock()
}

func (h *health) feed(since time.Time, err error) {
	h.mu.Lock()
	h.feedSince, h.feedErr = since, err
	h.mu.Unlock()
}

// Ready returns nil while the projector is making progress, or is idle
// with nothing pending; otherwise an error naming why it is not: not
// started, starting, stopped (wrapping the error that stopped it), outbox
// publishes failing for longer than Config.StallTimeout (with the last
// error), the consumer on EVENTS failing to be recreated for that long or
// recreated repeatedly without progress, or events pending while no batch
// has committed for that long. It is cheap and safe for concurrent use
// (ebb serve's /readyz calls it).
func (p *Projector) Ready() error {
	p.mu.Lock()
	started, stopErr := p.started, p.err
	p.mu.Unlock()
	if !started {
		return errors.New("projector not started")
	}
	select {
	case <-p.done:
		if stopErr != nil {
			return fmt.Errorf("projector stopped: %w", stopErr)
		}
		return errors.New("projector stopped")
	default:
	}
	stall := p.cfg.StallTimeout
	now := time.Now()
	h := &p.health
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case !h.pubSince.IsZero() && now.Sub(h.pubSince) > stall:
		return fmt.Errorf("outbox publish failing for %s: %w", now.Sub(h.pubSince).Round(time.Millisecond), h.pubErr)
	case !h.feedSince.IsZero() && now.Sub(h.feedSince) > stall:
		return fmt.Errorf("consumer on EVENTS failing for %s: %w", now.Sub(h.feedSince).Round(time.Millisecond), h.feedErr)
	case !h.running:
		return errors.New("projector starting")
	case h.resets >= maxResetStreak:
		return fmt.Errorf("consumer on EVENTS recreated %d times without progress, last because: %w", h.resets, h.lastResetWhy)
	case now.Sub(h.progress) > stall:
		return fmt.Errorf("no progress for %s: checkpoint %d, %d events pending", now.Sub(h.progress).Round(time.Millisecond), p.checkpoint.Load(), h.pending)
	}
	return nil
}
