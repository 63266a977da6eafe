package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/events"
)

// JetStream is the part of jetstream.JetStream the projector and Verify use.
type JetStream interface {
	jetstream.Publisher
	CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error)
	DeleteConsumer(ctx context.Context, stream, consumer string) error
	OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error)
}

// Defaults applied to zero Config fields.
const (
	DefaultBatchSize = 256
	DefaultDurable   = "ebb-projector"
	// idleFlush is how long the projector waits for more events before it
	// removes published entries from the outbox on their own transaction
	// (otherwise the next batch's commit removes them).
	idleFlush = 20 * time.Millisecond
	// publishChunk bounds the asynchronous publishes in flight.
	publishChunk = 1024
)

// Config configures a Projector (and Verify). The zero value works: every
// collection under LWW, the default drift bound, batches of 256.
type Config struct {
	// Policies picks the resolver per collection.
	Policies Policies
	// MaxDrift is how far an event's HLC may be ahead of the time EVENTS
	// stored it; further is dead-lettered. Zero means events.DefaultMaxDrift,
	// negative disables the check.
	MaxDrift time.Duration
	// BatchSize is the most events applied in one store transaction; zero
	// means DefaultBatchSize.
	BatchSize int
	// Durable names the JetStream consumer on EVENTS; empty means DefaultDurable.
	Durable string
	// Limits bound what an event may carry (zero fields: events defaults).
	Limits events.Limits
	// Logger receives the projector's logs (component=projector); nil discards.
	Logger *slog.Logger
	// Now reads the wall clock, used only for Stats.Lag, never for anything
	// that enters the view; nil means time.Now.
	Now func() time.Time
	// Propagator moves trace context from an event's headers to its change's
	// and receipt's; nil means W3C trace context and baggage.
	Propagator propagation.TextMapPropagator
	// HoleWindow is how far below a writer's high-water mark, in client
	// sequences, a sequence not seen yet (a hole) is remembered, so that its
	// event, arriving late, is applied rather than taken for a duplicate.
	// The producer never lets an event be overtaken by as much as its window
	// (PublisherConfig.MaxInFlight, 256 by default, at most 65536); holes
	// further down are left by events that failed for good and never come.
	// Zero means DefaultHoleWindow (65536). Verify must use the live value.
	HoleWindow uint64
	// MaxHoleRanges bounds the ranges of holes remembered per writer (a
	// jump of the sequence is one range, of at most HoleWindow sequences);
	// beyond it the oldest are forgotten, with a warning. Zero means
	// DefaultMaxHoleRanges (4096, 64 KiB per writer); negative is invalid.
	MaxHoleRanges int
	// TracerProvider traces the live projector: one ebb.projector.apply
	// span per event (kind consumer, a child of the trace context in the
	// event's headers, with the event, policy and outcome), ended when its
	// batch is committed and published, and one ebb.projector.publish span
	// per change or receipt published (a child of the apply span; the
	// message carries its context). Nil means no spans; the event's trace
	// context is then carried onto its change and receipt as is. Verify
	// never traces.
	TracerProvider trace.TracerProvider
	// MeterProvider receives ebb.projector.outcomes (by policy and
	// outcome), ebb.projector.dead_letters and the histogram
	// ebb.projector.apply.duration (per batch); nil means no metrics.
	MeterProvider metric.MeterProvider
}

func (c Config) withDefaults() Config {
	if c.MaxDrift == 0 {
		c.MaxDrift = events.DefaultMaxDrift
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Durable == "" {
		c.Durable = DefaultDurable
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Propagator == nil {
		c.Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	if c.HoleWindow == 0 {
		c.HoleWindow = DefaultHoleWindow
	}
	if c.MaxHoleRanges == 0 {
		c.MaxHoleRanges = DefaultMaxHoleRanges
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("%w: BatchSize %d is negative", ErrInvalidConfig, c.BatchSize))
	}
	if c.BatchSize > 10_000 {
		errs = append(errs, fmt.Errorf("%w: BatchSize %d is above 10000", ErrInvalidConfig, c.BatchSize))
	}
	if c.MaxHoleRanges < 0 {
		errs = append(errs, fmt.Errorf("%w: MaxHoleRanges %d is negative", ErrInvalidConfig, c.MaxHoleRanges))
	}
	if strings.ContainsAny(c.Durable, ".*> \t\r\n") {
		errs = append(errs, fmt.Errorf("%w: Durable %q holds a character a consumer name may not", ErrInvalidConfig, c.Durable))
	}
	return errors.Join(errs...)
}

func (c Config) applier(store Store, outbox bool) applier {
	return applier{
		store: store, policies: c.Policies, limits: c.Limits, maxDrift: c.MaxDrift,
		prop: c.Propagator, outbox: outbox,
		holeWindow: c.HoleWindow, maxHoleRanges: c.MaxHoleRanges, log: c.Logger.With("component", "projector"),
	}
}

// Stats are a projector's counters since Start.
type Stats struct {
	Checkpoint uint64        // last EVENTS sequence committed
	Applied    uint64        // events decided (applied, merged, rejected, conflict)
	Duplicates uint64        // events dropped as duplicates (client sequence applied before)
	Dead       uint64        // messages dead-lettered
	Batches    uint64        // store transactions
	Lag        time.Duration // Now minus the stream time of the last committed event
}

// Projector consumes EVENTS in stream order and applies every event to the
// view under the collection's policy. Per batch it commits the view, the
// checkpoint, the writers' high-water marks and holes, and an outbox of changes, receipts and
// dead letters in one store transaction, then publishes the outbox, removes
// what was published, and acks. Start it once; Close stops it.
type Projector struct {
	js      JetStream
	store   Store
	cfg     Config
	log     *slog.Logger
	ap      applier
	tracer  trace.Tracer
	metrics projectorMetrics

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	done    chan struct{}
	err     error

	checkpoint, applied, duplicates, dead, batches atomic.Uint64
	lastTime                                       atomic.Int64 // unix nanos
}

// New returns a projector reading EVENTS through js into store. It checks cfg
// (errors wrap ErrInvalidConfig, all reported at once) and does no I/O.
func New(js JetStream, store Store, cfg Config) (*Projector, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new projector: %w", err)
	}
	if js == nil || store == nil {
		return nil, fmt.Errorf("new projector: %w: nil JetStream or Store", ErrInvalidConfig)
	}
	cfg = cfg.withDefaults()
	pm, err := newProjectorMetrics(cfg.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("new projector: metrics: %w", err)
	}
	p := &Projector{js: js, store: store, cfg: cfg, log: cfg.Logger.With("component", "projector"), done: make(chan struct{}),
		tracer: tracerOf(cfg.TracerProvider), metrics: pm}
	p.ap = cfg.applier(store, true)
	p.ap.tracer = p.tracer
	return p, nil
}

// Start publishes whatever the outbox still holds from before a crash,
// (re)creates the durable consumer at checkpoint+1 and starts applying
// events on a goroutine the projector owns. It returns once consuming has
// begun. ctx bounds the start-up and, cancelled later, stops the projector
// like Close.
func (p *Projector) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return fmt.Errorf("start projector: already started")
	}
	p.started = true
	cp, err := p.store.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("start projector: %w", err)
	}
	p.checkpoint.Store(cp)
	if err := p.flushOutbox(ctx); err != nil {
		return fmt.Errorf("start projector: %w", err)
	}
	cons, err := p.consumer(ctx, cp)
	if err != nil {
		return fmt.Errorf("start projector: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	msgs := make(chan jetstream.Msg, 2*p.cfg.BatchSize)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-runCtx.Done():
		}
	}, jetstream.PullMaxMessages(2*p.cfg.BatchSize), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		p.log.Debug("consume", "err", err)
	}))
	if err != nil {
		stop()
		cancel()
		return fmt.Errorf("start projector: consume %s: %w", events.StreamEvents, err)
	}
	p.cancel = cancel
	go func() {
		defer close(p.done)
		defer stop()
		err := p.loop(runCtx, msgs, cp)
		cc.Stop()
		<-cc.Closed()
		if errors.Is(err, context.Canceled) {
			err = nil
		}
		if err != nil {
			p.log.Error("projector stopped", "err", err)
		}
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
	}()
	p.log.Info("projector started", "checkpoint", cp, "durable", p.cfg.Durable)
	return nil
}

// consumer recreates the durable consumer to deliver from checkpoint+1. The
// store, not the consumer, is the source of truth for progress: recreating
// it avoids waiting AckWait for messages a crashed run fetched but never
// acked, and puts it right after a view restore.
func (p *Projector) consumer(ctx context.Context, checkpoint uint64) (jetstream.Consumer, error) {
	if err := p.js.DeleteConsumer(ctx, events.StreamEvents, p.cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("delete consumer %s: %w", p.cfg.Durable, err)
	}
	cc := jetstream.ConsumerConfig{
		Durable:       p.cfg.Durable,
		Description:   "ebb projector: applies EVENTS to the view",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       time.Minute,
		MaxAckPending: 8 * p.cfg.BatchSize,
		FilterSubject: events.EventsPrefix + ".>",
	}
	if checkpoint > 0 {
		cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cc.OptStartSeq = checkpoint + 1
	}
	cons, err := p.js.CreateOrUpdateConsumer(ctx, events.StreamEvents, cc)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", p.cfg.Durable, err)
	}
	return cons, nil
}

// loop is the projector's goroutine.
func (p *Projector) loop(ctx context.Context, msgs <-chan jetstream.Msg, checkpoint uint64) error {
	var published []uint64 // outbox keys published, not yet removed
	idle := time.NewTimer(idleFlush)
	defer idle.Stop()
	batch := make([]jetstream.Msg, 0, p.cfg.BatchSize)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-idle.C:
			if len(published) > 0 {
				if err := p.store.RemoveOutbox(ctx, published); err != nil {
					return err
				}
				published = nil
			}
			continue
		case m := <-msgs:
			batch = append(batch, m)
		}
	fill:
		for len(batch) < p.cfg.BatchSize {
			select {
			case m := <-msgs:
				batch = append(batch, m)
			default:
				break fill
			}
		}
		next, keys, err := p.step(ctx, batch, checkpoint, published)
		if err != nil {
			return err
		}
		checkpoint, published = next, keys
		idle.Reset(idleFlush)
	}
}

// step applies one batch of messages: commit, publish, ack. It returns the
// new checkpoint and the outbox keys it published.
func (p *Projector) step(ctx context.Context, batch []jetstream.Msg, checkpoint uint64, published []uint64) (_ uint64, _ []uint64, err error) {
	start := time.Now()
	p.ap.reset(checkpoint)
	defer func() { p.ap.finishSpans(err) }()
	var last time.Time
	for _, m := range batch {
		md, err := m.Metadata()
		if err != nil {
			return 0, nil, fmt.Errorf("read metadata of %s message: %w", m.Subject(), err)
		}
		if md.Sequence.Stream <= checkpoint {
			continue // applied before a crash or a redelivery: skip, ack below
		}
		last = md.Timestamp
		if err := p.ap.add(ctx, rawMsg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data(), Seq: md.Sequence.Stream, Time: md.Timestamp}); err != nil {
			return 0, nil, fmt.Errorf("apply event at %d: %w", md.Sequence.Stream, err)
		}
	}
	b := &p.ap.batch
	b.Published = published
	if b.Checkpoint > checkpoint || len(published) > 0 {
		if err := p.store.Commit(ctx, b); err != nil {
			return 0, nil, err
		}
	}
	if err := p.publish(ctx, b.Outbox); err != nil {
		return 0, nil, err
	}
	keys := make([]uint64, len(b.Outbox))
	for i, e := range b.Outbox {
		keys[i] = e.Key
	}
	// AckAll: acking the last message acks the whole batch. An ack lost in a
	// crash is harmless: the next run restarts from the checkpoint.
	if err := batch[len(batch)-1].Ack(); err != nil {
		p.log.Debug("ack", "err", err)
	}
	p.recordBatch(ctx, time.Since(start))
	p.applied.Add(uint64(p.ap.stats.applied))
	p.duplicates.Add(uint64(p.ap.stats.duplicates))
	p.dead.Add(uint64(p.ap.stats.dead))
	p.batches.Add(1)
	if !last.IsZero() {
		p.lastTime.Store(last.UnixNano())
	}
	// The checkpoint last: whoever sees it (Stats, a test waiting for it)
	// sees the counters of the batch that reached it.
	p.checkpoint.Store(b.Checkpoint)
	return b.Checkpoint, keys, nil
}

// flushOutbox publishes and removes everything the outbox holds.
func (p *Projector) flushOutbox(ctx context.Context) error {
	for {
		entries, err := p.store.Outbox(ctx, publishChunk)
		if err != nil || len(entries) == 0 {
			return err
		}
		if err := p.publish(ctx, entries); err != nil {
			return err
		}
		keys := make([]uint64, len(entries))
		for i, e := range entries {
			keys[i] = e.Key
		}
		if err := p.store.RemoveOutbox(ctx, keys); err != nil {
			return err
		}
		p.log.Info("published outbox left from an earlier run", "entries", len(entries))
	}
}

// publish publishes entries in order and waits for every ack, retrying
// with backoff until ctx ends. The Nats-Msg-Id of each entry makes a retry
// (or a republish after a crash) harmless within the dedupe window.
func (p *Projector) publish(ctx context.Context, entries []OutboxEntry) error {
	backoff := 50 * time.Millisecond
	for {
		err := p.publishOnce(ctx, entries)
		if err == nil || ctx.Err() != nil {
			return err
		}
		p.log.Warn("publish outbox, retrying", "entries", len(entries), "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (p *Projector) publishOnce(ctx context.Context, entries []OutboxEntry) error {
	for len(entries) > 0 {
		chunk := entries[:min(len(entries), publishChunk)]
		entries = entries[len(chunk):]
		if err := p.publishChunk(ctx, chunk); err != nil {
			return err
		}
	}
	return nil
}

// publishChunk publishes entries asynchronously, each in its own span, and
// waits for every ack.
func (p *Projector) publishChunk(ctx context.Context, chunk []OutboxEntry) (err error) {
	futures := make([]jetstream.PubAckFuture, 0, len(chunk))
	spans := make([]trace.Span, 0, len(chunk))
	defer func() { endPublishSpans(spans, err) }()
	for _, e := range chunk {
		m := &nats.Msg{Subject: e.Subject, Data: e.Data}
		if len(e.Header) > 0 {
			m.Header = nats.Header{}
			for k, v := range e.Header {
				m.Header[k] = v
			}
		}
		spans = append(spans, p.startPublishSpan(e, m))
		f, err := p.js.PublishMsgAsync(m, jetstream.WithMsgID(e.MsgID))
		if err != nil {
			return fmt.Errorf("publish %s to %s: %w", e.MsgID, e.Subject, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if s := spans[i]; s != nil {
				s.SetAttributes(attrStreamSeq.Int64(int64(ack.Sequence)))
			}
		case err := <-f.Err():
			return fmt.Errorf("publish %s to %s: %w", chunk[i].MsgID, chunk[i].Subject, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Stats returns the projector's counters.
func (p *Projector) Stats() Stats {
	s := Stats{
		Checkpoint: p.checkpoint.Load(),
		Applied:    p.applied.Load(),
		Duplicates: p.duplicates.Load(),
		Dead:       p.dead.Load(),
		Batches:    p.batches.Load(),
	}
	if t := p.lastTime.Load(); t != 0 {
		s.Lag = max(0, p.cfg.Now().Sub(time.Unix(0, t)))
	}
	return s
}

// Done is closed when the projector's goroutine has ended: after Close, a
// cancelled Start context, or a fatal error (see Err).
func (p *Projector) Done() <-chan struct{} { return p.done }

// Err returns the error that stopped the projector, nil while it runs or
// after a clean stop.
func (p *Projector) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Close stops the projector, waits for its goroutine and returns the error
// that stopped it, if any. It does not close the store. It is safe to call
// more than once, and before Start.
func (p *Projector) Close() error {
	p.mu.Lock()
	cancel, started := p.cancel, p.started && p.cancel != nil
	p.mu.Unlock()
	if !started {
		return nil
	}
	cancel()
	<-p.done
	return p.Err()
}

// Run starts the projector and blocks until ctx ends or it fails; it returns
// nil after a cancel, the failure otherwise.
func (p *Projector) Run(ctx context.Context) error {
	if err := p.Start(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-p.done:
	}
	return p.Close()
}
