package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
)

// openTimeout bounds how long Open waits for the file lock of a log another
// process (or a crashed one the kernel has not yet cleaned up) holds.
const openTimeout = 10 * time.Second

// State is where an entry stands on its way to the server.
type State string

// The entry states. An entry moves pending -> published -> settled, or
// pending -> failed (-> settled if a receipt still arrives). It never goes
// back, and it is never removed.
const (
	// StatePending: durable locally, not yet acknowledged by JetStream.
	StatePending State = "pending"
	// StatePublished: JetStream acknowledged it (StreamSeq is known); no
	// receipt yet.
	StatePublished State = "published"
	// StateFailed: the server refused it for good (permission denied, too
	// large, ...); Err says why. It will not be retried.
	StateFailed State = "failed"
	// StateSettled: a receipt arrived; Outcome and Reason say what became of it.
	StateSettled State = "settled"
)

// Entry is one event in the log and where it stands.
type Entry struct {
	Event       *events.Event
	State       State
	StreamSeq   uint64         // sequence in EVENTS, once published (or from the receipt)
	Err         string         // StateFailed: the server's reason
	Outcome     events.Outcome // StateSettled: the receipt's outcome
	Reason      string         // StateSettled: the receipt's reason
	Conflict    string         // StateSettled: the conflict record the receipt names
	Version     uint64         // StateSettled: the document version after the event
	AppendedAt  time.Time
	PublishedAt time.Time // zero until published
	SettledAt   time.Time // zero until settled
	// Duplicate: JetStream answered the publish that acknowledged the
	// entry as a duplicate (its Nats-Msg-Id was inside EVENTS' dedupe
	// window): an earlier publish of the event reached EVENTS, one whose
	// ack the log never recorded (a detach, a crash, an ack timeout), and
	// StreamSeq is that publish's sequence. No projector saw this publish,
	// so the event's receipt, if any, answers the earlier one.
	Duplicate bool
}

// Write is what an app asks to change: one document, one operation. The Log
// fills in everything else of the event.
type Write struct {
	Collection  string
	Doc         string
	Op          events.Op
	Fields      events.Fields
	BaseVersion uint64
	Resolves    string
	After       string // events.Event.After: the pending event this one builds on
}

// LogConfig configures a Log. Only Tenant is required.
type LogConfig struct {
	// Tenant the client writes to. Required; fixed for the life of the log.
	Tenant string
	// Client is the client id. Empty: on first open a ULID is generated and
	// persisted, and later opens reuse it. Reopening a log with a different
	// non-empty Client is an error wrapping ErrLogMismatch.
	Client string
	// Limits bound the events Append accepts (zero fields: events.DefaultLimits).
	Limits events.Limits
	// MaxDrift is how far ahead of the local clock a timestamp given to
	// Clock().Update may be before Update reports events.ErrClockDrift (the
	// clock advances past it either way); zero means events.DefaultMaxDrift,
	// negative disables the report.
	MaxDrift time.Duration
	// Now is the physical clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the log's lines; nil discards them.
	Logger *slog.Logger
	// TracerProvider traces appends (span ebb.producer.append, a child of
	// the span in Append's ctx); nil means no tracing. The append span's
	// context is stored with each entry, so its publish joins the trace
	// even after a restart.
	TracerProvider trace.TracerProvider
	// MeterProvider receives ebb.producer.events.appended and the gauges
	// ebb.producer.pending and ebb.producer.oldest_pending.age; nil means
	// no metrics.
	MeterProvider metric.MeterProvider
	// Cipher, if set, encrypts the log at rest: every event, entry state
	// and outbound record is sealed with AES-256-GCM, bound to its bucket
	// and key (see doc.go, "Encryption at rest", for what stays in the
	// clear). nil keeps the log in plaintext. A log is encrypted or not for
	// life: opening it with another key, without its key, or a plaintext
	// log with a key fails with an error wrapping keys.ErrWrongKey.
	Cipher *keys.Cipher
	// Init, if set, runs inside the transaction that opens the log, once
	// the log has read its own state (its identity, counts and indexes),
	// so a package keeping buckets of its own in the log's file (see
	// Tx.Bucket) sets them up without a commit (and its fsyncs) of its
	// own. An error fails the open and rolls back the transaction.
	Init func(tx *Tx) error
}

func (c LogConfig) validate() error {
	var errs []error
	if err := events.ValidateName("tenant", c.Tenant, events.DefaultLimits.MaxNameBytes); err != nil {
		errs = append(errs, fmt.Errorf("%w: Tenant: %w", ErrInvalidConfig, err))
	}
	if c.Client != "" {
		if err := events.ValidateName("client", c.Client, events.DefaultLimits.MaxNameBytes); err != nil {
			errs = append(errs, fmt.Errorf("%w: Client: %w", ErrInvalidConfig, err))
		}
	}
	return errors.Join(errs...)
}

// Log is the client's durable outbox: every event an app writes is committed
// and fsynced here before Append returns, and stays here, with its state,
// after it is published and settled. It is safe for concurrent use.
type Log struct {
	db     *bbolt.DB
	ownsDB bool
	seal   *keys.Cipher // nil: plaintext
	// indexMAC keys the unsettled index of an encrypted log (index.go);
	// nil in a plaintext one. Set once in openDB.
	indexMAC []byte
	tenant   string
	client   string
	limits   events.Limits
	now      func() time.Time
	clock    *events.Clock
	ids      *events.IDSource
	logger   *slog.Logger
	prop     propagation.TextMapPropagator
	tracer   trace.Tracer
	metrics  logMetrics
	// unregister removes the gauges' callback once, on Close.
	unregister sync.Once
	closeMu    sync.RWMutex // held shared by every operation, exclusively by Close
	closed     bool

	appendMu   sync.Mutex // serialises appends: seq, ids and commit order agree
	groupMu    sync.Mutex // guards queue and committing (group.go)
	queue      []*appendReq
	committing bool          // a leader is committing or about to
	enqueued   signal        // a request was queued
	lastCommit time.Duration // how long the last group's commit took
	expect     int           // requests in flight when the last commit ended
	commits    atomic.Int64  // write transactions committed (Stats)
	requests   atomic.Int64  // requests committed through the group (Stats)
	seq        uint64        // last committed local sequence (under appendMu)
	device     string        // the current device (under appendMu); "" in a legacy log
	deviceBase uint64        // local sequence at which device started (under appendMu)

	countMu    sync.Mutex
	pendingN   int
	failedN    int
	unsettledN int // entries without a receipt, as of the last commit
	// settledPending counts entries a receipt settled while still
	// pending: published (their receipt proves it) though no ack marked
	// them, so their late ack is not counted again (Status.Published).
	settledPending atomic.Uint64

	appended signal // an append committed
	progress signal // an entry left pending (published, failed or settled)
	done     chan struct{}
}

// Open opens (creating if needed) the log in its own bbolt file at path,
// mode 0600. Close closes the file.
func Open(path string, cfg LogConfig) (*Log, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: openTimeout})
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	l, err := openDB(db, cfg)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	l.ownsDB = true
	return l, nil
}

// openDB opens the log inside db, which other packages' buckets may share
// (through View and Update). The log's buckets are named "producer.*". db
// must not have NoSync set (ErrNotDurable). Close closes db only if
// ownsDB is set.
func openDB(db *bbolt.DB, cfg LogConfig) (*Log, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	if db.NoSync {
		return nil, fmt.Errorf("open log %s: %w", db.Path(), ErrNotDurable)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	maxDrift := cfg.MaxDrift
	if maxDrift == 0 {
		maxDrift = events.DefaultMaxDrift
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{
		db:     db,
		seal:   cfg.Cipher,
		tenant: cfg.Tenant,
		limits: cfg.Limits,
		now:    now,
		clock:  events.NewClock(now, maxDrift),
		ids:    events.NewIDSource(now),
		prop:   propagation.TraceContext{},
		tracer: tracerOf(cfg.TracerProvider),
		logger: logger,
		done:   make(chan struct{}),
	}
	err := db.Update(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		check, err := keys.CheckStore(cfg.Cipher, meta.Get(metaKeyCheck), meta.Get(metaTenant) != nil)
		if err != nil {
			return err
		}
		if check != nil {
			if err := meta.Put(metaKeyCheck, check); err != nil {
				return err
			}
		}
		if err := l.loadIndexKey(tx); err != nil {
			return err
		}
		if err := l.ensureIndex(tx); err != nil {
			return err
		}
		if t := meta.Get(metaTenant); t != nil && string(t) != cfg.Tenant {
			return fmt.Errorf("%w: log has tenant %q, config %q", ErrLogMismatch, t, cfg.Tenant)
		}
		client := string(meta.Get(metaClient))
		switch {
		case client == "" && cfg.Client == "":
			client = l.ids.New().String()
		case client == "":
			client = cfg.Client
		case cfg.Client != "" && cfg.Client != client:
			return fmt.Errorf("%w: log has client %q, config %q", ErrLogMismatch, client, cfg.Client)
		}
		l.client = client
		// A new log mints its device; a log made before devices existed
		// keeps writing as its legacy (empty) device, whose sequences the
		// server already knows.
		l.device = string(meta.Get(metaDevice))
		if l.device == "" && meta.Get(metaTenant) == nil {
			l.device = l.ids.New().String()
			if err := meta.Put(metaDevice, []byte(l.device)); err != nil {
				return err
			}
		}
		if v := meta.Get(metaDeviceBase); len(v) == 8 {
			l.deviceBase = keySeqOf(v)
		}
		if err := meta.Put(metaTenant, []byte(cfg.Tenant)); err != nil {
			return err
		}
		if err := meta.Put(metaClient, []byte(client)); err != nil {
			return err
		}
		if v := meta.Get(metaSeq); len(v) == 8 {
			l.seq = keySeqOf(v)
		}
		if v := meta.Get(metaLastID); len(v) == 16 {
			var id ulid.ULID
			copy(id[:], v)
			l.ids.Restore(id)
		}
		l.clock.Observe(decodeHLC(meta.Get(metaHLC)))
		l.pendingN = tx.Bucket(bucketPending).Stats().KeyN
		var awaiting []uint64
		c := tx.Bucket(bucketUnsettled).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			st, err := l.getState(tx, keySeqOf(k))
			if err != nil {
				return err
			}
			l.unsettledN++
			if st.State == StateFailed {
				l.failedN++
			} else {
				awaiting = append(awaiting, keySeqOf(k))
			}
		}
		if err := meta.Put(metaUnsettled, seqKey(uint64(l.unsettledN))); err != nil {
			return err
		}
		if err := ensureAwaiting(tx, awaiting); err != nil {
			return err
		}
		if cfg.Init != nil {
			return cfg.Init(&Tx{l: l, tx: tx})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", db.Path(), err)
	}
	l.logger = logger.With(keyComponent, "producer.log", keyTenant, l.tenant, keyClient, l.client, keyDevice, l.device)
	if l.metrics, err = newLogMetrics(l, cfg.MeterProvider); err != nil {
		return nil, fmt.Errorf("open log %s: metrics: %w", db.Path(), err)
	}
	return l, nil
}

// Clock returns the log's hybrid logical clock. Append stamps events with it;
// feed it every HLC seen from elsewhere with Clock().Update so the client's
// next write is after everything it has seen.
func (l *Log) Clock() *events.Clock { return l.clock }

// Tenant returns the tenant the log writes to.
func (l *Log) Tenant() string { return l.tenant }

// Client returns the client id, generated on first open if none was configured.
func (l *Log) Client() string { return l.client }

// LastSeq returns the local sequence of the last event appended (0 if
// none): the log's own numbering across every device it has had. An
// event's Seq is its sequence within its device.
func (l *Log) LastSeq() uint64 {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	return l.seq
}

// Close closes the log (and its file, if Open opened it). It waits for
// running calls to finish and is safe to call twice. Close the Publisher
// first.
func (l *Log) Close() error {
	// Unregister first, outside closeMu: a collection running the gauges'
	// callback may be waiting for closeMu.
	l.unregister.Do(func() {
		if l.metrics.reg != nil {
			_ = l.metrics.reg.Unregister()
		}
	})
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	close(l.done)
	if l.ownsDB {
		if err := l.db.Close(); err != nil {
			return fmt.Errorf("close log %s: %w", l.db.Path(), err)
		}
	}
	return nil
}

// use marks a call in progress; it fails with ErrClosed after Close.
func (l *Log) use() (release func(), err error) {
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		return nil, ErrClosed
	}
	return l.closeMu.RUnlock, nil
}

// Append turns w into an event (id, tenant, client, sequence, HLC and
// schema assigned here), validates it against the configured limits, and
// stores it durably: when Append returns nil the event is committed and
// fsynced and will reach the server once a Publisher runs. The trace context
// in ctx travels with the event. An invalid write stores nothing and returns
// an error wrapping events.ErrInvalid.
func (l *Log) Append(ctx context.Context, w Write) (*events.Event, error) {
	evs, err := l.AppendBatch(ctx, []Write{w})
	if err != nil {
		return nil, err
	}
	return evs[0], nil
}

// AppendBatch appends ws in order in one transaction with one fsync: either
// all are stored or none is (any invalid write fails the whole batch, and the
// error names its index). The batch is one span, ebb.producer.append.
// Concurrent calls share a transaction (see AppendWith).
func (l *Log) AppendBatch(ctx context.Context, ws []Write) ([]*events.Event, error) {
	return l.AppendWith(ctx, ws, nil)
}

// newEvent makes the event of w at local sequence local, under appendMu:
// its id, HLC, device and device sequence, validated and encoded.
func (l *Log) newEvent(w Write, local uint64) (*events.Event, []byte, error) {
	return l.newEventAt(w, local, l.clock.Now())
}

// newEventAt is newEvent stamped with hlc.
func (l *Log) newEventAt(w Write, local uint64, hlc events.HLC) (*events.Event, []byte, error) {
	e := &events.Event{
		Schema:      events.SchemaVersion,
		ID:          l.ids.New().String(),
		Tenant:      l.tenant,
		Collection:  w.Collection,
		Doc:         w.Doc,
		Op:          w.Op,
		Fields:      w.Fields,
		BaseVersion: w.BaseVersion,
		HLC:         hlc,
		Client:      l.client,
		Device:      l.device,
		Seq:         local - l.deviceBase,
		Resolves:    w.Resolves,
		After:       w.After,
	}
	if err := e.Validate(l.limits); err != nil {
		return nil, nil, err
	}
	b, err := events.EncodeEvent(e)
	if err != nil {
		return nil, nil, err
	}
	return e, b, nil
}

// storeNew stores evs, pending, at local sequences first, first+1, ...
// inside tx, and advances the log's stored sequence, id and clock. The
// caller holds appendMu and updates l.seq and the counts once tx commits.
func (l *Log) storeNew(tx *bbolt.Tx, first uint64, evs []*events.Event, encoded [][]byte, tc map[string]string, now time.Time) error {
	evb, stb, pnb, idb := tx.Bucket(bucketEvents), tx.Bucket(bucketState), tx.Bucket(bucketPending), tx.Bucket(bucketIDs)
	st, err := jsonMarshal(stateRecord{State: StatePending, AppendedAt: now})
	if err != nil {
		return err
	}
	for i, e := range evs {
		k := seqKey(first + uint64(i))
		ob, err := jsonMarshal(outbound{ID: e.ID, Subject: e.Subject(), Trace: tc})
		if err != nil {
			return err
		}
		for _, p := range [...]struct {
			b    *bbolt.Bucket
			k, v []byte
		}{{evb, k, l.seal.SealValue(bucketEvents, k, encoded[i])}, {stb, k, l.seal.SealValue(bucketState, k, st)},
			{pnb, k, l.seal.SealValue(bucketPending, k, ob)}, {idb, []byte(e.ID), k}} {
			if err := p.b.Put(p.k, p.v); err != nil {
				return fmt.Errorf("store event %s: %w", e.ID, err)
			}
		}
		if err := l.indexAdd(tx, k, e.Collection, e.Doc); err != nil {
			return fmt.Errorf("store event %s: index: %w", e.ID, err)
		}
	}
	if err := addUnsettled(tx, int64(len(evs))); err != nil {
		return fmt.Errorf("store events: %w", err)
	}
	last := evs[len(evs)-1]
	id, err := ulid.ParseStrict(last.ID)
	if err != nil {
		return fmt.Errorf("store event %s: %w", last.ID, err)
	}
	meta := tx.Bucket(bucketMeta)
	if err := meta.Put(metaSeq, seqKey(first+uint64(len(evs))-1)); err != nil {
		return err
	}
	if err := meta.Put(metaLastID, id[:]); err != nil {
		return err
	}
	// A reissued event keeps its original, older HLC: the stored clock
	// never goes back.
	if last.HLC.Compare(decodeHLC(meta.Get(metaHLC))) <= 0 {
		return nil
	}
	return meta.Put(metaHLC, encodeHLC(last.HLC))
}

// Entries returns the entries in the given states (all entries if none), in
// log (client sequence) order.
func (l *Log) Entries(ctx context.Context, states ...State) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	release, err := l.use()
	if err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	defer release()
	var out []Entry
	err = l.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			e, err := l.readEntry(tx, keySeqOf(k))
			if err != nil {
				return err
			}
			if len(states) == 0 || slices.Contains(states, e.State) {
				out = append(out, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	return out, nil
}

// settle is Tx.Settle inside tx.
func (l *Log) settle(tx *bbolt.Tx, r *events.Receipt) error {
	if r == nil {
		return nil
	}
	ids := tx.Bucket(bucketIDs)
	if ids == nil {
		return fmt.Errorf("settle event %s: bucket %s missing: not the log's database", r.Event, bucketIDs)
	}
	k := ids.Get([]byte(r.Event))
	if k == nil {
		return nil
	}
	seq := keySeqOf(k)
	st, err := l.getState(tx, seq)
	if err != nil {
		return fmt.Errorf("settle event %s: %w", r.Event, err)
	}
	if st.State == StateSettled {
		return nil
	}
	was := st.State
	st.State = StateSettled
	st.Outcome, st.Reason, st.Conflict, st.Version = r.Outcome, r.Reason, r.Conflict, r.Version
	if st.StreamSeq == 0 {
		st.StreamSeq = r.Stream
	}
	st.SettledAt = l.now()
	if err := l.putState(tx, seq, st); err != nil {
		return fmt.Errorf("settle event %s: %w", r.Event, err)
	}
	if err := tx.Bucket(bucketPending).Delete(k); err != nil {
		return fmt.Errorf("settle event %s: %w", r.Event, err)
	}
	if err := l.indexRemove(tx, k); err != nil {
		return fmt.Errorf("settle event %s: %w", r.Event, err)
	}
	if err := addUnsettled(tx, -1); err != nil {
		return fmt.Errorf("settle event %s: %w", r.Event, err)
	}
	tx.OnCommit(func() {
		l.countMu.Lock()
		l.unsettledN--
		switch was {
		case StatePending:
			l.pendingN--
		case StateFailed:
			l.failedN--
		}
		l.countMu.Unlock()
		if was == StatePending {
			// bbolt runs OnCommit once the commit is visible, so a Flush
			// may return a moment before this count (Sync reads it again
			// at its end).
			l.settledPending.Add(1)
		}
		l.progress.notify()
	})
	return nil
}

// counts returns the number of pending and failed entries.
func (l *Log) counts() (pending, failed int) {
	l.countMu.Lock()
	defer l.countMu.Unlock()
	return l.pendingN, l.failedN
}

// pendingThrough reports whether any entry with sequence <= seq is pending,
// and when the oldest pending entry was appended.
func (l *Log) oldestPending() (seq uint64, appended time.Time, err error) {
	release, err := l.use()
	if err != nil {
		return 0, time.Time{}, err
	}
	defer release()
	err = l.db.View(func(tx *bbolt.Tx) error {
		k, _ := tx.Bucket(bucketPending).Cursor().First()
		if k == nil {
			return nil
		}
		seq = keySeqOf(k)
		st, err := l.getState(tx, seq)
		if err != nil {
			return err
		}
		appended = st.AppendedAt
		return nil
	})
	return seq, appended, err
}

// signal is a broadcast: wait returns a channel closed by the next notify.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}
