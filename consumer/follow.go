package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Progress is how far a follower has come through its stream.
type Progress struct {
	// Seq is the stream sequence of the last message applied.
	Seq uint64
	// Applied counts messages applied since the follower started.
	Applied uint64
	// Pending is how many messages matching the filter were still to come
	// after Seq when it was delivered (the consumer's NumPending): the
	// remaining length of a catch-up, 0 once live.
	Pending uint64
}

// Done reports whether the follower had nothing left to read when it last
// applied a batch.
func (p Progress) Done() bool { return p.Pending == 0 }

// follower reads one stream through an ordered, ephemeral consumer from a
// start sequence and hands the messages, in stream order and in batches, to
// apply. It recreates the consumer after the last message it read whenever
// the iterator fails (connection lost, server restarted, consumer gone),
// with backoff, until ctx ends. The ordered consumer already recovers from
// gaps and missed heartbeats by itself; this loop covers what it gives up on.
//
// T is what prepare makes of a message on the reader goroutine: work done
// there overlaps the apply (and the store commit) of the previous batch.
type follower[T any] struct {
	js      StreamReader
	stream  string
	filters []string
	batch   int // most messages per apply; also the pull buffer
	log     *slog.Logger
	// prepare, if set, fills v from m on the reader goroutine. It must not
	// touch the store: it runs while apply may be running.
	prepare func(m jetstream.Msg, v *T)
	// apply receives a batch in stream order. An error stops the follower:
	// it means the local store failed, which retrying cannot fix. The
	// deliveries (and the messages) are reused after apply returns.
	apply func(ctx context.Context, ds []delivery[T]) error
	// start returns the sequence to (re)start at; it runs before each
	// consumer is created, so it can check the stream (reset, retention)
	// and consult the store. An error is retried like a failed creation.
	start func(ctx context.Context) (uint64, error)
}

// delivery is one message as the reader goroutine hands it over: its
// metadata already parsed, and what the follower's prepare made of it.
type delivery[T any] struct {
	msg jetstream.Msg
	// seq is the message's stream sequence, pending the consumer's
	// NumPending when it was delivered.
	seq, pending uint64
	v            T
}

const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// backoffDelay returns the delay before retry attempt n (from 0): doubling
// from minBackoff up to maxBackoff, with up to 50% jitter subtracted.
func backoffDelay(n int) time.Duration {
	d := minBackoff << min(n, 16)
	if d > maxBackoff || d <= 0 {
		d = maxBackoff
	}
	return d - time.Duration(rand.Int64N(int64(d/2)+1))
}

// sleepCtx waits d or until ctx ends, returning ctx.Err() in the latter case.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run follows the stream until ctx ends (returning ctx.Err()) or apply
// fails (returning its error).
func (f *follower[T]) run(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		next, err := f.start(ctx)
		if err == nil {
			var read uint64
			read, err = f.session(ctx, max(next, 1))
			if read > next {
				attempt = 0
			}
		}
		var ae *applyError
		switch {
		case errors.As(err, &ae):
			return ae.err
		case ctx.Err() != nil:
			return ctx.Err()
		}
		d := backoffDelay(attempt)
		f.log.Debug("follower interrupted, retrying", logStream, f.stream, logErr, err, logBackoff, d)
		if err := sleepCtx(ctx, d); err != nil {
			return err
		}
	}
}

// applyError marks a failure of apply, which ends run.
type applyError struct{ err error }

func (e *applyError) Error() string { return e.err.Error() }

// session reads with one ordered consumer starting at next. It returns the
// sequence after the last message handed to apply, and why it ended.
func (f *follower[T]) session(ctx context.Context, next uint64) (uint64, error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: f.filters, DeliverPolicy: jetstream.DeliverAllPolicy}
	if next > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, next
	}
	cons, err := f.js.OrderedConsumer(ctx, f.stream, cfg)
	if err != nil {
		return next, fmt.Errorf("create ordered consumer on %s at %d: %w", f.stream, next, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(f.batch))
	if err != nil {
		return next, fmt.Errorf("read %s at %d: %w", f.stream, next, err)
	}

	// The reader goroutine moves messages from the iterator into ds,
	// parsing their metadata and running prepare on the way; this goroutine
	// applies them, taking everything already there as one batch (group
	// commit: one store transaction per batch while catching up, one per
	// message when live). So reading and parsing the next batch overlaps
	// applying and committing this one.
	ds := make(chan delivery[T], f.batch)
	readErr := make(chan error, 1)
	go func() {
		defer close(ds)
		for {
			m, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				readErr <- err
				return
			}
			md, err := m.Metadata()
			if err != nil {
				readErr <- &applyError{err: fmt.Errorf("read metadata on %s: %w", f.stream, err)}
				return
			}
			d := delivery[T]{msg: m, seq: md.Sequence.Stream, pending: md.NumPending}
			if f.prepare != nil {
				f.prepare(m, &d.v)
			}
			select {
			case ds <- d:
			case <-ctx.Done():
				readErr <- ctx.Err()
				return
			}
		}
	}()
	defer func() {
		it.Stop()
		for range ds { // let the reader finish
		}
	}()

	batch := make([]delivery[T], 0, f.batch)
	for {
		d, ok := <-ds
		if !ok {
			return next, <-readErr
		}
		batch = append(batch[:0], d)
	fill:
		for len(batch) < f.batch {
			select {
			case d, ok := <-ds:
				if !ok {
					break fill
				}
				batch = append(batch, d)
			default:
				break fill
			}
		}
		if err := f.apply(ctx, batch); err != nil {
			return next, &applyError{err: err}
		}
		next = batch[len(batch)-1].seq + 1
		clear(batch) // drop references to applied messages
	}
}
