package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
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
	batch   int // the pull buffer; with gather, the messages an apply waits for
	// grow, if above batch, is the most messages per apply: while apply
	// runs the reader keeps filling the next batch up to grow, so a store
	// that commits slower than messages arrive commits fewer, larger
	// batches. Zero means batch.
	grow int
	log  *slog.Logger
	// prepare, if set, fills v from m on the reader goroutine. It must not
	// touch the store: it runs while apply may be running. Bytes that must
	// live until the batch is applied can come from a, the batch's arena.
	prepare func(m jetstream.Msg, v *T, a *arena)
	// apply receives a batch in stream order. An error stops the follower:
	// it means the local store failed, which retrying cannot fix. The
	// deliveries, and every slice prepare took from the arena, are reused
	// after apply returns.
	apply func(ctx context.Context, ds []delivery[T]) error
	// gather, if positive, lets a batch grow: while the stream holds more
	// messages than were read (pending > 0), apply waits up to gather for a
	// full batch rather than taking what is there. A catch-up then costs
	// one store commit per batch messages, however fast the commits are.
	gather time.Duration
	// start returns the sequence to (re)start at; it runs before each
	// consumer is created, so it can check the stream (reset, retention)
	// and consult the store. An error is retried like a failed creation.
	start func(ctx context.Context) (uint64, error)
	// kick, if set, restarts the session when it receives: the consumer is
	// stopped and start runs again (see errRestart). Whoever found that the
	// stream needs start's checks sends on it, without blocking.
	kick chan struct{}
}

// errRestart, returned by apply, ends the session without applying the
// batch: run calls start again at once (after the shortest backoff), so the
// stream is checked and the follower resumes from the stored cursor. It is
// how a gap or a reset noticed while following is recovered from, the same
// way as at start.
var errRestart = errors.New("follower restart")

// restart asks f's session to restart (see kick); it never blocks.
func (f *follower[T]) restart() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// delivery is one message as the reader goroutine hands it over: its
// metadata already parsed, and what the follower's prepare made of it. It
// does not keep the message, so the client's copy of it is garbage as soon
// as prepare returns.
type delivery[T any] struct {
	subject string
	// seq is the message's stream sequence, pending the consumer's
	// NumPending when it was delivered.
	seq, pending uint64
	// resumed: the message came from a consumer the ordered consumer made
	// by itself after losing the one before (a reconnect, a server restart,
	// missed heartbeats). It resumed after the last message it delivered,
	// so it steps over whatever the stream lost in between without a word:
	// apply checks the stream before it moves the cursor past a gap.
	resumed bool
	v       T
}

// batch is a run of deliveries and the arena their prepared bytes live in.
type batch[T any] struct {
	ds    []delivery[T]
	arena arena
}

// reset readies b for reuse once it has been applied.
func (b *batch[T]) reset() {
	clear(b.ds) // drop references to what the applied messages held
	b.ds = b.ds[:0]
	b.arena.reset()
}

// arena hands out byte slices carved from one buffer, so preparing a
// message costs no allocation once the buffer has grown to a batch's size.
// Slices taken from it stay valid until reset, which reuses the buffer:
// call it only once nothing refers to them.
type arena struct{ buf []byte }

const (
	// arenaChunk is the smallest buffer an arena allocates.
	arenaChunk = 64 << 10
	// arenaKeep is the largest buffer reset keeps: a batch of unusually
	// large documents does not pin its memory for the follower's life.
	arenaKeep = 4 << 20
)

// alloc returns a slice of n bytes (contents unspecified) whose capacity
// is n, so appending to it never runs into the next one.
func (a *arena) alloc(n int) []byte {
	if n > arenaKeep/4 {
		return make([]byte, n) // a large value gets its own allocation
	}
	if cap(a.buf)-len(a.buf) < n {
		// Earlier slices keep the old buffer alive until they die.
		a.buf = make([]byte, 0, max(2*cap(a.buf), arenaChunk, n))
	}
	l := len(a.buf)
	a.buf = a.buf[:l+n]
	return a.buf[l : l+n : l+n]
}

func (a *arena) reset() {
	if cap(a.buf) > arenaKeep {
		a.buf = nil
	}
	a.buf = a.buf[:0]
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
		case errors.Is(err, errRestart):
			attempt = 0 // asked for: check the stream again now
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

// beforeConsumer, if set (by a test), runs after a follower's start checked
// the stream and before its consumer is created: what the stream loses in
// between, no start check sees.
var beforeConsumer func(stream string)

// session reads with one ordered consumer starting at next. It returns the
// sequence after the last message handed to apply, and why it ended.
func (f *follower[T]) session(ctx context.Context, next uint64) (uint64, error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: f.filters, DeliverPolicy: jetstream.DeliverAllPolicy}
	if next > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, next
	}
	if beforeConsumer != nil {
		beforeConsumer(f.stream)
	}
	cons, err := f.js.OrderedConsumer(ctx, f.stream, cfg)
	if err != nil {
		return next, fmt.Errorf("create ordered consumer on %s at %d: %w", f.stream, next, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(f.batch), jetstream.PullHeartbeat(followHeartbeat))
	if err != nil {
		return next, fmt.Errorf("read %s at %d: %w", f.stream, next, err)
	}

	// The reader goroutine moves messages from the iterator into q's
	// filling batch, parsing their metadata and running prepare on the way;
	// this goroutine takes that whole batch when it is ready for more (with
	// gather, once the batch is full or holds the stream's last message)
	// and applies it: one store transaction per batch while catching up,
	// one per message when live. So reading and parsing the next batch
	// overlaps applying and committing this one, and the two batches are
	// recycled rather than reallocated.
	q := newHandoff[T](f.batch, max(f.grow, f.batch), f.gather)
	go func() { q.finish(f.read(ctx, it, q)) }()
	// A kick stops the iterator: the reader ends, and so does this session.
	// So does ctx's end: Next honours NextContext only between messages,
	// and while the ordered consumer remakes its consumer (inside Next, a
	// server down or unreachable) it retries until stopped, so without
	// Stop a Detach or Close waited for the server to come back.
	var kicked atomic.Bool
	ended, kickDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(kickDone)
		select {
		case <-f.kick: // a nil kick never receives
			kicked.Store(true)
			it.Stop()
		case <-ctx.Done():
			it.Stop()
		case <-ended:
		}
	}()
	defer func() {
		close(ended)
		<-kickDone
		it.Stop()
		q.abandon()
	}()

	own := &batch[T]{ds: make([]delivery[T], 0, f.batch)}
	for {
		b, err := q.take(own)
		if b == nil {
			if kicked.Load() {
				err = errRestart
			}
			return next, err
		}
		own = b
		if err := f.apply(ctx, b.ds); errors.Is(err, errRestart) {
			return next, err
		} else if err != nil {
			return next, &applyError{err: err}
		}
		next = b.ds[len(b.ds)-1].seq + 1
		b.reset()
	}
}

// read is the reader goroutine's loop: it returns why it stopped.
func (f *follower[T]) read(ctx context.Context, it jetstream.MessagesContext, q *handoff[T]) error {
	opts := []jetstream.NextOpt{jetstream.NextContext(ctx)} // built once: a variadic slice per call would escape
	var consumer string                                     // of the last message: the ordered consumer names its Nth consumer <prefix>_<N>
	for {
		m, err := it.Next(opts...)
		if err != nil {
			return err
		}
		cons, seq, pending, err := msgSeq(m)
		if err != nil {
			return &applyError{err: fmt.Errorf("read metadata on %s: %w", f.stream, err)}
		}
		resumed := cons != consumer && (consumer != "" || !strings.HasSuffix(cons, "_1"))
		consumer = cons
		b, err := q.slot(ctx)
		if err != nil {
			return err
		}
		b.ds = append(b.ds, delivery[T]{subject: m.Subject(), seq: seq, pending: pending, resumed: resumed})
		if f.prepare != nil {
			f.prepare(m, &b.ds[len(b.ds)-1].v, &b.arena)
		}
		q.release()
	}
}

// handoff passes deliveries from a follower's reader goroutine to its
// applier in batches: the applier takes what has arrived (with gather, once
// at least max have, or the stream's last), and the reader stops filling at
// limit until it does. The reader appends to fill under mu; the applier
// swaps fill for the batch it has just applied. Messages cross without a
// channel operation each: the reader signals only when fill turns
// non-empty or worth taking, the applier only when it frees room.
type handoff[T any] struct {
	max    int           // a batch worth taking without gathering more
	limit  int           // the most a batch holds: the reader waits for room beyond it
	gather time.Duration // see follower.gather
	mu     sync.Mutex
	fill   *batch[T]
	ready  chan struct{} // 1-buffered: fill turned non-empty, or full, or reached the end
	room   chan struct{} // 1-buffered: the applier took fill
	done   chan struct{} // closed by finish: the reader has stopped
	quit   chan struct{} // closed by abandon: the applier has stopped
	err    error         // why the reader stopped, set before done closes
	timer  *time.Timer   // the applier's, bounding a gather
}

func newHandoff[T any](target, limit int, gather time.Duration) *handoff[T] {
	q := &handoff[T]{
		max:    target,
		limit:  max(limit, target),
		gather: gather,
		fill:   &batch[T]{ds: make([]delivery[T], 0, target)},
		ready:  make(chan struct{}, 1),
		room:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		quit:   make(chan struct{}),
		timer:  time.NewTimer(time.Hour),
	}
	q.timer.Stop()
	return q
}

// slot locks q and returns the filling batch once it has room for one more
// delivery (below limit); the caller appends it, then calls release. It
// fails when ctx ends or the applier has stopped.
func (q *handoff[T]) slot(ctx context.Context) (*batch[T], error) {
	q.mu.Lock()
	for len(q.fill.ds) >= q.limit {
		q.mu.Unlock()
		select {
		case <-q.room:
		case <-q.quit:
			return nil, errApplierStopped
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		q.mu.Lock()
	}
	return q.fill, nil
}

// release unlocks q after slot, waking the applier if it may be waiting
// for what was just appended.
func (q *handoff[T]) release() {
	n := len(q.fill.ds)
	// Past max the batch is complete already: one wake-up at max, not
	// one per message.
	wake := n == 1 || n == q.max || q.fill.ds[n-1].pending == 0
	q.mu.Unlock()
	if wake {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
}

// complete reports whether fill is worth applying at once without
// gathering more: it is full, or its last message was the last the stream
// had (pending 0). q.mu is held.
func (q *handoff[T]) complete() bool {
	n := len(q.fill.ds)
	return n >= q.max || (n > 0 && q.fill.ds[n-1].pending == 0)
}

// finish records why the reader stopped; the applier takes what it
// delivered before, then returns err.
func (q *handoff[T]) finish(err error) {
	q.mu.Lock()
	q.err = err
	q.mu.Unlock()
	close(q.done)
}

// take waits for deliveries and returns them as a batch, leaving empty (a
// batch the caller has applied and reset) to be filled next. With gather
// set it waits, at most that long, for the batch to be complete. It
// returns nil and the reader's error once the reader has stopped and
// everything it delivered has been taken.
func (q *handoff[T]) take(empty *batch[T]) (*batch[T], error) {
	var expired <-chan time.Time // armed while gathering
	defer func() {
		if expired != nil {
			q.timer.Stop()
		}
	}()
	for {
		stopped, late := false, false
		select {
		case <-q.ready:
		case <-q.done:
			stopped = true
		case <-expired:
			late = true
		}
		q.mu.Lock()
		b := q.fill
		switch {
		case len(b.ds) == 0:
			err := q.err
			q.mu.Unlock()
			if stopped {
				return nil, err
			}
			continue
		case q.gather > 0 && !stopped && !late && !q.complete():
			q.mu.Unlock()
			if expired == nil {
				q.timer.Reset(q.gather)
				expired = q.timer.C
			}
			continue
		}
		q.fill = empty
		q.mu.Unlock()
		select {
		case q.room <- struct{}{}:
		default:
		}
		return b, nil
	}
}

// abandon tells the reader the applier has stopped, and waits for it.
func (q *handoff[T]) abandon() {
	close(q.quit)
	<-q.done
}

// errApplierStopped ends a reader whose applier has returned.
var errApplierStopped = errors.New("applier stopped")

// msgSeq returns the name of the consumer that delivered m, m's stream
// sequence and the consumer's NumPending, read from its reply subject
// without allocating; anything but the two forms the server uses goes to
// m.Metadata.
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
//	$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>...]
func msgSeq(m jetstream.Msg) (consumer string, seq, pending uint64, err error) {
	if consumer, seq, pending, ok := ackFields(m.Reply()); ok {
		return consumer, seq, pending, nil
	}
	md, err := m.Metadata()
	if err != nil {
		return "", 0, 0, err
	}
	return md.Consumer, md.Sequence.Stream, md.NumPending, nil
}

// ackSeqs parses the stream sequence and pending count of an ack subject
// (see msgSeq); ok is false for anything else.
func ackSeqs(reply string) (seq, pending uint64, ok bool) {
	_, seq, pending, ok = ackFields(reply)
	return seq, pending, ok
}

// ackFields parses the consumer name, stream sequence and pending count of
// an ack subject (see msgSeq); ok is false for anything else.
func ackFields(reply string) (consumer string, seq, pending uint64, ok bool) {
	const prefix = "$JS.ACK."
	if !strings.HasPrefix(reply, prefix) {
		return "", 0, 0, false
	}
	var tok [12]string
	n := 2 // tokens 0 and 1 are $JS and ACK
	for rest := reply[len(prefix):]; ; n++ {
		t, after, more := strings.Cut(rest, ".")
		if n < len(tok) {
			tok[n] = t
		}
		if !more {
			break
		}
		rest = after
	}
	n++ // count of tokens
	var seqTok, pendTok string
	switch {
	case n == 9:
		consumer, seqTok, pendTok = tok[3], tok[5], tok[8]
	case n >= 11:
		consumer, seqTok, pendTok = tok[5], tok[7], tok[10]
	default:
		return "", 0, 0, false
	}
	seq, ok1 := parseDecimal(seqTok)
	pending, ok2 := parseDecimal(pendTok)
	return consumer, seq, pending, ok1 && ok2
}

// parseDecimal parses a non-empty run of ASCII digits that fits in a
// uint64.
func parseDecimal(s string) (uint64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}
