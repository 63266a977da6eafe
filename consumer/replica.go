package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
	"github.com/ebbsync/ebb/projection"
)

// DBFile is the name of the local store inside ReplicaConfig.Dir: one bbolt
// file holding the producer's log and the consumer's view.
const DBFile = "ebb.db"

// DefaultCatchUpBatch is how many changes the CHANGES follower pulls at a
// time, and how many one view transaction waits for while catching up.
const DefaultCatchUpBatch = 1000

// catchUpGrow bounds a view transaction at this many times CatchUpBatch:
// while one commits, the follower keeps reading, so a store slower than the
// stream commits fewer, larger batches (fewer fsyncs) instead of holding
// the reader up. Memory stays bounded: two batches of at most that size.
const catchUpGrow = 4

// storeMmap and storeGrowth size the local store's memory map and file
// growth. bbolt maps a new file 32 KiB at a time and, until the map passes
// its growth step, grows the file to each new map size, each time with a
// truncate, an fsync and a remap that waits for every read transaction to
// end: catching up 100,000 documents into a fresh file did ten. Mapping 64
// MiB of address space up front (the file is not that large: the map may run
// past its end) removes the remaps below that size, and growing the file by
// 4 MiB steps (bbolt's default is 16 MiB) bounds the unused (sparse) tail of
// a small replica's file.
const (
	storeMmap   = 64 << 20
	storeGrowth = 4 << 20
)

// catchUpGather is how long the CHANGES follower waits at most for a full
// batch while the stream holds more changes than it has read (see
// follower.gather): the wait is normally the few milliseconds a batch takes
// to arrive; the bound covers a pending count that overstated what came.
const catchUpGather = 50 * time.Millisecond

// ReplicaConfig configures a Replica. Dir and Tenant are required.
type ReplicaConfig struct {
	// Dir holds the local store (DBFile). Created if missing.
	Dir string
	// Tenant the replica reads and writes.
	Tenant string
	// Client is this replica's client id; empty: generated on first open and
	// kept in the store.
	Client string
	// Conn, if set, attaches the replica at open (see Replica.Attach); nil
	// opens it offline.
	Conn *nats.Conn
	// Policies decide how the replica's own pending writes apply on top of
	// the synced state; use the same policies as the server's projector so
	// the local view predicts the server's decision.
	Policies projection.Policies
	// Collections is the replica's scope; empty means every collection of
	// Tenant. Changing it on reopen forces a full resync.
	Collections []string
	// Logger; nil discards.
	Logger *slog.Logger
	// CatchUpBatch is how many changes the CHANGES follower pulls at a time
	// and, while catching up, gathers for one view transaction; a
	// transaction takes up to four times as many when they arrived while
	// the last one committed. Default DefaultCatchUpBatch.
	CatchUpBatch int
	// Publisher tunes the producer's publisher; its zero value works.
	Publisher producer.PublisherConfig
	// TracerProvider traces the replica's writes (the producer's append and
	// publish spans) and its apply of each change (ebb.replica.apply, a
	// child of the change's trace context); nil means no tracing.
	TracerProvider trace.TracerProvider
	// MeterProvider receives the producer's metrics and the catch-up gauges
	// ebb.replica.changes.applied, .pending and .sequence; nil means none.
	MeterProvider metric.MeterProvider
	// GapCheckInterval is how often an attached replica with writes
	// awaiting their receipt checks RECEIPTS for receipts it can no longer
	// get (see doc.go, "Resets and lost receipts"); Sync checks at once.
	// Default DefaultGapCheckInterval.
	GapCheckInterval time.Duration
	// Cipher, if set, encrypts the local store at rest (the producer's log
	// and the view: documents, awaiting receipts, rejections) with
	// AES-256-GCM; see doc.go, "Encryption at rest". nil keeps it in
	// plaintext. Opening an encrypted store without its key or with
	// another, or a plaintext one with a key, fails with an error wrapping
	// keys.ErrWrongKey that names the file.
	Cipher *keys.Cipher
	// RulesFeed, if set, is the request subject of the server's filtered
	// change feed (sync rules; DefaultRulesFeed), which the replica reads
	// CHANGES through instead of following the stream. Empty: it follows
	// CHANGES, and switches to DefaultRulesFeed by itself when the server
	// refuses it a direct read with "sync rules" (see rules.go).
	RulesFeed string
}

func (c *ReplicaConfig) validate() error {
	errs := validateScope(c.Tenant, c.Collections)
	if c.Dir == "" {
		errs = append(errs, fmt.Errorf("%w: Dir is required", ErrInvalidConfig))
	}
	if c.Client != "" {
		if err := events.ValidateName("client", c.Client, events.DefaultLimits.MaxNameBytes); err != nil {
			errs = append(errs, fmt.Errorf("%w: Client: %w", ErrInvalidConfig, err))
		}
	}
	if c.CatchUpBatch < 0 {
		errs = append(errs, fmt.Errorf("%w: CatchUpBatch %d is negative", ErrInvalidConfig, c.CatchUpBatch))
	}
	if c.GapCheckInterval < 0 {
		errs = append(errs, fmt.Errorf("%w: GapCheckInterval %s is negative", ErrInvalidConfig, c.GapCheckInterval))
	}
	return errors.Join(errs...)
}

// Replica is an app's offline-first local copy of its tenant (or of some
// collections of it). Reads never touch the network; writes are durable in
// the local log before they return; while attached to a connection the
// replica publishes pending writes, follows CHANGES and its own RECEIPTS. It
// is safe for concurrent use.
type Replica struct {
	cfg      ReplicaConfig
	seal     *keys.Cipher // nil: plaintext
	log      *producer.Log
	logger   *slog.Logger
	tenant   string
	client   string
	filters  []string
	scope    map[string]bool // nil: every collection
	batch    int
	changed  signal // broadcast after every view commit
	watchers watchers
	tel      *replicaTelemetry

	// attachMu serialises Attach and Detach (taken before mu, never by the
	// link's goroutines).
	attachMu   sync.Mutex
	mu         sync.Mutex
	link       *link
	closed     bool
	changesP   Progress
	receiptsP  Progress
	resyncs    int
	lastResync error
	lastErr    error
	pulled     int // changes applied since open
	rejected   int // rejections recorded since open
	// quarantined counts messages quarantined since open; lastQuarantine
	// is the last one's error.
	quarantined    int
	lastQuarantine error
	// following is the RECEIPTS follower's filter ("" before it starts).
	following string

	// links counts attachments started and not yet stopped (at most one).
	links atomic.Int32
	// driftWarned is when a clock drift was last logged (Unix ns).
	driftWarned atomic.Int64
}

// OpenReplica opens (creating if needed) the replica stored in cfg.Dir and,
// if cfg.Conn is set, attaches it. ctx bounds the open.
func OpenReplica(ctx context.Context, cfg ReplicaConfig) (*Replica, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("open replica: %w", err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open replica %s: %w", cfg.Dir, err)
	}
	path := filepath.Join(cfg.Dir, DBFile)
	// OpenStore refuses a store that is missing (its marker says one was
	// made), emptied, truncated or damaged, with one line naming the file
	// and what to do, and leaves the file as it was: a new identity is
	// never minted over an old one. The log owns the file; the view's
	// buckets live in it, reached through the log's transactions.
	logger := discardIfNil(cfg.Logger)
	r := &Replica{
		cfg:     cfg,
		seal:    cfg.Cipher,
		tenant:  cfg.Tenant,
		filters: ChangeFilters(cfg.Tenant, cfg.Collections),
		batch:   orDefault(cfg.CatchUpBatch, DefaultCatchUpBatch),
	}
	// The log's key check (in its meta bucket) covers the whole file: the
	// view's buckets are only ever written by a replica that opened the log
	// with the same cipher first. They are set up (init) in the
	// transaction that opens the log: opening costs one commit.
	var rescoped error
	l, err := producer.OpenStore(path, producer.LogConfig{Tenant: cfg.Tenant, Client: cfg.Client, Logger: logger,
		TracerProvider: cfg.TracerProvider, MeterProvider: cfg.MeterProvider, Cipher: cfg.Cipher,
		Init: func(tx *producer.Tx) (err error) { rescoped, err = r.init(tx); return err }},
		producer.FileOptions{Timeout: 10 * time.Second, InitialMmapSize: storeMmap, AllocSize: storeGrowth})
	if err != nil {
		if errors.Is(err, producer.ErrStoreMissing) || errors.Is(err, producer.ErrStoreEmpty) || errors.Is(err, producer.ErrStoreDamaged) {
			return nil, fmt.Errorf("open replica: %w", err)
		}
		return nil, fmt.Errorf("open replica %s: %w", path, err)
	}
	r.log, r.client = l, l.Client()
	r.logger = logger.With(logComponent, "consumer.replica", "tenant", r.tenant, "client", r.client)
	if rescoped != nil {
		r.noteResync(rescoped)
	}
	if len(cfg.Collections) > 0 {
		r.scope = make(map[string]bool, len(cfg.Collections))
		for _, c := range cfg.Collections {
			r.scope[c] = true
		}
	}
	if r.tel, err = newReplicaTelemetry(r, cfg); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("open replica %s: telemetry: %w", path, err)
	}
	// Receipts a crash kept from reaching the log (see devices.go).
	if err := r.relog(ctx); err != nil {
		r.tel.close()
		_ = l.Close()
		return nil, fmt.Errorf("open replica %s: %w", path, err)
	}
	if cfg.Conn != nil {
		if err := r.Attach(ctx, cfg.Conn); err != nil {
			_ = r.Close()
			return nil, err
		}
	}
	return r, nil
}

// init creates the view's buckets and resets the view when the scope
// changed (returning why, for the caller to note once tx has committed),
// inside tx, the transaction that opens the log.
func (r *Replica) init(tx *producer.Tx) (rescoped error, err error) {
	scope := strings.Join(r.filters, " ")
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return nil, fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	if old := meta.Get(metaScope); old != nil && string(old) != scope {
		rescoped = fmt.Errorf("%w: scope changed from %q to %q", ErrResync, old, scope)
		if err := r.resetScope(tx); err != nil {
			return nil, err
		}
	}
	for stream, p := range map[string]*Progress{events.StreamChanges: &r.changesP, events.StreamReceipts: &r.receiptsP} {
		c, err := getCursor(tx, stream)
		if err != nil {
			return nil, err
		}
		p.Seq = c.Seq
	}
	return rescoped, meta.Put(metaScope, []byte(scope))
}

func (r *Replica) noteResync(err error) {
	r.logger.Warn("full resync", logReason, err)
	r.mu.Lock()
	r.resyncs++
	r.lastResync = err
	r.mu.Unlock()
}

// Client returns the replica's client id.
func (r *Replica) Client() string { return r.client }

// Log returns the producer log the replica writes to.
func (r *Replica) Log() *producer.Log { return r.log }

// Close detaches the replica, ends its watchers and closes the store. It is
// safe to call twice.
func (r *Replica) Close() error {
	r.tel.close()
	r.Detach()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.watchers.closeAll()
	if err := r.log.Close(); err != nil {
		return fmt.Errorf("close replica store: %w", err)
	}
	return nil
}

func (r *Replica) inScope(collection string) bool { return r.scope == nil || r.scope[collection] }

func (r *Replica) checkOpen() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	return nil
}
