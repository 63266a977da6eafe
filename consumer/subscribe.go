package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// Handler handles one change. Returning nil acknowledges it; an error makes
// Subscribe deliver it again later (Watch stops instead). ctx is cancelled
// when the subscription is stopped.
type Handler func(ctx context.Context, ch *events.Change) error

// ChangeFilters returns the CHANGES subjects of a scope: the tenant's
// collections, or the whole tenant when collections is empty.
func ChangeFilters(tenant string, collections []string) []string {
	if len(collections) == 0 {
		return []string{events.TenantChanges(tenant)}
	}
	f := make([]string, 0, len(collections))
	for _, c := range collections {
		f = append(f, events.CollectionChanges(tenant, c))
	}
	slices.Sort(f)
	return slices.Compact(f)
}

// validateScope checks a tenant and collection names.
func validateScope(tenant string, collections []string) []error {
	var errs []error
	if err := events.ValidateName("tenant", tenant, events.DefaultLimits.MaxNameBytes); err != nil {
		errs = append(errs, fmt.Errorf("%w: Tenant: %w", ErrInvalidConfig, err))
	}
	for _, c := range collections {
		if err := events.ValidateName("collection", c, events.DefaultLimits.MaxNameBytes); err != nil {
			errs = append(errs, fmt.Errorf("%w: Collections: %w", ErrInvalidConfig, err))
		}
	}
	return errs
}

func discardIfNil(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// SubscribeConfig configures a durable change subscription. Tenant, Durable
// and Handler are required; every other zero field takes its default.
type SubscribeConfig struct {
	// Tenant whose changes to receive.
	Tenant string
	// Collections to receive; empty means every collection of Tenant.
	Collections []string
	// Durable names the JetStream consumer. A subscription started again
	// with the same name resumes after the last change it acknowledged.
	Durable string
	// Handler is called once per change, one at a time, in stream order.
	Handler Handler
	// Backoff are the redelivery delays after the 1st, 2nd, ... failure of
	// Handler on one change; the last one repeats. Default 100ms, 500ms, 2s, 5s.
	Backoff []time.Duration
	// MaxAckPending is how many changes may be out at once. Default 1, which
	// keeps strict stream order even across retries: a failing change holds
	// back the ones after it. Raise it for throughput when the handler can
	// take a retried change after later ones (compare Change.Version).
	MaxAckPending int
	// AckWait is how long the server waits for an acknowledgement before it
	// redelivers; Handler should return well within it. Default 30s.
	AckWait time.Duration
	// Logger receives handler failures; nil discards.
	Logger *slog.Logger
}

// Default subscription settings.
var defaultBackoff = []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second, 5 * time.Second}

const defaultAckWait = 30 * time.Second

func (c *SubscribeConfig) validate() error {
	errs := validateScope(c.Tenant, c.Collections)
	if c.Durable == "" {
		errs = append(errs, fmt.Errorf("%w: Durable is required", ErrInvalidConfig))
	} else if events.EncodeToken(c.Durable) != c.Durable {
		errs = append(errs, fmt.Errorf("%w: Durable %q: use only letters, digits, '-' and '_'", ErrInvalidConfig, c.Durable))
	}
	if c.Handler == nil {
		errs = append(errs, fmt.Errorf("%w: Handler is required", ErrInvalidConfig))
	}
	if c.MaxAckPending < 0 {
		errs = append(errs, fmt.Errorf("%w: MaxAckPending %d is negative", ErrInvalidConfig, c.MaxAckPending))
	}
	if c.AckWait < 0 {
		errs = append(errs, fmt.Errorf("%w: AckWait %s is negative", ErrInvalidConfig, c.AckWait))
	}
	for _, d := range c.Backoff {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%w: Backoff %s is negative", ErrInvalidConfig, d))
		}
	}
	return errors.Join(errs...)
}

// ConsumerCreator is the part of jetstream.JetStream that Subscribe needs.
type ConsumerCreator interface {
	CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error)
}

// Subscription is a running durable change subscription. Stop or Drain it
// exactly when you want it to end; both are safe to call more than once.
type Subscription struct {
	it     jetstream.MessagesContext
	cancel context.CancelFunc // cancels the handler's ctx
	done   chan struct{}
	err    error // why the loop ended, read after done
	log    *slog.Logger
	stop   sync.Once
	q      quarantineCount
}

// quarantineCount counts the messages a Subscription or Watcher set aside.
type quarantineCount struct {
	mu   sync.Mutex
	n    int
	last error
}

func (q *quarantineCount) add(err error) {
	q.mu.Lock()
	q.n++
	q.last = err
	q.mu.Unlock()
}

func (q *quarantineCount) get() (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n, q.last
}

// checkChange returns why a change decoded from a message on subject
// (with decode's error err) must be set aside, wrapped in ErrQuarantined,
// or nil.
func checkChange(subject string, seq uint64, ch *events.Change, err error) error {
	switch {
	case err != nil:
		err = fmt.Errorf("%w: %w", ErrUnreadable, err)
	case !changeSubjectMatches(subject, ch.Tenant, ch.Collection, ch.Doc):
		err = mismatch(subject, ch.Tenant, ch.Collection, ch.Doc)
	default:
		return nil
	}
	return fmt.Errorf("%w: %s message %d on %s: %w", ErrQuarantined, events.StreamChanges, seq, subject, err)
}

// Subscribe starts a durable, acknowledged consumer of the CHANGES stream
// filtered to cfg's tenant and collections, calling cfg.Handler for each
// change. A change is acknowledged (and waited for: AckSync) only after the
// handler returns nil; on an error it is negatively acknowledged with the
// next Backoff delay and delivered again. A change whose payload cannot be
// decoded, or is not the change of the document its subject names, is
// terminated (Term), logged and counted (Quarantined): retrying cannot fix
// it, and the handler never sees it.
//
// Delivery is at least once: a handler that succeeded just before a crash may
// see its change again. Changes carry full state and a Version, so handlers
// are idempotent by comparing versions. Across a Drain or Stop, a change is
// delivered again only if its handler had not returned nil.
//
// ctx bounds the setup only; the subscription runs until Stop or Drain.
func Subscribe(ctx context.Context, js ConsumerCreator, cfg SubscribeConfig) (*Subscription, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	backoff := cfg.Backoff
	if len(backoff) == 0 {
		backoff = defaultBackoff
	}
	cc := jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		Description:   "ebb change subscription",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       orDefault(cfg.AckWait, defaultAckWait),
		MaxDeliver:    -1,
		MaxAckPending: orDefault(cfg.MaxAckPending, 1),
	}
	// One filter goes in FilterSubject: nats.go then names it in the create
	// request's subject, which is what lets a server confine a user to its
	// tenant (deploy/auth). Several filters cannot be confined that way.
	if filters := ChangeFilters(cfg.Tenant, cfg.Collections); len(filters) == 1 {
		cc.FilterSubject = filters[0]
	} else {
		cc.FilterSubjects = filters
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamChanges, cc)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: create consumer: %w", cfg.Durable, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(max(cc.MaxAckPending, 64)))
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: read: %w", cfg.Durable, err)
	}
	hctx, cancel := context.WithCancel(context.Background())
	s := &Subscription{
		it:     it,
		cancel: cancel,
		done:   make(chan struct{}),
		log:    discardIfNil(cfg.Logger).With(logComponent, "consumer.subscription", logDurable, cfg.Durable),
	}
	go s.loop(hctx, cfg.Handler, backoff)
	return s, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

func (s *Subscription) loop(ctx context.Context, h Handler, backoff []time.Duration) {
	defer close(s.done)
	for {
		m, err := s.it.Next()
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				s.err = fmt.Errorf("subscription read: %w", err)
			}
			return
		}
		s.handle(ctx, m, h, backoff)
	}
}

// handle decides, in this one place, whether m is acked, nacked or
// terminated.
func (s *Subscription) handle(ctx context.Context, m jetstream.Msg, h Handler, backoff []time.Duration) {
	ch, err := events.DecodeChange(m.Data())
	var seq uint64
	if md, mdErr := m.Metadata(); mdErr == nil {
		seq = md.Sequence.Stream
	}
	if qerr := checkChange(m.Subject(), seq, ch, err); qerr != nil {
		// Retrying cannot make it readable or its subject's.
		s.log.Error("change quarantined (terminated)", logReason, qerr)
		s.q.add(qerr)
		_ = m.Term()
		return
	}
	if err := h(ctx, ch); err != nil {
		n := uint64(1)
		if md, mdErr := m.Metadata(); mdErr == nil {
			n = md.NumDelivered
		}
		d := backoff[min(int(n)-1, len(backoff)-1)]
		s.log.Warn("handler failed, redelivering", logDoc, ch.Doc, "version", ch.Version, logErr, err, logBackoff, d)
		_ = m.NakWithDelay(d)
		return
	}
	if err := m.DoubleAck(ctx); err != nil {
		// The server will redeliver after AckWait: at least once.
		s.log.Warn("ack failed", logDoc, ch.Doc, "version", ch.Version, logErr, err)
	}
}

// Stop ends the subscription now: no more changes are read, the running
// handler's ctx is cancelled, and Stop waits for the handler to return.
func (s *Subscription) Stop() {
	s.stop.Do(func() {
		s.it.Stop()
		s.cancel()
	})
	<-s.done
}

// Drain ends the subscription gracefully: it stops fetching, lets the
// handler finish the changes already delivered (and acknowledges them), and
// waits until that is done or ctx ends, in which case it stops hard and
// returns ctx's error.
func (s *Subscription) Drain(ctx context.Context) error {
	s.stop.Do(s.it.Drain)
	select {
	case <-s.done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.it.Stop()
		s.cancel()
		<-s.done
		return fmt.Errorf("drain subscription: %w", ctx.Err())
	}
}

// Done is closed once the subscription has ended.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Quarantined returns how many changes the subscription set aside without
// calling its handler (undecodable, or not the change of the document
// their subject names: terminated, never redelivered), and why the last
// one was (wrapping ErrQuarantined).
func (s *Subscription) Quarantined() (int, error) { return s.q.get() }

// Err returns why the subscription ended on its own (nil after Stop or
// Drain); valid once Done is closed.
func (s *Subscription) Err() error {
	<-s.done
	return s.err
}

// WatchConfig configures a read-only, ephemeral change watcher. Tenant and
// Handler are required.
type WatchConfig struct {
	// Tenant whose changes to watch.
	Tenant string
	// Collections to watch; empty means every collection of Tenant.
	Collections []string
	// From is the CHANGES sequence to start at. 0 starts at the beginning:
	// since CHANGES keeps the last change of every document, the handler
	// first sees the current state of every document in scope, then every
	// change as it happens.
	From uint64
	// Handler is called for each change in stream order. An error ends the
	// watcher (there is no redelivery on an ephemeral consumer); Err returns it.
	Handler Handler
	// Logger; nil discards.
	Logger *slog.Logger
}

// Watcher is a running read-only watcher; see Watch.
type Watcher struct {
	cancel   context.CancelFunc
	done     chan struct{}
	err      error
	mu       sync.Mutex
	progress Progress
	q        quarantineCount
}

// watched is a change decoded on the watcher's reader goroutine.
type watched struct {
	ch  *events.Change
	err error
}

// StreamReader is the part of jetstream.JetStream that the followers need.
type StreamReader interface {
	OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error)
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// Watch follows CHANGES in scope with an ordered, ephemeral consumer: nothing
// is stored on the server, nothing is acknowledged, and the watcher resumes
// by itself (without gaps or repeats) after disconnects and server restarts.
// It runs until Stop, ctx's end, or a handler error.
func Watch(ctx context.Context, js StreamReader, cfg WatchConfig) (*Watcher, error) {
	errs := validateScope(cfg.Tenant, cfg.Collections)
	if cfg.Handler == nil {
		errs = append(errs, fmt.Errorf("%w: Handler is required", ErrInvalidConfig))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &Watcher{cancel: cancel, done: make(chan struct{})}
	f := &follower[watched]{
		js:      js,
		stream:  events.StreamChanges,
		filters: ChangeFilters(cfg.Tenant, cfg.Collections),
		batch:   256,
		log:     discardIfNil(cfg.Logger).With(logComponent, "consumer.watch"),
	}
	next := cfg.From
	f.start = func(context.Context) (uint64, error) { return next, nil }
	f.prepare = func(m jetstream.Msg, v *watched, _ *arena) {
		v.ch, v.err = events.DecodeChange(m.Data())
		_, seq, _, _ := msgSeq(m) // 0 if unparsable: it only names the message
		v.err = checkChange(m.Subject(), seq, v.ch, v.err)
	}
	f.apply = func(ctx context.Context, ds []delivery[watched]) error {
		for _, d := range ds {
			if ch := d.v.ch; d.v.err != nil {
				f.log.Error("change quarantined (skipped)", logReason, d.v.err)
				w.q.add(d.v.err)
			} else if err := cfg.Handler(ctx, ch); err != nil {
				return fmt.Errorf("watch: handler on %s/%s v%d: %w", ch.Collection, ch.Doc, ch.Version, err)
			}
			next = d.seq + 1
			w.mu.Lock()
			w.progress = Progress{Seq: d.seq, Applied: w.progress.Applied + 1, Pending: d.pending}
			w.mu.Unlock()
		}
		return nil
	}
	go func() {
		defer close(w.done)
		if err := f.run(ctx); !errors.Is(err, context.Canceled) {
			w.err = err
		}
	}()
	return w, nil
}

// Quarantined returns how many changes the watcher skipped without calling
// its handler (undecodable, or not the change of the document their
// subject names), and why the last one was (wrapping ErrQuarantined).
func (w *Watcher) Quarantined() (int, error) { return w.q.get() }

// Progress reports how far the watcher has read.
func (w *Watcher) Progress() Progress {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.progress
}

// Stop ends the watcher and waits for its handler to return. Safe to call
// more than once.
func (w *Watcher) Stop() {
	w.cancel()
	<-w.done
}

// Done is closed once the watcher has ended.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Err returns why the watcher ended (nil after Stop); valid once Done is closed.
func (w *Watcher) Err() error {
	<-w.done
	return w.err
}
