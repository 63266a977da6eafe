package consumer

import (
	"context"
	"slices"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// aheadReader is the CHANGES follower's StreamReader: its start creates
// the ordered consumer the session will most likely read with (at the
// stored cursor + 1) while it reads the stream's info, instead of after,
// so a (re)start costs the longer of the two round trips, not their sum.
// The session's OrderedConsumer call takes that consumer only if it asks
// for exactly what was created (the start found no reset, the filters are
// the same); anything else is created then, as before. A consumer created
// ahead and not taken reads nothing (its pull never started) and is left
// to the server's inactive threshold, as an ordered consumer stopped by a
// restart is.
//
// Creating the consumer before the stream's check is as safe as after it:
// a stream deleted and recreated after the consumer was made shows in the
// info (a reset: the start replays, the consumer is not taken) or, if after
// the info, to the ordered consumer, which remakes its consumer and marks
// the deliveries resumed, which the apply checks first (as a recreation
// between the check and the creation always could).
type aheadReader struct {
	StreamReader
	mu      sync.Mutex
	stream  string
	ready   bool
	cfg     jetstream.OrderedConsumerConfig
	cons    jetstream.Consumer
	err     error
	creator sync.WaitGroup // the creation running ahead, if any
}

// ahead starts creating the ordered consumer of stream at next with
// filters, in a goroutine, and returns a func that waits for it; the
// caller (the follower's start) calls it before returning, so the
// creation never outlives the start that began it. Whatever an earlier
// start created and no session took is dropped.
func (a *aheadReader) ahead(ctx context.Context, stream string, filters []string, next uint64) (wait func()) {
	cfg := orderedConfig(filters, next)
	a.mu.Lock()
	a.stream, a.cfg, a.ready, a.cons, a.err = stream, cfg, false, nil, nil
	a.mu.Unlock()
	a.creator.Add(1)
	go func() {
		defer a.creator.Done()
		cons, err := a.StreamReader.OrderedConsumer(ctx, stream, cfg)
		a.mu.Lock()
		a.ready, a.cons, a.err = true, cons, err
		a.mu.Unlock()
	}()
	return a.creator.Wait
}

// drop forgets what ahead created (a start that failed or reset); call it
// once the func ahead returned has returned.
func (a *aheadReader) drop() {
	a.mu.Lock()
	a.ready, a.cons, a.err = false, nil, nil
	a.mu.Unlock()
}

// OrderedConsumer returns the consumer created ahead if it is the one
// asked for (its creation's error included: the session reports it as its
// own), once; else it creates one.
func (a *aheadReader) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	a.mu.Lock()
	ready, same := a.ready, stream == a.stream && sameOrdered(cfg, a.cfg)
	cons, err := a.cons, a.err
	a.ready, a.cons, a.err = false, nil, nil
	a.mu.Unlock()
	if ready && same {
		return cons, err
	}
	return a.StreamReader.OrderedConsumer(ctx, stream, cfg)
}

// sameOrdered reports whether two ordered consumer configurations, as
// orderedConfig makes them, read the same messages.
func sameOrdered(x, y jetstream.OrderedConsumerConfig) bool {
	return x.DeliverPolicy == y.DeliverPolicy && x.OptStartSeq == y.OptStartSeq && slices.Equal(x.FilterSubjects, y.FilterSubjects)
}
