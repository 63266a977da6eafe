package producer

import "time"

// Backoff computes exponential waits with full jitter: attempt n waits a
// random time in [0, min(max, initial*2^n)]. It is the publisher's, and
// other packages retrying against NATS on a log's behalf (the gateway's
// receipt followers) take the same one from their PublisherConfig, so
// every retry of ebb's paces alike. Not safe for concurrent use: one per
// retry loop.
type Backoff struct {
	initial, max time.Duration
	jitter       func(time.Duration) time.Duration
	attempt      int
}

// NewBackoff returns the backoff c's publisher uses: its BackoffInitial,
// BackoffMax and Jitter, or their defaults. An invalid c (BackoffMax below
// BackoffInitial) is refused as NewPublisher refuses it.
func (c PublisherConfig) NewBackoff() (*Backoff, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Backoff{initial: c.BackoffInitial, max: c.BackoffMax, jitter: c.Jitter}, nil
}

// Next returns the wait before the next retry and counts the attempt.
func (b *Backoff) Next() time.Duration {
	ceiling := b.initial
	for i := 0; i < b.attempt && ceiling < b.max; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, b.max)
	b.attempt++
	return b.jitter(ceiling)
}

// Reset starts the next run of failures from the initial wait.
func (b *Backoff) Reset() { b.attempt = 0 }
