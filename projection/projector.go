package projection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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
	"github.com/ebbsync/ebb/projection/rules"
)

// JetStream is the part of jetstream.JetStream the projector and Verify use.
type JetStream interface {
	jetstream.Publisher
	CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error)
	DeleteConsumer(ctx context.Context, stream, consumer string) error
	OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error)
	// Stream reads a stream's info: its identity (creation time) and state.
	Stream(ctx context.Context, stream string) (jetstream.Stream, error)
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
	// DefaultPublishTimeout is how long the projector waits for the
	// acks of one chunk of outbox publishes before it publishes them again.
	DefaultPublishTimeout = 10 * time.Second
	// gapCheck is how long the projector waits without a delivery before
	// it asks the server whether it delivered anything the projector never
	// received (a lost tail: no later delivery would show the gap), and
	// how often it asks again while nothing arrives.
	gapCheck = 2 * time.Second
	// DefaultStallTimeout is Config.StallTimeout's default.
	DefaultStallTimeout = 30 * time.Second
	// streamWatch is how often the running projector reads the consumer's
	// and the streams' info (progress for Ready, CHANGES' identity), at
	// most; a quarter of StallTimeout when that is shorter.
	streamWatch = 2 * time.Second
	// maxRecreateBackoff bounds the wait between attempts to recreate the
	// consumer.
	maxRecreateBackoff = 2 * time.Second
	// recreateTimeout bounds each JetStream request of the first attempt
	// to recreate the consumer (read EVENTS, delete, create): a request
	// sent while a cluster elects a leader may never be answered, and
	// waiting out the client's default (5s) per request made failovers
	// slow: each request lost to an election costs this much. It grows by
	// a second with every failed attempt, for a cluster that is only slow.
	recreateTimeout = time.Second
	// maxRecreateTimeout bounds recreateTimeout as it grows with every
	// attempt that failed: nats.go's default request timeout.
	maxRecreateTimeout = 5 * time.Second
	// pullExpiry and pullHeartbeat are the projector's pull requests: the
	// server sends an idle heartbeat every pullHeartbeat, and nats.go
	// reports two missed ones (ErrNoHeartbeat), upon which the projector
	// recreates its consumer. nats.go's defaults (30s, 15s) took 30s to
	// notice a consumer leader that died, or a new one that never got the
	// pull request; and a pull expires, and goes again, every pullExpiry,
	// so a leader that lost it gets a new one within that.
	pullExpiry    = 5 * time.Second
	pullHeartbeat = time.Second
	// consumerGrace is how long the projector may be without a working
	// consumer (recreating it after an error, missed heartbeats, a leader
	// change) before Ready reports it: it cannot commit meanwhile. At most
	// StallTimeout.
	consumerGrace = 5 * time.Second
	// peerSilence is how long a replica of EVENTS or of the consumer may
	// be unheard of by its leader before it no longer counts for quorum:
	// several of nats-server's raft heartbeats (one a second).
	peerSilence = 4 * time.Second
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
	// HoleWindow is every writer's dedupe window, in client sequences:
	// each sequence not seen yet (a hole) less than it below the writer's
	// high-water mark is remembered, so that its event, arriving late, is
	// applied rather than taken for a duplicate; an event more than it
	// above the mark is refused (dead letter, invalid receipt). The
	// producer never lets an event be overtaken by as much as its window
	// (PublisherConfig.MaxInFlight, 256 by default, at most 65536), so this
	// must not be below the writers' MaxInFlight. Zero means
	// DefaultHoleWindow (65536); above MaxHoleWindow is invalid. Verify
	// must use the live value.
	HoleWindow uint64
	// MaxDocBytes bounds a document's state as published to CHANGES (the
	// encoded change: fields, open conflicts, the conflict record it
	// settles, and clocks under merge or a custom resolver): an event whose result would be larger is
	// rejected with a reason naming the limit, and the view is untouched.
	// Keep it well under the NATS max_payload (1 MiB by default) to leave
	// room for headers. Zero means DefaultMaxDocBytes (512 KiB); negative
	// is invalid. Verify must use the live value.
	MaxDocBytes int
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
	// PublishTimeout bounds the wait for the acks of one chunk (up to 1024)
	// of outbox publishes (changes, receipts, dead letters). An ack lost
	// while the connection stays up (a dropped request, a leader change in
	// a cluster) would otherwise stall the projector for good; on expiry
	// the publish counts as failed and is retried with backoff: the entries
	// stay in the outbox and go again under the same Nats-Msg-Id, which
	// JetStream drops if the first copy did arrive. Zero means
	// DefaultPublishTimeout (10s); negative is invalid.
	PublishTimeout time.Duration
	// StallTimeout is how long the projector may go without progress
	// before Ready reports it: outbox publishes failing, the consumer
	// failing to be recreated, or events pending while no batch commits.
	// It gives nothing up: a publish that keeps failing with "no stream"
	// (no stream captures its subject: a cut route, a stream being
	// recreated) is retried for as long as it takes. Zero means
	// DefaultStallTimeout (30s); negative is invalid.
	StallTimeout time.Duration
	// Partition is the share of EVENTS this projector applies (see
	// Partition and Group); the zero value is the whole stream. With
	// Count > 1 the Store must be that partition's (PartitionedStore),
	// every batch is fenced by its starting checkpoint (Batch.Prev), and
	// an empty Durable means DefaultDurable + "-p<Index>-of-<Count>".
	Partition Partition
	// Rules are the sync rules (see projection/rules and events/PROTOCOL.md, "Sync rules"): every change of
	// a collection they decide carries its audience (events.HeaderReaders
	// and HeaderWasReaders), and an event whose writer they do not let
	// write the document is rejected. Nil means none: every change is the
	// tenant's. Verify must use the live rules. Rules trust the writer's
	// client and its events.HeaderWriterGroups as the server under auth
	// stamps them; without auth they judge nothing a client cannot forge.
	Rules *rules.Set
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
		if !c.Partition.whole() {
			c.Durable = fmt.Sprintf("%s-p%d-of-%d", DefaultDurable, c.Partition.Index, c.Partition.Count)
		}
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
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.MaxDocBytes == 0 {
		c.MaxDocBytes = DefaultMaxDocBytes
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = DefaultStallTimeout
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
	if c.MaxDocBytes < 0 {
		errs = append(errs, fmt.Errorf("%w: MaxDocBytes %d is negative", ErrInvalidConfig, c.MaxDocBytes))
	}
	if c.HoleWindow > MaxHoleWindow {
		errs = append(errs, fmt.Errorf("%w: HoleWindow %d is above %d", ErrInvalidConfig, c.HoleWindow, MaxHoleWindow))
	}
	if c.PublishTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: PublishTimeout %s is negative", ErrInvalidConfig, c.PublishTimeout))
	}
	if c.StallTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: StallTimeout %s is negative", ErrInvalidConfig, c.StallTimeout))
	}
	if err := c.Partition.validate(); err != nil {
		errs = append(errs, err)
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
		holeWindow: c.HoleWindow, maxDocBytes: c.MaxDocBytes, log: c.Logger.With("component", "projector"),
		partitioned: !c.Partition.whole(), rules: c.Rules,
	}
}

// Stats are a projector's counters since Start.
type Stats struct {
	Checkpoint uint64 // last EVENTS sequence committed
	Applied    uint64 // events decided (applied, merged, rejected, conflict)
	Duplicates uint64 // events dropped as duplicates (client sequence applied before)
	Dead       uint64 // messages dead-lettered
	Batches    uint64 // store transactions
	Resets     uint64 // consumer recreated at checkpoint+1 after a missing delivery or a consume error
	Reanchors  uint64 // times EVENTS was found to be another incarnation than the checkpoint's (see doc.go)
	Reseeds    uint64 // times CHANGES was found recreated or purged and reseeded from the view
	// OverAudience counts copies of a document's change published with
	// nobody as readers because its readers would pass MaxAudienceBytes
	// (a re-emission under new rules, a reseed; a write is refused
	// instead): each also logged as a warning naming the document.
	OverAudience uint64
	Lag          time.Duration // Now minus the stream time of the last committed event
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

	// marks is what the store records of the streams, or will once the
	// next batch commits them (marksDirty; reanchor: that batch moves the
	// checkpoint to a new EVENTS). Owned by Start, then by the loop's
	// goroutine.
	marks                StreamMarks
	marksDirty, reanchor bool
	// unseeded counts documents a reseed could not put back in CHANGES
	// (their changes refused for good), so the count check does not reseed
	// again at every look.
	unseeded uint64
	// stored is the checkpoint the store holds, as last read or
	// committed: a partition's batches are fenced by it (Batch.Prev).
	// Owned like marks.
	stored uint64
	// fenced makes every commit carry Batch.Prev (a partition, or a
	// Group's single projector).
	fenced bool

	health health // what Ready reports

	checkpoint, applied, duplicates, dead, batches, resets, reanchors, reseeds atomic.Uint64
	overAudience                                                               atomic.Uint64 // Stats.OverAudience
	changesSeq                                                                 atomic.Uint64 // highest CHANGES sequence acked
	lastTime                                                                   atomic.Int64  // unix nanos
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
// like Close. A Close during the start-up (publishing the outbox may
// retry for as long as the servers refuse it) stops it: Start then
// returns an error wrapping ErrClosed. After a failed Start, Done is
// closed and the projector cannot be started again.
func (p *Projector) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return fmt.Errorf("start projector: already started")
	}
	p.started = true
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	p.cancel = cancel
	p.mu.Unlock()

	f, cp, err := p.startup(runCtx)
	if err != nil {
		// Closed during the start-up: runCtx ended while ctx did not
		// (judged before cancel ends runCtx for every failure).
		if ctx.Err() == nil && runCtx.Err() != nil {
			err = fmt.Errorf("%w during start-up: %w", ErrClosed, err)
		}
		cancel()
		stop()
		close(p.done)
		return fmt.Errorf("start projector: %w", err)
	}
	go func() {
		defer close(p.done)
		defer stop()
		// loop stops its feed before it returns, whatever ended it, so no
		// consume callback is left blocked behind it.
		err := p.loop(runCtx, f, cp)
		cancel()
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

// startup is Start's I/O, under ctx, which Close cancels: it reads the
// checkpoint and the stream marks, anchors on EVENTS, publishes the
// outbox left from an earlier run, and opens the first feed.
func (p *Projector) startup(ctx context.Context) (*feed, uint64, error) {
	cp, err := p.store.Checkpoint(ctx)
	if err != nil {
		return nil, 0, err
	}
	p.stored = cp
	if p.marks, err = p.store.Streams(ctx); err != nil {
		return nil, 0, err
	}
	if !p.marks.DocsCounted {
		if err := p.countDocs(ctx); err != nil {
			return nil, 0, err
		}
	}
	if cp, err = p.anchor(ctx, cp); err != nil {
		return nil, 0, err
	}
	p.checkpoint.Store(cp)
	if err := p.flushOutbox(ctx); err != nil {
		return nil, 0, err
	}
	if err := p.checkChanges(ctx); err != nil {
		return nil, 0, err
	}
	if err := p.checkRules(ctx); err != nil { // sync rules (rules_reemit.go)
		return nil, 0, err
	}
	f, err := p.openFeed(ctx, cp, 0)
	for backoff := 50 * time.Millisecond; err != nil && serverFailed(err); backoff = min(2*backoff, maxRecreateBackoff) {
		// The server failed the request on its side (another server
		// deleting the same durable at its own start, a store error):
		// retried, as the same create is after a reset.
		p.log.Warn("create consumer at start-up, retrying", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, 0, fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-t.C:
		}
		f, err = p.openFeed(ctx, cp, 0)
	}
	if err != nil {
		return nil, 0, err
	}
	return f, cp, nil
}

// serverFailed reports whether err is a JetStream API error the server
// answered with a 5xx code: its own failure, not a refusal of the request.
func serverFailed(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && ae.Code >= 500
}

// bounded returns ctx bounded by timeout, or ctx itself when timeout is 0.
func bounded(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, timeout)
}

// consumer recreates the durable consumer to deliver from checkpoint+1. The
// store, not the consumer, is the source of truth for progress: recreating
// it avoids waiting AckWait for messages a crashed run fetched but never
// acked, and puts it right after a view restore.
// Each request is bounded by timeout, when not 0.
func (p *Projector) consumer(ctx context.Context, checkpoint uint64, timeout time.Duration) (jetstream.Consumer, error) {
	dctx, cancel := bounded(ctx, timeout)
	err := p.js.DeleteConsumer(dctx, events.StreamEvents, p.cfg.Durable)
	cancel()
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
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
	cctx, cancel := bounded(ctx, timeout)
	defer cancel()
	cons, err := p.js.CreateOrUpdateConsumer(cctx, events.StreamEvents, cc)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", p.cfg.Durable, err)
	}
	return cons, nil
}

// anchor checks that EVENTS is the incarnation the checkpoint counts in
// and returns the checkpoint to resume from: checkpoint itself, or 0 when
// EVENTS is another stream (deleted and created again, restored from an
// older copy: created at another time, or ending below the checkpoint).
// Then the view re-anchors: it reads the new incarnation from its first
// message, and its first batch records it, with the checkpoint counted
// from 0, in the batch's transaction (a crash before it re-anchors again),
// and every event is judged by its writer's high-water mark and holes,
// the same state that drops a duplicate arriving after the JetStream
// dedupe window: an event the view applied from the old stream is a
// duplicate, a new one applies. Resuming at the old checkpoint would skip
// every new event below it. A view without marks (new, or from before
// they were kept) adopts the stream it finds if the stream reaches its
// checkpoint.
func (p *Projector) anchor(ctx context.Context, checkpoint uint64) (uint64, error) {
	s, err := p.js.Stream(ctx, events.StreamEvents)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", events.StreamEvents, err)
	}
	info := s.CachedInfo()
	have := p.marks.Events
	reaches := info.State.LastSeq >= checkpoint
	switch {
	case have.Created.Equal(info.Created) && reaches:
		return checkpoint, nil
	case have.Created.IsZero() && reaches:
		p.marks.Events = StreamMark{Created: info.Created, FirstSeq: info.State.FirstSeq}
		p.marksDirty = true
		return checkpoint, nil
	}
	p.marks.Events = StreamMark{Created: info.Created, FirstSeq: info.State.FirstSeq}
	p.marks.Reanchors++
	p.marksDirty, p.reanchor = true, true
	p.reanchors.Add(1)
	p.checkpoint.Store(0)
	p.log.Warn("EVENTS is not the stream the checkpoint came from; reading it from its first message, each event judged by its writer's marks",
		"checkpoint", checkpoint, "recorded_created", have.Created, "stream_created", info.Created,
		"stream_first_seq", info.State.FirstSeq, "stream_last_seq", info.State.LastSeq)
	return 0, nil
}

// errMissed marks a feed that lost a delivery.
var errMissed = errors.New("delivery missed")

// feed is one incarnation of the projector's durable consumer and what it
// has delivered so far. The projector trusts a feed only while its
// deliveries are contiguous. The server numbers every delivery of a
// consumer (the consumer sequence: 1 for the first, +1 for each delivery
// or redelivery), so a number skipped is a delivery lost between the
// server and the loop (a connection dropped mid-pull, a message nats.go
// discarded as a slow consumer): the server counts it delivered, and the
// AckAll of the next batch would ack it unseen. Stream sequences may skip:
// the server passes over what EVENTS no longer holds (deleted, expired)
// and numbers only what it delivers.
type feed struct {
	cons   jetstream.Consumer
	cc     jetstream.ConsumeContext
	msgs   chan jetstream.Msg
	quit   chan struct{} // closed by close: releases a consume callback blocked on msgs
	broken chan struct{} // closed by fail
	err    error         // what fail was given; read only after broken is closed

	failOnce, closeOnce sync.Once

	// Used by the loop only.
	dseq uint64 // consumer sequence of the last delivery taken
	sseq uint64 // stream sequence of the newest message taken; the checkpoint at first
}

// openFeed recreates the consumer at checkpoint+1 (each request bounded by
// timeout, when not 0) and starts consuming it.
func (p *Projector) openFeed(ctx context.Context, checkpoint uint64, timeout time.Duration) (*feed, error) {
	cons, err := p.consumer(ctx, checkpoint, timeout)
	if err != nil {
		return nil, err
	}
	f := &feed{cons: cons, msgs: make(chan jetstream.Msg, 2*p.cfg.BatchSize),
		quit: make(chan struct{}), broken: make(chan struct{}), sseq: checkpoint}
	f.cc, err = cons.Consume(func(m jetstream.Msg) {
		select {
		case f.msgs <- m:
		case <-f.quit:
		}
	}, jetstream.PullMaxMessages(2*p.cfg.BatchSize),
		jetstream.PullExpiry(pullExpiry), jetstream.PullHeartbeat(pullHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			// A missed heartbeat, a reconnect, a leader change or a deleted
			// consumer: deliveries may have been lost, or have stopped.
			f.fail(err)
		}))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", events.StreamEvents, err)
	}
	return f, nil
}

// fail marks the feed broken by a consume error; the first one is kept.
func (f *feed) fail(err error) {
	f.failOnce.Do(func() {
		f.err = err
		close(f.broken)
	})
}

// close stops consuming and waits until the callback has returned for
// good. It is safe to call more than once.
func (f *feed) close() {
	f.closeOnce.Do(func() {
		close(f.quit)
		f.cc.Stop()
		<-f.cc.Closed()
	})
}

// take checks that m is the feed's next delivery and reports whether it
// is new: a stream sequence above every one taken before (else a
// redelivery, which the AckAll of a later message covers). A delivery
// out of turn is an error wrapping errMissed.
func (f *feed) take(m jetstream.Msg) (*jetstream.MsgMetadata, bool, error) {
	md, err := m.Metadata()
	if err != nil {
		return nil, false, fmt.Errorf("read metadata of %s message: %w", m.Subject(), err)
	}
	if md.Sequence.Consumer != f.dseq+1 {
		return nil, false, fmt.Errorf("%w: delivery %d (stream sequence %d) came after delivery %d",
			errMissed, md.Sequence.Consumer, md.Sequence.Stream, f.dseq)
	}
	f.dseq++
	if md.Sequence.Stream <= f.sseq {
		return md, false, nil
	}
	f.sseq = md.Sequence.Stream
	return md, true, nil
}

// audit asks the server how many messages it has delivered: more than the
// feed received means the last deliveries were lost, and no later one will
// show the gap. It returns why the feed must be replaced, or nil; a failed
// request is left to the next audit, unless the consumer is gone.
func (f *feed) audit(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, gapCheck)
	defer cancel()
	info, err := f.cons.Info(ctx)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return err
	case err != nil:
		return nil
	}
	if info.Delivered.Consumer > f.dseq && len(f.msgs) == 0 {
		return fmt.Errorf("%w: the server made %d deliveries, %d arrived", errMissed, info.Delivered.Consumer, f.dseq)
	}
	return nil
}

// reopen replaces f, which may have lost deliveries, by a consumer at
// checkpoint+1, as Start does, retrying with backoff until ctx ends. It
// waits before recreating a feed that delivered nothing, so an error that
// repeats does not spin.
func (p *Projector) reopen(ctx context.Context, f *feed, checkpoint uint64, cause error, backoff *time.Duration) (*feed, uint64, error) {
	f.close()
	p.resets.Add(1)
	p.health.reset(cause)
	defer p.health.feed(time.Time{}, nil)
	defer p.health.consumerUp()
	var failing time.Time
	timeout := recreateTimeout
	p.log.Warn("recreating the consumer at the checkpoint", "cause", cause, "checkpoint", checkpoint, "durable", p.cfg.Durable)
	if f.dseq > 0 {
		*backoff = 0
	}
	for {
		if *backoff > 0 {
			t := time.NewTimer(*backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, 0, ctx.Err()
			case <-t.C:
			}
		}
		*backoff = min(max(2**backoff, 50*time.Millisecond), maxRecreateBackoff)
		nf, cp, err := p.recreate(ctx, checkpoint, timeout)
		if err == nil {
			return nf, cp, nil
		}
		// A request that timed out may only have been slow (a loaded
		// cluster): give the next attempt a little longer. Not much: a
		// request sent while there is no leader to answer it is lost,
		// and waits its whole timeout even if a leader comes at once.
		timeout = min(timeout+time.Second, maxRecreateTimeout)
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, ErrClosed) {
			return nil, 0, fmt.Errorf("recreate consumer: %w", err)
		}
		if failing.IsZero() {
			failing = time.Now()
		}
		p.health.feed(failing, err)
		p.log.Warn("recreate consumer, retrying", "err", err, "backoff", *backoff)
	}
}

// recreate is one attempt of reopen: it anchors on EVENTS and opens a
// feed at checkpoint+1, each request bounded by timeout.
func (p *Projector) recreate(ctx context.Context, checkpoint uint64, timeout time.Duration) (*feed, uint64, error) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	cp, err := p.anchor(actx, checkpoint)
	cancel()
	if err != nil {
		return nil, 0, err
	}
	f, err := p.openFeed(ctx, cp, timeout)
	if err != nil {
		return nil, 0, err
	}
	return f, cp, nil
}

// delivery is a message taken from a feed with its metadata.
type delivery struct {
	msg jetstream.Msg
	md  *jetstream.MsgMetadata
}

// loop is the projector's goroutine. It applies f's messages in batches
// and replaces f by a new consumer at checkpoint+1 whenever f may have
// lost a delivery (a gap, a lost tail, a consume error), so no stream
// sequence is ever skipped. It stops the feed it holds before returning.
func (p *Projector) loop(ctx context.Context, f *feed, checkpoint uint64) (err error) {
	defer func() { f.close() }()
	defer func() {
		// A clean stop records how far CHANGES got, so the next start
		// compares it with the exact last sequence published.
		if errors.Is(err, context.Canceled) && p.marksDirty {
			p.marks.Changes.LastSeq = max(p.marks.Changes.LastSeq, p.changesSeq.Load())
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if cerr := p.commitMarks(sctx); cerr != nil {
				p.log.Warn("record stream marks at stop", "err", cerr)
			}
		}
	}()
	var published []uint64 // outbox keys published, not yet removed
	// out is the committed batch whose outbox is being published (at
	// most one): the next batch is decided meanwhile, and committed and
	// published only once out has landed, so batches go out in commit
	// order and the outbox holds at most one batch not yet published, as
	// without the overlap. Its context ends with the loop, which waits
	// for it.
	var out *flight
	fctx, fcancel := context.WithCancel(ctx)
	defer func() {
		fcancel()
		if out != nil {
			<-out.done
		}
	}()
	// land waits until out is published and acked, and takes its keys.
	land := func() error {
		if out == nil {
			return nil
		}
		<-out.done
		fl := out
		out = nil
		if fl.err != nil {
			return fl.err
		}
		published = append(published, fl.keys...)
		return nil
	}
	idle := time.NewTimer(idleFlush)
	defer idle.Stop()
	quiet := time.NewTimer(gapCheck) // fires after gapCheck without a delivery
	defer quiet.Stop()
	var backoff time.Duration // before recreating the consumer
	watch := time.NewTicker(min(streamWatch, p.cfg.StallTimeout/4))
	defer watch.Stop()
	p.health.start()
	batch := make([]delivery, 0, p.cfg.BatchSize)
	var broken error // why f must be replaced, once the batch before it is in
	take := func(m jetstream.Msg) error {
		md, fresh, err := f.take(m)
		switch {
		case errors.Is(err, errMissed):
			broken = err
		case err != nil:
			return err
		case fresh:
			batch = append(batch, delivery{m, md})
		}
		return nil
	}
	for {
		batch, broken = batch[:0], nil
		var landed <-chan struct{} // nil (never ready) with nothing in flight
		if out != nil {
			landed = out.done
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-landed:
			if err := land(); err != nil {
				return err
			}
			continue
		case <-f.broken:
			broken = f.err
		case <-idle.C:
			if err := land(); err != nil {
				return err
			}
			if len(published) > 0 {
				if err := p.store.RemoveOutbox(ctx, published); err != nil {
					return err
				}
				published = nil
			}
			continue
		case <-watch.C:
			// A reseed publishes from the view: never beside the outbox.
			if err := land(); err != nil {
				return err
			}
			if err := p.watchStreams(ctx, f); err != nil {
				return err
			}
			continue
		case <-quiet.C:
			quiet.Reset(gapCheck)
			if broken = f.audit(ctx); broken == nil {
				continue
			}
		case m := <-f.msgs:
			if err := take(m); err != nil {
				return err
			}
		}
	fill:
		for broken == nil && len(batch) < p.cfg.BatchSize {
			select {
			case m := <-f.msgs:
				if err := take(m); err != nil {
					return err
				}
			default:
				break fill
			}
		}
		if len(batch) > 0 {
			// Decided while out is published; committed only once it has
			// landed, so the view is never ahead of an unpublished batch
			// but the one in flight (see publish).
			if err := p.decide(ctx, batch, checkpoint); err != nil {
				return err
			}
			if err := land(); err != nil {
				p.ap.finishSpans(err)
				return err
			}
			fl, err := p.commitBatch(ctx, batch, published)
			if err != nil {
				return err
			}
			published = nil // that commit removed them
			checkpoint, out = fl.checkpoint, fl
			go p.send(fctx, fl)
			idle.Reset(idleFlush)
		}
		if broken != nil {
			if err := land(); err != nil {
				return err
			}
			nf, cp, err := p.reopen(ctx, f, checkpoint, broken, &backoff)
			if err != nil {
				return err
			}
			f, checkpoint = nf, cp
		}
		quiet.Reset(gapCheck)
	}
}

// watchStreams is the loop's periodic look at its consumer, its backlog
// (nothing pending is progress, for Ready), and at CHANGES (checkChanges).
// A failed request is left to the next look.
func (p *Projector) watchStreams(ctx context.Context, f *feed) error {
	ictx, cancel := context.WithTimeout(ctx, gapCheck)
	info, err := f.cons.Info(ictx)
	cancel()
	var lost string
	if err == nil {
		p.health.looked(info.NumPending + uint64(info.NumAckPending))
		lost = quorumLost("consumer "+p.cfg.Durable, info.Cluster)
	}
	ictx, cancel = context.WithTimeout(ctx, gapCheck)
	s, serr := p.js.Stream(ictx, events.StreamEvents)
	cancel()
	if serr == nil && lost == "" {
		lost = quorumLost("stream "+events.StreamEvents, s.CachedInfo().Cluster)
	}
	p.health.watched(errors.Join(err, serr), lost)
	// Not under ictx: a reseed takes as long as the view is big.
	return p.checkChanges(ctx)
}

// quorumLost says why the raft group ci describes (a stream's or a
// consumer's, as its leader sees it) has lost its quorum, or "" while it
// has one or is not replicated: fewer than a majority of its peers (the
// leader counted) heard from within peerSilence. A leader cut off from
// its followers goes on answering info requests, and even sends idle
// heartbeats, for many seconds before it steps down; nothing it accepts
// meanwhile can commit.
func quorumLost(what string, ci *jetstream.ClusterInfo) string {
	if ci == nil || len(ci.Replicas) == 0 {
		return ""
	}
	live := 1 // the leader, which answered
	for _, r := range ci.Replicas {
		if !r.Offline && r.Active < peerSilence {
			live++
		}
	}
	peers := len(ci.Replicas) + 1
	if live > peers/2 {
		return ""
	}
	return fmt.Sprintf("%s has no quorum: its leader %s has heard from %d of %d peers within %s", what, ci.Leader, live-1, peers-1, peerSilence)
}

// flight is a committed batch on its way out: send publishes its outbox,
// acks its last message and then counts it in Stats, on a goroutine of
// its own while the loop decides the next batch. done closes
// when send returns; err and keys are read only after.
type flight struct {
	checkpoint uint64
	outbox     []OutboxEntry
	ack        jetstream.Msg // the batch's last message (AckAll)
	last       time.Time     // stream time of the batch's last event
	stats      stepStats
	outcomes   map[outcomeKey]int
	spans      []trace.Span // apply spans, ended once published
	start      time.Time

	done chan struct{}
	err  error
	keys []uint64 // outbox keys published
}

// decide applies one batch of new messages, in stream order, into the
// applier's batch, without committing it.
func (p *Projector) decide(ctx context.Context, batch []delivery, checkpoint uint64) error {
	p.ap.reset(checkpoint)
	p.ap.started = time.Now()
	for _, d := range batch {
		m, md := d.msg, d.md
		if !p.cfg.Partition.whole() && PartitionOfSubject(m.Subject(), p.cfg.Partition.Count) != p.cfg.Partition.Index {
			continue // another partition's: only the checkpoint passes it
		}
		if err := p.ap.add(ctx, rawMsg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data(), Seq: md.Sequence.Stream, Time: md.Timestamp}); err != nil {
			err = fmt.Errorf("apply event at %d: %w", md.Sequence.Stream, err)
			p.ap.finishSpans(err)
			return err
		}
	}
	return nil
}

// commitBatch commits the batch decide made of batch: the view, the
// checkpoint, the marks and the outbox in one transaction, removing the
// published outbox keys. It returns the batch as a flight for send.
func (p *Projector) commitBatch(ctx context.Context, batch []delivery, published []uint64) (_ *flight, err error) {
	defer func() {
		if err != nil {
			p.ap.finishSpans(err)
		}
	}()
	md := batch[len(batch)-1].md
	b := &p.ap.batch
	b.Checkpoint = max(b.Checkpoint, md.Sequence.Stream)
	b.Published = published
	if n := p.ap.stats.created; n > 0 && p.marks.DocsCounted {
		p.marks.Docs += uint64(n)
		p.marksDirty = true
	}
	if m := &p.marks.Changes; !m.Created.IsZero() && p.changesSeq.Load() > m.LastSeq {
		// The last CHANGES sequence published, so a restart after a crash
		// compares with what is at most one batch old.
		m.LastSeq, p.marksDirty = p.changesSeq.Load(), true
	}
	if p.marksDirty {
		marks := p.marks
		b.Streams, b.Reanchor = &marks, p.reanchor
	}
	if err := p.commit(ctx, b); err != nil {
		return nil, err
	}
	p.marksDirty, p.reanchor = false, false
	p.health.progressed()
	return &flight{checkpoint: b.Checkpoint, outbox: b.Outbox, ack: batch[len(batch)-1].msg, last: md.Timestamp,
		stats: p.ap.stats, outcomes: maps.Clone(p.ap.outcomes), spans: p.ap.takeSpans(), start: p.ap.started,
		done: make(chan struct{})}, nil
}

// send publishes fl's outbox, acks its last message and counts the batch,
// then closes fl.done. The loop runs it on a goroutine of its own, one
// flight at a time in commit order, and waits for it before it stops.
func (p *Projector) send(ctx context.Context, fl *flight) {
	defer close(fl.done)
	fl.err = p.publish(ctx, fl.outbox, false)
	for _, s := range fl.spans {
		endApplySpan(s, fl.err)
	}
	if fl.err != nil {
		return
	}
	fl.keys = make([]uint64, len(fl.outbox))
	for i, e := range fl.outbox {
		fl.keys[i] = e.Key
	}
	// AckAll: acking the last message acks the whole batch, and the
	// redeliveries before it. An ack lost in a crash is harmless: the next
	// run restarts from the checkpoint.
	if err := fl.ack.Ack(); err != nil {
		p.log.Debug("ack", "err", err)
	}
	p.recordBatch(ctx, fl, time.Since(fl.start))
	p.applied.Add(uint64(fl.stats.applied))
	p.duplicates.Add(uint64(fl.stats.duplicates))
	p.dead.Add(uint64(fl.stats.dead))
	p.batches.Add(1)
	if !fl.last.IsZero() {
		p.lastTime.Store(fl.last.UnixNano())
	}
	// The checkpoint last: whoever sees it (Stats, a test waiting for it)
	// sees the counters of the batch that reached it, its outbox
	// published.
	p.checkpoint.Store(fl.checkpoint)
}

// commit commits b, fenced by the stored checkpoint when the projector
// applies a partition: a second projector of the partition that
// committed meanwhile makes it fail with ErrCheckpoint, which stops this
// one (its Group then lets the partition go).
func (p *Projector) commit(ctx context.Context, b *Batch) error {
	if p.fenced || !p.cfg.Partition.whole() {
		prev := p.stored
		b.Prev = &prev
	}
	if err := p.store.Commit(ctx, b); err != nil {
		return err
	}
	p.stored = b.Checkpoint
	return nil
}

// flushOutbox publishes and removes everything the outbox holds.
func (p *Projector) flushOutbox(ctx context.Context) error {
	for {
		entries, err := p.store.Outbox(ctx, publishChunk)
		if err != nil || len(entries) == 0 {
			return err
		}
		// An earlier run may have published these already: see publish.
		if err := p.publish(ctx, entries, true); err != nil {
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
// (or a republish after a crash) harmless within the dedupe window. An
// entry the servers refuse for good (see refusedForGood) is dead-lettered
// and counts as published, so one message can never stall the projector;
// Ready reports a publish that keeps failing otherwise.
//
// A retry, and a republish (again: entries an earlier run may have
// published, the outbox it left), leaves out every change that a later
// version of its document supersedes (current): JetStream remembers a
// message id only while the message is held, once it restarts, and CHANGES
// holds one message per document, so the id of a version that was stored
// and then replaced by the next is forgotten by a restarted server. Sent
// again, that version would be stored after the next one, whose own
// republish is dropped as a duplicate: the older state would stay
// CHANGES' last message for the document, for good.
func (p *Projector) publish(ctx context.Context, entries []OutboxEntry, again bool) error {
	backoff := 50 * time.Millisecond
	var failing time.Time // when this run of failures began
	for {
		if again || !failing.IsZero() {
			var err error
			if entries, err = p.current(ctx, entries); err != nil {
				return stopped(ctx, err)
			}
		}
		err := p.publishOnce(ctx, entries)
		if err == nil {
			p.health.publishOK()
			return nil
		}
		if ctx.Err() != nil {
			return stopped(ctx, err)
		}
		if failing.IsZero() {
			failing = time.Now()
		}
		p.health.publishFailed(failing, err)
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

// stopped returns err, which happened while ctx ended (a Close), as an
// error that also wraps ctx's, so that the loop takes it for the stop it
// is rather than for a failure of the projector; err alone when ctx is
// still live.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() == nil || errors.Is(err, ctx.Err()) {
		return err
	}
	return fmt.Errorf("%w: %w", ctx.Err(), err)
}

// current returns entries without the changes of a version below the one
// CHANGES holds for their document (storedVersion): JetStream keeps one
// message per document and, once restarted, remembers the ids of the
// messages it holds only, so such a change sent again would be stored
// after the newer one (see publish). A change at or above the stored
// version goes (again): one that is stored is dropped as a duplicate,
// one that is not was never published, and the entries of a document
// go out in version order (publishChunk). Of the entries of a document at
// one version (its change and the copies a follower re-emit or a change
// of rules queued after it, with a newer audience) only the last goes:
// versions cannot order them, and the earlier one, its id forgotten by a
// restarted NATS, would be stored after the copy that replaced it, its
// old audience last in CHANGES. Where CHANGES cannot be read,
// or holds no change of the document (never published, or CHANGES purged,
// which a reseed repairs from the view), the view decides, as it is never
// behind CHANGES: a change whose version is below its document's version
// in the view is left out (the later change is in the outbox or in
// CHANGES, committed with the view). That keeps CHANGES' last message
// right, but may leave a version that was never published out of the
// live feed. Receipts and dead
// letters are kept, and so is an entry that does not decode as a change
// (publish decides its fate).
func (p *Projector) current(ctx context.Context, entries []OutboxEntry) ([]OutboxEntry, error) {
	type at struct {
		subject string
		version uint64
	}
	out := make([]OutboxEntry, 0, len(entries))
	floor := map[string]uint64{} // by subject: the lowest version that may go
	changes := make([]*events.Change, len(entries))
	last := map[at]int{} // the index of the last entry of a subject at a version
	for i, e := range entries {
		if !strings.HasPrefix(e.Subject, events.ChangesPrefix+".") {
			continue
		}
		if c, err := events.DecodeChange(e.Data); err == nil {
			changes[i] = c
			last[at{e.Subject, c.Version}] = i
		}
	}
	for i, e := range entries {
		c := changes[i]
		if c == nil {
			out = append(out, e)
			continue
		}
		if last[at{e.Subject, c.Version}] != i {
			p.log.Debug("change replaced by a later copy at its version; not published again", "msg_id", e.MsgID, "version", c.Version)
			continue
		}
		v, ok := floor[e.Subject]
		if !ok {
			var serr error
			if v, serr = p.storedVersion(ctx, e.Subject); serr != nil || v == 0 {
				addr := c.Address()
				d, err := p.store.Get(ctx, addr)
				if err != nil {
					return nil, fmt.Errorf("read %s/%s/%s before publishing its change again: %w", addr.Tenant, addr.Collection, addr.Doc, err)
				}
				if serr != nil {
					p.log.Debug("CHANGES unreadable: the view decides what goes again", "subject", e.Subject, "err", serr)
				}
				v = d.Version
			}
			floor[e.Subject] = v
		}
		if c.Version < v {
			p.log.Debug("change superseded; not published again", "msg_id", e.MsgID, "version", c.Version, "floor", v)
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// storedVersion returns the version of the last change CHANGES holds on
// subject, 0 when it holds none. It asks the stream's leader when the
// JetStream gives its connection (a direct get may be answered by a
// replica that lags), else reads it through the stream.
func (p *Projector) storedVersion(ctx context.Context, subject string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, recreateTimeout)
	defer cancel()
	var data []byte
	if js, ok := p.js.(interface {
		Conn() *nats.Conn
		Options() jetstream.JetStreamOptions
	}); ok {
		prefix := js.Options().APIPrefix
		if prefix == "" {
			prefix = jetstream.DefaultAPIPrefix
		}
		req, _ := json.Marshal(map[string]string{"last_by_subj": subject})
		m, err := js.Conn().RequestWithContext(ctx, prefix+"STREAM.MSG.GET."+events.StreamChanges, req)
		if err != nil {
			return 0, fmt.Errorf("last change on %s: %w", subject, err)
		}
		var resp struct {
			Message *struct {
				Data []byte `json:"data"`
			} `json:"message"`
			Error *jetstream.APIError `json:"error"`
		}
		if err := json.Unmarshal(m.Data, &resp); err != nil {
			return 0, fmt.Errorf("last change on %s: %w", subject, err)
		}
		switch {
		case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
			return 0, nil
		case resp.Error != nil:
			return 0, fmt.Errorf("last change on %s: %w", subject, resp.Error)
		case resp.Message == nil:
			return 0, fmt.Errorf("last change on %s: %w", subject, jetstream.ErrInvalidJetStreamResponse)
		}
		data = resp.Message.Data
	} else {
		s, err := p.js.Stream(ctx, events.StreamChanges)
		if err != nil {
			return 0, fmt.Errorf("last change on %s: %w", subject, err)
		}
		m, err := s.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("last change on %s: %w", subject, err)
		}
		data = m.Data
	}
	c, err := events.DecodeChange(data)
	if err != nil {
		// Not one of ours (or unreadable): nothing to order against.
		return 0, nil
	}
	return c.Version, nil
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

// publishChunk publishes chunk in rounds: the first change of each
// document in the chunk, with every receipt and dead letter, then, once
// all of those are acked, the second change of each document, and so on.
// CHANGES keeps one message per document and a retried publish goes
// again whole: were two versions of a document in flight together, the
// first lost and the second stored, the retry would store the first after
// the second, and JetStream would drop the second's retry as a duplicate,
// leaving the older state for good. In rounds, a version is published
// only after every earlier one in the chunk is stored, so whatever is
// retried, the last message of a document is its latest change.
func (p *Projector) publishChunk(ctx context.Context, chunk []OutboxEntry) error {
	var rounds [][]OutboxEntry
	seen := map[string]int{}
	for _, e := range chunk {
		r := 0
		if strings.HasPrefix(e.Subject, events.ChangesPrefix+".") {
			r = seen[e.Subject]
			seen[e.Subject] = r + 1
		}
		if r == len(rounds) {
			rounds = append(rounds, nil)
		}
		rounds[r] = append(rounds[r], e)
	}
	for _, round := range rounds {
		if err := p.publishRound(ctx, round); err != nil {
			return err
		}
	}
	return nil
}

// publishRound publishes entries asynchronously, each in its own span, and
// waits for every ack, for at most Config.PublishTimeout: an ack may never
// come, and the caller publishes the chunk again. Entries refused for
// good (refusedForGood) are dead-lettered once the
// rest of the round is stored.
func (p *Projector) publishRound(ctx context.Context, chunk []OutboxEntry) (err error) {
	deadline := time.NewTimer(p.cfg.PublishTimeout)
	defer deadline.Stop()
	futures := make([]jetstream.PubAckFuture, 0, len(chunk))
	spans := make([]trace.Span, 0, len(chunk))
	defer func() { endPublishSpans(spans, err) }()
	var refused []refusal
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
			if refusedForGood(err) {
				refused = append(refused, refusal{e, err})
				futures = append(futures, nil)
				continue
			}
			return fmt.Errorf("publish %s to %s: %w", e.MsgID, e.Subject, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			if s := spans[i]; s != nil {
				s.SetAttributes(events.AttrStreamSeq.Int64(int64(ack.Sequence)))
			}
			p.published(ack)
		case err := <-f.Err():
			if refusedForGood(err) {
				refused = append(refused, refusal{chunk[i], err})
				continue
			}
			return fmt.Errorf("publish %s to %s: %w", chunk[i].MsgID, chunk[i].Subject, err)
		case <-deadline.C:
			return fmt.Errorf("publish %s to %s: no ack within %s: %w", chunk[i].MsgID, chunk[i].Subject, p.cfg.PublishTimeout, jetstream.ErrAsyncPublishTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, r := range refused {
		if err := p.deadLetterRefused(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// published notes an ack: the highest CHANGES sequence published is how
// a purge of CHANGES is told (see watchStreams).
func (p *Projector) published(ack *jetstream.PubAck) {
	if ack == nil || ack.Stream != events.StreamChanges {
		return
	}
	for {
		old := p.changesSeq.Load()
		if ack.Sequence <= old || p.changesSeq.CompareAndSwap(old, ack.Sequence) {
			return
		}
	}
}

// Stats returns the projector's counters.
func (p *Projector) Stats() Stats {
	s := Stats{
		Checkpoint: p.checkpoint.Load(),
		Applied:    p.applied.Load(),
		Duplicates: p.duplicates.Load(),
		Dead:       p.dead.Load(),
		Batches:    p.batches.Load(),
		Resets:     p.resets.Load(),
		Reanchors:  p.reanchors.Load(),
		Reseeds:    p.reseeds.Load(),

		OverAudience: p.overAudience.Load(),
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
	cancel, started := p.cancel, p.started
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
