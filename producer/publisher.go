package producer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// JetStream is the part of jetstream.JetStream the Publisher uses.
type JetStream interface {
	PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

var _ JetStream = (jetstream.JetStream)(nil)

// Conn is the part of *nats.Conn the Publisher uses to follow the
// connection: it does not publish while disconnected, wakes up on reconnect,
// and tells a permission violation apart from a lost message.
type Conn interface {
	Status() nats.Status
	StatusChanged(statuses ...nats.Status) chan nats.Status
	RemoveStatusListener(ch chan nats.Status)
	LastError() error
	FlushWithContext(ctx context.Context) error
}

var _ Conn = (*nats.Conn)(nil)

// Publisher defaults.
const (
	DefaultMaxInFlight    = 256
	DefaultBackoffInitial = 100 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
	DefaultAckTimeout     = 5 * time.Second

	// maxInFlight caps MaxInFlight. The window also bounds how far (in
	// client sequence) an event can be overtaken by events of other
	// documents, and the projector tells a late event from a duplicate only
	// within its hole window (projection.DefaultHoleWindow, 65536).
	maxInFlight = 1 << 16
)

// PublisherConfig configures a Publisher. Every field may be left zero.
type PublisherConfig struct {
	// MaxInFlight bounds the publishes awaiting a PubAck (at most one per
	// document) and how far past the oldest unfinished entry the publisher
	// reads ahead, in client sequences; default DefaultMaxInFlight, at most
	// 65536 (the projector's default hole window: see the package doc).
	MaxInFlight int
	// BackoffInitial and BackoffMax bound the wait between retries after a
	// retryable failure: attempt n waits a uniformly random time in
	// [0, min(BackoffMax, BackoffInitial*2^n)] (full jitter). Defaults
	// DefaultBackoffInitial and DefaultBackoffMax.
	BackoffInitial, BackoffMax time.Duration
	// AckTimeout is how long a publish may wait for its PubAck before it
	// counts as lost (retryable); default DefaultAckTimeout.
	AckTimeout time.Duration
	// OnFailure is called, from the publisher's goroutine, for every entry
	// that failed for good, after the failure is stored. It must not block.
	OnFailure func(Entry)
	// Logger receives give-ups, interruptions and recoveries; nil discards.
	Logger *slog.Logger
	// Jitter picks the wait for a backoff ceiling; nil means uniformly
	// random in [0, ceiling]. Tests set it to make waits deterministic.
	Jitter func(ceiling time.Duration) time.Duration
	// TracerProvider traces each publish attempt (span
	// ebb.producer.publish, kind producer, a child of the entry's append
	// span, with the event id, subject and, once acknowledged, the stream
	// sequence); the message carries the publish span's context. Nil means
	// no spans: the message carries the append's context as stored.
	TracerProvider trace.TracerProvider
	// MeterProvider receives ebb.producer.events.published,
	// ebb.producer.events.failed, ebb.producer.retries and the histogram
	// ebb.producer.publish.duration; nil means no metrics.
	MeterProvider metric.MeterProvider
}

func (c PublisherConfig) withDefaults() (PublisherConfig, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if c.MaxInFlight < 0 {
		bad("MaxInFlight %d is negative", c.MaxInFlight)
	}
	if c.MaxInFlight > maxInFlight {
		bad("MaxInFlight %d is above %d", c.MaxInFlight, maxInFlight)
	}
	if c.BackoffInitial < 0 {
		bad("BackoffInitial %s is negative", c.BackoffInitial)
	}
	if c.BackoffMax < 0 {
		bad("BackoffMax %s is negative", c.BackoffMax)
	}
	if c.AckTimeout < 0 {
		bad("AckTimeout %s is negative", c.AckTimeout)
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.BackoffInitial == 0 {
		c.BackoffInitial = DefaultBackoffInitial
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = max(DefaultBackoffMax, c.BackoffInitial)
	}
	if c.BackoffMax < c.BackoffInitial {
		bad("BackoffMax %s is below BackoffInitial %s", c.BackoffMax, c.BackoffInitial)
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Jitter == nil {
		c.Jitter = func(d time.Duration) time.Duration { return rand.N(d + 1) }
	}
	return c, errors.Join(errs...)
}

// Status is a snapshot of the publisher and its log.
type Status struct {
	Pending       int       // entries not yet acknowledged by JetStream
	Failed        int       // entries that failed for good (without a receipt since)
	OldestPending time.Time // when the oldest pending entry was appended; zero if none
	LastError     string    // the last publish error, retryable or not; empty if none yet
	LastErrorAt   time.Time
	LastPush      time.Time // when an acknowledgement was last stored
	Connected     bool      // the connection is up (without a Conn: the last publish round succeeded)
	Retrying      bool      // publishing is interrupted and being retried
	Published     uint64    // entries published since this publisher was made: marked by their ack, or settled by their receipt first
}

// Publisher drains a Log's pending entries to JetStream, in log order per
// document: one publish per document is in flight at a time, so a later
// event of a document never reaches EVENTS before an earlier one, while
// other documents' events fill the window. Each message carries the event
// id as Nats-Msg-Id and the trace context of the Append in its headers. A
// PubAck (duplicate or not) marks the entry published; a permanent refusal
// marks it failed and publishing goes on behind it (its document's next
// event included); anything else is retried forever with backoff,
// restarting from the oldest unacknowledged entry.
type Publisher struct {
	published atomic.Uint64 // entries marked published; see Status
	// settledBase is the log's settledPending when p was made: Status
	// counts the settles since.
	settledBase uint64
	log         *Log
	js          JetStream
	conn        Conn
	cfg         PublisherConfig
	logger      *slog.Logger
	tracer      trace.Tracer
	metrics     publisherMetrics

	mu       sync.Mutex
	started  bool
	closed   bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	statusCh chan nats.Status
	stopped  chan struct{}

	stMu       sync.Mutex
	lastErr    string
	lastErrAt  time.Time
	lastPush   time.Time
	connected  bool
	retrying   bool
	downSince  time.Time
	retryCount int

	// Owned by the run goroutine.
	bo     Backoff
	cursor uint64 // last sequence sent; the next round continues after it

	results *resultQueue // acks and refusals, from run to the committer
	rewind  atomic.Bool  // the committer failed: send again from the oldest pending
}

// NewPublisher returns a Publisher for l that publishes with js. conn, which
// may be nil, is the connection js runs on (see Conn); without it the
// publisher cannot tell a permission violation from a lost message, so such
// an event is retried forever. Call Start to begin.
func NewPublisher(l *Log, js JetStream, conn Conn, cfg PublisherConfig) (*Publisher, error) {
	var errs []error
	if l == nil {
		errs = append(errs, fmt.Errorf("%w: nil Log", ErrInvalidConfig))
	}
	if js == nil {
		errs = append(errs, fmt.Errorf("%w: nil JetStream", ErrInvalidConfig))
	}
	cfg, err := cfg.withDefaults()
	if err := errors.Join(append(errs, err)...); err != nil {
		return nil, fmt.Errorf("new publisher: %w", err)
	}
	pm, err := newPublisherMetrics(cfg.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("new publisher: metrics: %w", err)
	}
	p := &Publisher{
		log:         l,
		js:          js,
		conn:        conn,
		cfg:         cfg,
		logger:      cfg.Logger.With(keyComponent, "producer.publisher", keyTenant, l.Tenant(), keyClient, l.Client()),
		stopped:     make(chan struct{}),
		results:     newResultQueue(),
		tracer:      tracerOf(cfg.TracerProvider),
		metrics:     pm,
		settledBase: l.settledPending.Load(),
		bo:          Backoff{initial: cfg.BackoffInitial, max: cfg.BackoffMax, jitter: cfg.Jitter},
	}
	return p, nil
}

// Start starts publishing in a goroutine owned by p, until ctx ends or
// Close is called. It returns ErrStarted on a second call and ErrClosed
// after Close.
func (p *Publisher) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return fmt.Errorf("start publisher: %w", ErrClosed)
	case p.started:
		return fmt.Errorf("start publisher: %w", ErrStarted)
	}
	p.started = true
	ctx, p.cancel = context.WithCancel(ctx)
	if p.conn != nil {
		p.statusCh = p.conn.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	}
	p.wg.Add(2)
	go p.run(ctx)
	go p.commit()
	return nil
}

// Close stops publishing and waits for the goroutine to end. Entries in
// flight stay pending and are published again next time (JetStream's
// dedupe drops the copy). It is safe to call twice.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	if p.cancel != nil {
		p.cancel()
	}
	p.mu.Unlock()
	p.wg.Wait()
	if p.statusCh != nil {
		p.conn.RemoveStatusListener(p.statusCh)
	}
	close(p.stopped)
	return nil
}

// Flush returns nil once every entry appended before the call is published,
// failed or settled. It returns early with ctx's error, or ErrClosed when
// the publisher or the log closes.
func (p *Publisher) Flush(ctx context.Context) error {
	target := p.log.LastSeq()
	for {
		wake := p.log.progress.wait()
		seq, _, err := p.log.oldestPending()
		if err != nil {
			return fmt.Errorf("flush: %w", err)
		}
		if seq == 0 || seq > target {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("flush through entry %d: %w", target, ctx.Err())
		case <-p.stopped:
			return fmt.Errorf("flush through entry %d: %w", target, ErrClosed)
		case <-p.log.done:
			return fmt.Errorf("flush through entry %d: %w", target, ErrClosed)
		case <-wake:
		}
	}
}

// Status returns a snapshot of the publisher and its log.
func (p *Publisher) Status() Status {
	pending, failed := p.log.counts()
	_, oldest, _ := p.log.oldestPending()
	p.stMu.Lock()
	defer p.stMu.Unlock()
	return Status{
		Pending:       pending,
		Failed:        failed,
		OldestPending: oldest,
		LastError:     p.lastErr,
		LastErrorAt:   p.lastErrAt,
		LastPush:      p.lastPush,
		Connected:     p.connected,
		Retrying:      p.retrying,
		Published:     p.published.Load() + p.log.settledPending.Load() - p.settledBase,
	}
}

// errStop ends the run loop: its context ended or the log closed.
var errStop = errors.New("stop")

func (p *Publisher) run(ctx context.Context) {
	defer p.wg.Done()
	defer p.results.close()
	probe := false
	for {
		if ctx.Err() != nil {
			return
		}
		if p.conn != nil && p.conn.Status() != nats.CONNECTED {
			p.interrupted(fmt.Errorf("connection %s", p.conn.Status()), 0)
			if p.wait(ctx, nil, 0) != nil {
				return
			}
			continue
		}
		if p.conn != nil {
			p.setConnected(true)
		}
		appended := p.log.appended.wait()
		if p.rewind.Swap(false) {
			p.cursor = 0
		}
		err := p.round(ctx, probe)
		switch {
		case err == nil:
			probe = false
			if p.wait(ctx, appended, 0) != nil {
				return
			}
		case errors.Is(err, errStop):
			return
		default:
			// Start again from the oldest unacknowledged entry, so nothing
			// sent after it can stay ahead of it.
			p.cursor = 0
			probe = errors.Is(err, ErrAckTimeout)
			d := p.bo.Next()
			p.interrupted(err, d)
			if p.wait(ctx, nil, d) != nil {
				return
			}
		}
	}
}

// wait blocks until wake closes, the connection changes state, d passes
// (d > 0), ctx ends or the log closes (errStop).
func (p *Publisher) wait(ctx context.Context, wake <-chan struct{}, d time.Duration) error {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
		return errStop
	case <-p.log.done:
		return errStop
	case <-wake:
	case <-p.statusCh:
	case <-timer:
	}
	return nil
}

// flight is one publish awaiting its PubAck.
type flight struct {
	out  pendingMsg
	fut  jetstream.PubAckFuture
	sent time.Time
	err  error      // set when the publish failed before an ack was awaited
	span trace.Span // the publish span; nil once ended
}

// result is the fate of one flight, to store.
type result struct {
	seq uint64
	id  string // the event's
	ack *jetstream.PubAck
	err error // permanent
}

// readPage is how many pending entries a round reads from the log at a
// time.
const readPage = 256

// round publishes pending entries after p.cursor until none is left (nil), a
// retryable failure (the error), or ctx or the log ends (errStop).
//
// At most MaxInFlight publishes (1 when probing) await their PubAck at a
// time, and at most one per subject, that is per document: a later event of
// a document is held back until the earlier one is acknowledged or failed
// for good, while events of other documents keep flowing. So a retryable
// failure in the middle of the window can let events of other documents
// overtake an event, never one of its own document. Entries are admitted
// to the window (sent or held behind their document) no further than
// MaxInFlight client sequences past the oldest one the round has not
// finished, which bounds the entries held in memory and how far an event
// can be overtaken (see doc.go); they are read from the log readPage at a
// time. Results go, in the order the publishes were sent, to the
// committer, which stores all that arrived during its previous commit in
// its next one.
func (p *Publisher) round(ctx context.Context, probe bool) (rerr error) {
	var (
		inflight []flight // sent, in send order
		w        = newWindow(uint64(p.cfg.MaxInFlight))
		stopErr  error        // a retryable send failure: drain the window, then return it
		ahead    []pendingMsg // read after p.cursor, not yet admitted to the window
	)
	defer func() {
		// Publishes still in flight are abandoned: they go again next round.
		for i := range inflight {
			p.endFlight(&inflight[i], nil, cmp.Or(rerr, errStop))
		}
	}()
	for {
		limit := p.cfg.MaxInFlight
		if probe {
			limit = 1
		}
		// Taken before reading: an append committed after the read below
		// wakes the wait for acks, so it is sent while earlier publishes
		// are still in flight instead of after their acks.
		appended := p.log.appended.wait()
	fill:
		for stopErr == nil && len(inflight) < limit {
			// Entries released by their document's previous publish go
			// first: they are older than anything not read yet.
			if m, ok := w.nextReady(); ok {
				if stopErr = p.sendTo(ctx, &inflight, m, probe); stopErr != nil {
					break
				}
				continue
			}
			below, bounded := w.bound()
			if bounded && p.cursor+1 >= below {
				break // read far enough ahead of the oldest unfinished entry
			}
			if len(ahead) == 0 {
				// Read a page at a time, not what the window has room
				// for: one read transaction per page, not per ack, and
				// the first publishes leave after one page is read.
				var err error
				ahead, err = p.log.pendingAfter(p.cursor, readPage, 0)
				if err != nil {
					if errors.Is(err, ErrClosed) {
						return errStop
					}
					return err
				}
				if len(ahead) == 0 {
					break
				}
			}
			for len(ahead) > 0 && len(inflight) < limit {
				m := ahead[0]
				if !w.admit(m) {
					break fill // past the bound: it waits in ahead
				}
				ahead = ahead[1:]
				p.cursor = m.seq
				if w.hold(m) {
					continue // its document has a publish in flight
				}
				if stopErr = p.sendTo(ctx, &inflight, m, probe); stopErr != nil {
					break fill
				}
			}
		}
		if len(inflight) == 0 {
			return stopErr
		}

		// Wait for the oldest, then take every later one already done; a
		// new append ends the wait (when the window has room), back to
		// filling it.
		var done []result
		var wake <-chan struct{}
		if !probe && len(inflight) < limit {
			wake = appended
		}
		for len(inflight) > 0 {
			block := len(done) == 0
			r, ok, err := p.await(ctx, inflight[0], block, wake)
			if err != nil {
				if serr := p.store(ctx, done); serr != nil {
					return serr
				}
				return err
			}
			if !ok {
				break
			}
			done = append(done, r)
			p.endFlight(&inflight[0], &r, nil)
			w.finish(inflight[0].out)
			inflight = inflight[1:]
		}
		if err := p.store(ctx, done); err != nil {
			return err
		}
		if probe && len(done) > 0 {
			probe = false // the head got through: open the window again
		}
	}
}

// sendTo publishes m and appends its flight to inflight. A retryable send
// failure is returned (and nothing appended); a permanent one is appended,
// to be stored as failed in order.
func (p *Publisher) sendTo(ctx context.Context, inflight *[]flight, m pendingMsg, probe bool) error {
	f := p.send(ctx, m, probe)
	if f.err != nil && !permanent(f.err) {
		err := fmt.Errorf("publish event %s: %w", m.id, f.err)
		p.endFlight(&f, nil, err)
		return err
	}
	*inflight = append(*inflight, f)
	return nil
}

// window is the bookkeeping of one round: which subjects (documents) have a
// publish in flight, the entries held back behind them, and the oldest entry
// read and not finished, which bounds how far ahead the round may read.
type window struct {
	span     uint64                  // read no further than span sequences past the oldest unfinished
	busy     map[string][]pendingMsg // subject with a publish in flight (or released) -> entries held behind it, in log order
	ready    []pendingMsg            // held entries whose predecessor finished, to send next, in release order
	open     []uint64                // sequences read and not known finished, ascending
	finished map[uint64]struct{}     // finished sequences still in open
}

func newWindow(span uint64) *window {
	return &window{span: span, busy: map[string][]pendingMsg{}, finished: map[uint64]struct{}{}}
}

// bound returns the sequence the round must stay below: span past the
// oldest entry read and not finished. bounded is false when there is none.
func (w *window) bound() (below uint64, bounded bool) {
	for len(w.open) > 0 {
		if _, ok := w.finished[w.open[0]]; !ok {
			return w.open[0] + w.span, true
		}
		delete(w.finished, w.open[0])
		w.open = w.open[1:]
	}
	return 0, false
}

// admit records m as read, unless it lies span or more past the oldest
// unfinished entry (possible only on a read made with no bound).
func (w *window) admit(m pendingMsg) bool {
	if below, ok := w.bound(); ok && m.seq >= below {
		return false
	}
	w.open = append(w.open, m.seq)
	return true
}

// hold reports whether m must wait for an earlier publish of its subject,
// queueing it if so; otherwise it marks the subject busy.
func (w *window) hold(m pendingMsg) bool {
	q, busy := w.busy[m.msg.Subject]
	if busy {
		w.busy[m.msg.Subject] = append(q, m)
		return true
	}
	w.busy[m.msg.Subject] = nil
	return false
}

// finish records that m was acknowledged or failed for good, and releases
// the next entry held behind it, which keeps the subject busy until sent.
func (w *window) finish(m pendingMsg) {
	w.finished[m.seq] = struct{}{}
	q := w.busy[m.msg.Subject]
	if len(q) == 0 {
		delete(w.busy, m.msg.Subject)
		return
	}
	w.ready = append(w.ready, q[0])
	w.busy[m.msg.Subject] = q[1:]
}

// nextReady returns the oldest released entry, if any.
func (w *window) nextReady() (pendingMsg, bool) {
	if len(w.ready) == 0 {
		return pendingMsg{}, false
	}
	m := w.ready[0]
	w.ready = w.ready[1:]
	return m, true
}

// send publishes one pending entry. When probing, it also flushes the
// connection and checks whether the server answered the message with a
// permission violation (which NATS reports on the connection, not the ack).
func (p *Publisher) send(ctx context.Context, m pendingMsg, probe bool) flight {
	f := flight{out: m, sent: time.Now()}
	if p.cfg.TracerProvider != nil {
		// Without a provider there is no span to start, and the message
		// carries the append's trace context as stored.
		f.span = p.startPublishSpan(m)
	}
	var before error
	if probe && p.conn != nil {
		before = p.conn.LastError()
	}
	f.fut, f.err = p.js.PublishMsgAsync(m.msg)
	if f.err == nil && probe && p.conn != nil {
		fctx, cancel := context.WithTimeout(ctx, p.cfg.AckTimeout)
		_ = p.conn.FlushWithContext(fctx) // a failed flush shows as a missing ack
		cancel()
		if after := p.conn.LastError(); after != nil && after != before && errors.Is(after, nats.ErrPermissionViolation) {
			f.err = after
		}
	}
	return f
}

// await returns the fate of f. With block false it returns ok=false at once
// if f is not done; with block true it waits, and returns ok=false if wake
// closes first (nil: never). A retryable failure is returned as err (so is
// errStop).
func (p *Publisher) await(ctx context.Context, f flight, block bool, wake <-chan struct{}) (r result, ok bool, err error) {
	r.seq, r.id = f.out.seq, f.out.id
	if f.err != nil {
		r.err = fmt.Errorf("publish event %s: %w", f.out.id, f.err)
		return r, true, nil
	}
	var (
		ack  *jetstream.PubAck
		perr error
	)
	if block {
		t := time.NewTimer(max(time.Until(f.sent.Add(p.cfg.AckTimeout)), 0))
		defer t.Stop()
		select {
		case ack = <-f.fut.Ok():
		case perr = <-f.fut.Err():
		case <-wake:
			return r, false, nil
		case <-t.C:
			return r, false, fmt.Errorf("publish event %s: %w after %s", f.out.id, ErrAckTimeout, p.cfg.AckTimeout)
		case <-ctx.Done():
			return r, false, errStop
		case <-p.log.done:
			return r, false, errStop
		}
	} else {
		select {
		case ack = <-f.fut.Ok():
		case perr = <-f.fut.Err():
		default:
			return r, false, nil
		}
	}
	if perr != nil {
		err := fmt.Errorf("publish event %s: %w", f.out.id, perr)
		if !permanent(perr) {
			return r, false, err
		}
		r.err = err
		return r, true, nil
	}
	r.ack = ack
	return r, true, nil
}

// store hands results to the committer without waiting for its commit
// (only for room, past maxQueuedResults: see resultQueue); an ack resets
// the backoff.
func (p *Publisher) store(ctx context.Context, done []result) error {
	if len(done) == 0 {
		return nil
	}
	for _, r := range done {
		if r.ack != nil {
			p.bo.Reset()
			break
		}
	}
	return p.results.put(ctx, done)
}

// commit stores results until run closes the queue, each time all that
// queued up during the previous commit in one transaction, then reports
// failures and recovery.
func (p *Publisher) commit() {
	defer p.wg.Done()
	var spare []result
	for {
		rs, ok := p.results.take(spare)
		if !ok {
			return
		}
		spare = rs
		failed, published, err := p.log.markResults(rs)
		if err == nil {
			// Count before waking Flush. A Flush that polls may still see the
			// commit a moment before the count (Sync reads it again at its
			// end).
			p.published.Add(uint64(published))
			p.log.progress.notify()
		}
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				p.logger.Error("storing publish results failed; sending again from the oldest pending entry", keyErr, err)
				p.stMu.Lock()
				p.lastErr, p.lastErrAt = err.Error(), time.Now()
				p.stMu.Unlock()
				p.rewind.Store(true)
				p.log.appended.notify()
			}
			continue
		}
		now := time.Now()
		if len(failed) > 0 {
			p.metrics.failed.Add(context.Background(), int64(len(failed)))
		}
		for _, e := range failed {
			p.logger.Error("event refused by the server; not retrying", keyEvent, e.Event.ID, keySeq, e.Event.Seq,
				keySubject, e.Event.Subject(), keyErr, e.Err)
			p.stMu.Lock()
			p.lastErr, p.lastErrAt = e.Err, now
			p.stMu.Unlock()
			if p.cfg.OnFailure != nil {
				p.cfg.OnFailure(e)
			}
		}
		if published > 0 {
			p.recovered(now)
		}
	}
}

func (p *Publisher) setConnected(c bool) {
	p.stMu.Lock()
	defer p.stMu.Unlock()
	p.connected = c
}

// interrupted records a retryable failure; it logs only the first of a run.
func (p *Publisher) interrupted(err error, next time.Duration) {
	now := time.Now()
	p.stMu.Lock()
	first := !p.retrying
	p.lastErr, p.lastErrAt = err.Error(), now
	if p.conn == nil || p.conn.Status() != nats.CONNECTED {
		p.connected = false
	}
	if first {
		p.retrying, p.downSince, p.retryCount = true, now, 0
	}
	p.retryCount++
	attempt := p.retryCount
	p.stMu.Unlock()
	p.metrics.retries.Add(context.Background(), 1)
	if first {
		p.logger.Warn("publishing interrupted; retrying until it succeeds", keyErr, err, keyBackoff, next)
	} else {
		p.logger.Debug("publish retry failed", keyErr, err, keyAttempt, attempt, keyBackoff, next)
	}
}

// recovered records a stored acknowledgement and ends a retry run.
func (p *Publisher) recovered(now time.Time) {
	p.stMu.Lock()
	was, since, attempts := p.retrying, p.downSince, p.retryCount
	p.lastPush, p.retrying, p.connected = now, false, true
	p.stMu.Unlock()
	if was {
		p.logger.Info("publishing recovered", keyAttempt, attempts, keyDowntime, now.Sub(since))
	}
}

// permanent reports whether a publish error will not go away by retrying:
// the server refused the message itself. Everything else (no connection,
// timeouts, no responders, leader changes, JetStream unavailable) is
// retryable.
func permanent(err error) bool {
	switch {
	case errors.Is(err, nats.ErrMaxPayload),
		errors.Is(err, nats.ErrBadSubject),
		errors.Is(err, nats.ErrPermissionViolation),
		errors.Is(err, nats.ErrHeadersNotSupported):
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// Only errors about the message itself are permanent: it would be
		// refused however often it is sent. Anything else, 4xx included
		// (an account out of storage answers 400), may pass later: retry.
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamMessageExceedsMaximum, jsErrCodeHeaderExceedsMaximum:
			return true
		}
	}
	return false
}

// jsErrCodeHeaderExceedsMaximum is nats-server's "header size exceeds
// maximum allowed" (JSStreamHeaderExceedsMaximumErr), which nats.go does
// not name.
const jsErrCodeHeaderExceedsMaximum jetstream.ErrorCode = 10097
