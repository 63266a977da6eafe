package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"
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

// DefaultCatchUpBatch is how many changes one view transaction applies at
// most while catching up.
const DefaultCatchUpBatch = 1000

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
	// CatchUpBatch bounds changes per view transaction; default
	// DefaultCatchUpBatch.
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

// Doc is a document as the app sees it: the synced state with the replica's
// pending writes applied on top.
type Doc struct {
	Collection string
	ID         string
	// Version is the version of this state: the server's, or the one the
	// pending writes will give it if the server applies them as predicted.
	Version uint64
	// Deleted: the document is a tombstone (Get reports ErrNotFound).
	Deleted bool
	Fields  events.Fields
	// Pending counts local writes included here that the server has not
	// settled yet.
	Pending int
	// Conflicts are the document's open (manual) conflicts; settle one with
	// Resolve.
	Conflicts []events.Conflict
}

// Status is a snapshot of a replica's state.
type Status struct {
	// Online: attached, with both followers running. A follower stopped by
	// an error (Err) makes it false until the next Attach.
	Online   bool
	Client   string
	Changes  Progress // the CHANGES follower
	Receipts Progress // the RECEIPTS follower
	// Pending counts local writes without a receipt (not yet published,
	// published, or refused for good).
	Pending int
	// Rejections not yet dismissed.
	Rejections int
	// Resyncs counts full resyncs since open; LastResync says why the last
	// one happened (it wraps ErrResync).
	Resyncs    int
	LastResync error
	// Quarantined counts the messages set aside since open: unreadable, or
	// not what their subject says (see doc.go, "Quarantine");
	// LastQuarantine says which and why (it wraps ErrQuarantined and
	// ErrUnreadable or ErrSubjectMismatch).
	Quarantined    int
	LastQuarantine error
	// Err is the last error that stopped a follower: the local store
	// failed. Local reads and writes go on; the next Attach clears it and
	// resumes from the stored cursors.
	Err error
}

// SyncReport tells what one Sync did.
type SyncReport struct {
	Pushed    int  // local writes published since attaching or the previous Sync
	Pulled    int  // changes applied to the view since attaching or the previous Sync
	Rejected  int  // local writes rejected since attaching or the previous Sync
	Conflicts int  // open conflicts in the view after this sync
	Resynced  bool // a full resync happened since attaching or the previous Sync (see Status.LastResync)
}

// Replica is an app's offline-first local copy of its tenant (or of some
// collections of it). Reads never touch the network; writes are durable in
// the local log before they return; while attached to a connection the
// replica publishes pending writes, follows CHANGES and its own RECEIPTS. It
// is safe for concurrent use.
type Replica struct {
	cfg      ReplicaConfig
	db       *bbolt.DB
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

// link is one attachment to a connection and the goroutines it runs.
type link struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	pub    *producer.Publisher
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// ready is closed once the CHANGES follower has checked the stream
	// (and resynced if it had to): Sync waits for it so it never judges
	// "caught up" by a cursor about to be reset.
	ready     chan struct{}
	readyOnce sync.Once
	// changes and receipts are the link's followers, restarted (kicked)
	// when a gap check finds their stream needs start's recovery.
	changes  *follower[change]
	receipts *follower[receipt]
	// What Syncs have reported so far, so each Sync reports what happened
	// since attaching or the previous Sync (the followers and the publisher
	// run from Attach on, not only during a Sync): publishes of pub, and
	// the replica's pulled and rejected counters.
	pushed, pulled, rejected, resyncs reported
}

// reported is a count already reported by a Sync.
type reported struct{ n atomic.Uint64 }

// since returns how much of total no Sync has reported yet and marks it
// reported; concurrent Syncs never count anything twice.
func (r *reported) since(total uint64) int {
	for {
		old := r.n.Load()
		if total <= old {
			return 0
		}
		if r.n.CompareAndSwap(old, total) {
			return int(total - old)
		}
	}
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
	// OpenFile refuses a store that is missing (its marker says one was
	// made), emptied, truncated or damaged, with one line naming the file
	// and what to do, and leaves the file as it was: a new identity is
	// never minted over an old one.
	db, err := producer.OpenFile(path, producer.FileOptions{Timeout: 10 * time.Second, InitialMmapSize: storeMmap, AllocSize: storeGrowth})
	if err != nil {
		return nil, fmt.Errorf("open replica: %w", err)
	}
	logger := discardIfNil(cfg.Logger)
	// The log's key check (in its meta bucket) covers the whole file: the
	// view's buckets are only ever written by a replica that opened the log
	// with the same cipher first.
	l, err := producer.OpenDB(db, producer.LogConfig{Tenant: cfg.Tenant, Client: cfg.Client, Logger: logger,
		TracerProvider: cfg.TracerProvider, MeterProvider: cfg.MeterProvider, Cipher: cfg.Cipher})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open replica %s: %w", path, err)
	}
	r := &Replica{
		cfg:     cfg,
		db:      db,
		seal:    cfg.Cipher,
		log:     l,
		tenant:  cfg.Tenant,
		client:  l.Client(),
		filters: ChangeFilters(cfg.Tenant, cfg.Collections),
		batch:   orDefault(cfg.CatchUpBatch, DefaultCatchUpBatch),
	}
	r.logger = logger.With(logComponent, "consumer.replica", "tenant", r.tenant, "client", r.client)
	if len(cfg.Collections) > 0 {
		r.scope = make(map[string]bool, len(cfg.Collections))
		for _, c := range cfg.Collections {
			r.scope[c] = true
		}
	}
	if r.tel, err = newReplicaTelemetry(r, cfg); err != nil {
		_ = l.Close()
		_ = db.Close()
		return nil, fmt.Errorf("open replica %s: telemetry: %w", path, err)
	}
	if err := r.init(); err != nil {
		r.tel.close()
		_ = l.Close()
		_ = db.Close()
		return nil, fmt.Errorf("open replica %s: %w", path, err)
	}
	// Receipts a crash kept from reaching the log (see devices.go).
	if err := r.relog(ctx); err != nil {
		r.tel.close()
		_ = l.Close()
		_ = db.Close()
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

// init creates the buckets and resets the view when the scope changed.
func (r *Replica) init() error {
	scope := strings.Join(r.filters, " ")
	return r.db.Update(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if old := meta.Get(metaScope); old != nil && string(old) != scope {
			err := fmt.Errorf("%w: scope changed from %q to %q", ErrResync, old, scope)
			r.noteResync(err)
			if err := r.resetScope(tx); err != nil {
				return err
			}
		}
		for stream, p := range map[string]*Progress{events.StreamChanges: &r.changesP, events.StreamReceipts: &r.receiptsP} {
			c, err := getCursor(tx, stream)
			if err != nil {
				return err
			}
			p.Seq = c.Seq
		}
		return meta.Put(metaScope, []byte(scope))
	})
}

// driftWarnEvery bounds how often a replica logs that its clock is behind
// the changes it receives: every change would say so.
const driftWarnEvery = time.Minute

// noteDrift logs err (wrapping events.ErrClockDrift: a received timestamp
// was far ahead of the local clock, which followed it anyway), at most once
// per driftWarnEvery.
func (r *Replica) noteDrift(err error) {
	now := time.Now().UnixNano()
	last := r.driftWarned.Load()
	if now-last < int64(driftWarnEvery) || !r.driftWarned.CompareAndSwap(last, now) {
		return
	}
	r.logger.Warn("local clock behind a received change; following it", logErr, err)
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

// Attach connects the replica: it starts publishing pending writes and
// following CHANGES (from the stored sequence) and the client's RECEIPTS on
// nc, replacing any previous attachment. nc stays the caller's: the replica
// never closes it, and nats.Conn reconnects by itself after network loss,
// so one Attach normally lasts the life of the app. Detach (or closing nc)
// takes the replica offline; it keeps working locally either way.
func (r *Replica) Attach(ctx context.Context, nc *nats.Conn) error {
	if nc == nil {
		return fmt.Errorf("attach replica: %w: nil connection", ErrInvalidConfig)
	}
	pc := r.publisherConfig()
	js, err := jetstream.New(nc, asyncPublishOpts(pc)...)
	if err != nil {
		return fmt.Errorf("attach replica: %w", err)
	}
	pub, err := producer.NewPublisher(r.log, js, nc, pc)
	if err != nil {
		return fmt.Errorf("attach replica: %w", err)
	}
	// attachMu makes stopping the old link and installing the new one one
	// step: two Attach calls can no longer both find no link and each
	// install its own, leaking one. The old link is stopped without r.mu
	// held, since its goroutines take r.mu.
	r.attachMu.Lock()
	defer r.attachMu.Unlock()
	r.detach()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("attach replica: %w", ErrClosed)
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &link{nc: nc, js: js, pub: pub, cancel: cancel, ready: make(chan struct{})}
	l.pulled.n.Store(uint64(r.pulled))
	l.rejected.n.Store(uint64(r.rejected))
	l.resyncs.n.Store(uint64(r.resyncs))
	if err := pub.Start(lctx); err != nil {
		cancel()
		return fmt.Errorf("attach replica: start publisher: %w", err)
	}
	r.link = l
	r.links.Add(1)
	r.lastErr = nil
	changes, receipts := r.changesFollower(l), r.receiptsFollower(js)
	l.changes, l.receipts = changes, receipts
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		r.watchGaps(lctx, l, orDefault(r.cfg.GapCheckInterval, DefaultGapCheckInterval))
	}()
	for _, f := range []struct {
		stream string
		run    func(context.Context) error
	}{{changes.stream, changes.run}, {receipts.stream, receipts.run}} {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if err := f.run(lctx); err != nil && !errors.Is(err, context.Canceled) {
				r.logger.Error("follower stopped", logStream, f.stream, logErr, err)
				r.mu.Lock()
				r.lastErr = err
				r.mu.Unlock()
			}
		}()
	}
	return nil
}

// defaultAsyncMaxPending is nats.go's own bound on async publishes awaiting
// their PubAck.
const defaultAsyncMaxPending = 4000

// asyncPublishOpts configures the JetStream context the replica's publisher
// publishes on. The publisher gives up on a PubAck after its AckTimeout and
// publishes again; without a timeout of its own nats.go keeps every future
// given up on in its pending map, and once that holds max-pending of them
// every async publish fails with ErrTooManyStalledMsgs until a reconnect.
// So the context drops a future after the same AckTimeout, and allows at
// least the publisher's MaxInFlight futures.
func asyncPublishOpts(pc producer.PublisherConfig) []jetstream.JetStreamOpt {
	timeout := pc.AckTimeout
	if timeout == 0 {
		timeout = producer.DefaultAckTimeout
	}
	return []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncTimeout(timeout),
		jetstream.WithPublishAsyncMaxPending(max(defaultAsyncMaxPending, pc.MaxInFlight)),
	}
}

// Detach takes the replica offline: it stops its followers and publisher
// and waits for them. Local reads and writes go on. Safe to call when not
// attached.
func (r *Replica) Detach() {
	r.attachMu.Lock()
	defer r.attachMu.Unlock()
	r.detach()
}

// detach is Detach with r.attachMu held.
func (r *Replica) detach() {
	r.mu.Lock()
	l := r.link
	r.link = nil
	r.mu.Unlock()
	if l == nil {
		return
	}
	l.cancel()
	l.wg.Wait()
	if err := l.pub.Close(); err != nil {
		r.logger.Warn("close publisher", logErr, err)
	}
	r.links.Add(-1)
}

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
	err := r.log.Close()
	if cerr := r.db.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close replica store: %w", cerr))
	}
	return err
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

// ---- following CHANGES ----

func (r *Replica) changesFollower(l *link) *follower[change] {
	js := l.js
	f := &follower[change]{
		js: js, stream: events.StreamChanges, filters: r.filters, batch: r.batch,
		log: r.logger.With(logStream, events.StreamChanges), kick: make(chan struct{}, 1),
	}
	// created is the stream's creation time as the session's start saw it;
	// start and apply run on the follower's goroutine, one after the other.
	var created int64
	f.start = func(ctx context.Context) (uint64, error) {
		next, cr, err := r.startChanges(ctx, js)
		if err == nil {
			created = cr
			l.readyOnce.Do(func() { close(l.ready) })
		}
		return next, err
	}
	f.prepare = prepareChange
	f.gather = catchUpGather
	f.apply = func(ctx context.Context, ds []delivery[change]) error {
		// A consumer the ordered consumer remade by itself may have
		// resumed on a stream deleted and recreated in between: check
		// before its first message moves the cursor.
		if resumedIn(ds) {
			if reset, _, err := r.changesReset(ctx, js); err != nil || reset {
				return errRestart
			}
		}
		return r.applyChanges(ctx, ds, created)
	}
	return f
}

// startChanges checks the CHANGES stream against the stored cursor and
// returns where to start and the stream's creation time, which the first
// apply stores with the cursor. A stream created after the one the cursor
// was read from, or whose last sequence is below the cursor, was reset: the
// view is cleared and replayed from the start (pending writes stay). Only a
// reset writes here, so a (re)start costs no commit of its own.
func (r *Replica) startChanges(ctx context.Context, js jetstream.JetStream) (next uint64, created int64, err error) {
	s, err := stream(ctx, js, events.StreamChanges)
	if err != nil {
		return 0, 0, fmt.Errorf("read stream %s: %w", events.StreamChanges, err)
	}
	info := s.CachedInfo()
	created = createdNano(info.Created)
	reset := func(c cursor) bool { return cursorReset(info, created, c) }
	var c cursor
	err = r.db.View(func(tx *bbolt.Tx) (err error) {
		c, err = getCursor(tx, events.StreamChanges)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("start following %s: %w", events.StreamChanges, err)
	}
	if !reset(c) {
		r.retryQuarantinedChanges(ctx, s)
		return c.Seq + 1, created, nil
	}
	err = r.db.Update(func(tx *bbolt.Tx) error {
		c, err := getCursor(tx, events.StreamChanges)
		if err != nil {
			return err
		}
		if reset(c) {
			rerr := fmt.Errorf("%w: stream %s was reset (stored sequence %d, stream last %d, created %s)",
				ErrResync, events.StreamChanges, c.Seq, info.State.LastSeq, info.Created.Format(time.RFC3339Nano))
			r.noteResync(rerr)
			if err := r.resetScope(tx); err != nil {
				return err
			}
			c = cursor{}
		}
		c.Created = created
		next = c.Seq + 1
		return putCursor(tx, events.StreamChanges, c)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("start following %s: %w", events.StreamChanges, err)
	}
	r.startedAt(&r.changesP, next-1)
	return next, created, nil // a reset cleared the quarantine: the replay reads it all again
}

// startedAt records that a follower's stored cursor was moved to seq
// before it started reading, and wakes waiters (Sync waits until progress
// covers the stored cursor).
func (r *Replica) startedAt(p *Progress, seq uint64) {
	r.mu.Lock()
	p.Seq = seq
	r.mu.Unlock()
	r.changed.notify()
}

// applyChanges applies a batch of CHANGES messages in one transaction with
// the cursor (and created, the stream's creation time): each change
// replaces the synced state if its version is newer (so a redelivered
// change changes nothing), settles the pending event it was caused by and
// any receipt that waited for it, and feeds the clock.
func (r *Replica) applyChanges(ctx context.Context, ds []delivery[change], created int64) error {
	var touched [][]byte
	applied := 0
	var prog Progress
	var quarantined []error
	err := r.db.Update(func(tx *bbolt.Tx) error {
		touched, applied, quarantined = touched[:0], 0, quarantined[:0]
		c, err := getCursor(tx, events.StreamChanges)
		if err != nil {
			return err
		}
		v := openView(tx, r.seal)
		for i := range ds {
			d := &ds[i]
			if d.seq <= c.Seq {
				prog.Pending = d.pending
				continue
			}
			prog.Pending = d.pending
			c.Seq = d.seq
			if d.v.err != nil {
				// Set aside, never applied: every other document goes on,
				// and the start of a later follower reads it again.
				qerr, err := r.quarantine(tx, events.StreamChanges, d.subject, d.seq, d.v.err, d.v.retry)
				if err != nil {
					return err
				}
				quarantined = append(quarantined, qerr)
				continue
			}
			ch, key := &d.v.head, d.v.key
			if ch.Tenant != r.tenant || !r.inScope(ch.Collection) {
				r.logger.Warn("change outside scope skipped", "subject", d.subject, logSeq, d.seq)
				continue
			}
			if ch.Version <= v.version(key) {
				continue
			}
			if err := r.putChange(v, key, ch, d.v.value); err != nil {
				return err
			}
			touched = append(touched, key)
			applied++
			r.tel.changeApplied(d.v.header, ch, d.seq, r.client)
		}
		v.close()
		prog.Seq = c.Seq
		c.Created = created
		return putCursor(tx, events.StreamChanges, c)
	})
	r.tel.endApplies(err)
	if err != nil {
		return fmt.Errorf("apply %d changes: %w", len(ds), err)
	}
	r.noteQuarantine(quarantined)
	r.mu.Lock()
	r.changesP = Progress{Seq: prog.Seq, Applied: r.changesP.Applied + uint64(len(ds)), Pending: prog.Pending}
	r.pulled += applied
	r.mu.Unlock()
	r.committed(touched)
	return nil
}

// putChange stores ch (newer than the view's version of key; value is its
// synced value) in v, and does what applying it implies: the conflict
// index, the clock, and settling what it settles.
func (r *Replica) putChange(v *view, key []byte, ch *changeHead, value []byte) error {
	if err := v.put(key, ch.Version, value); err != nil {
		return err
	}
	if err := v.indexConflicts(key, ch); err != nil {
		return err
	}
	// The clock always moves past the change, so a write built on it is
	// stamped after it even when this client's wall clock is behind;
	// ErrClockDrift only says that it is (the server bounds timestamps,
	// not the client).
	if _, err := r.log.Clock().Update(ch.HLC); err != nil {
		r.noteDrift(err)
	}
	return r.settleByChange(v, key, ch)
}

// settleByChange settles what ch settles: the replica's own event that
// caused it, and receipts that waited for a version ch reaches.
func (r *Replica) settleByChange(v *view, key []byte, ch *changeHead) error {
	tx := v.tx
	if ch.Client == r.client && ch.Event != "" {
		rc := &events.Receipt{
			Schema: events.SchemaVersion, Event: ch.Event, Tenant: ch.Tenant, Client: ch.Client, Seq: ch.Seq,
			Collection: ch.Collection, Doc: ch.Doc, Outcome: events.OutcomeApplied, Version: ch.Version,
		}
		if s := ch.Settled; s != nil && s.ID == ch.Event {
			rc.Conflict = s.ID
			switch s.Status {
			case events.ConflictOpen:
				rc.Outcome = events.OutcomeConflict
			case events.ConflictOverwritten:
				if s.Policy == events.PolicyMerge {
					rc.Outcome = events.OutcomeMerged
				}
			}
		}
		if err := r.log.Settle(tx, rc); err != nil {
			return err
		}
		// A change the event caused proves it applied: drop a Rejection
		// of unknown fate a duplicate receipt recorded (applyDuplicate).
		if rj := tx.Bucket(bucketRejections); rj.Get([]byte(ch.Event)) != nil {
			if err := rj.Delete([]byte(ch.Event)); err != nil {
				return fmt.Errorf("drop rejection of %s: %w", ch.Event, err)
			}
		}
	}
	// Receipts waiting for this document up to ch.Version.
	if !v.awaiting {
		return nil
	}
	prefix := append(append([]byte{}, key...), 0)
	c := tx.Bucket(bucketAwaiting).Cursor()
	var done [][]byte
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var rc events.Receipt
		if err := getJSON(r.seal, bucketAwaiting, k, v, &rc); err != nil {
			return fmt.Errorf("read awaiting receipt %q: %w", k, err)
		}
		if rc.Version > ch.Version {
			continue
		}
		if err := r.log.Settle(tx, &rc); err != nil {
			return err
		}
		done = append(done, k)
	}
	for _, k := range done {
		if err := tx.Bucket(bucketAwaiting).Delete(k); err != nil {
			return fmt.Errorf("delete awaiting receipt %q: %w", k, err)
		}
	}
	return nil
}

// resetScope starts a full resync inside tx: every receipt that waited for
// its change settles its write (the receipt said how the server decided it;
// the replay brings the authoritative state), then the view and the CHANGES
// cursor are cleared (clearScope). Clearing without settling would leave
// those writes pending forever: their receipt is consumed and gone.
func (r *Replica) resetScope(tx *bbolt.Tx) error {
	err := tx.Bucket(bucketAwaiting).ForEach(func(k, v []byte) error {
		var rc events.Receipt
		if err := getJSON(r.seal, bucketAwaiting, k, v, &rc); err != nil {
			return fmt.Errorf("read awaiting receipt %q: %w", k, err)
		}
		return r.log.Settle(tx, &rc)
	})
	if err != nil {
		return fmt.Errorf("settle awaiting receipts: %w", err)
	}
	return clearScope(tx)
}

// ---- following RECEIPTS ----

// receipt is a RECEIPTS message decoded on the follower's reader goroutine.
type receipt struct {
	rc    *events.Receipt
	err   error
	retry bool // err: a newer schema, worth reading again after an upgrade
}

func (r *Replica) receiptsFollower(js jetstream.JetStream) *follower[receipt] {
	f := &follower[receipt]{
		js: js, stream: events.StreamReceipts, filters: []string{r.receiptFilter()}, batch: 256,
		log: r.logger.With(logStream, events.StreamReceipts), kick: make(chan struct{}, 1),
	}
	var created int64 // as in changesFollower
	f.start = func(ctx context.Context) (next uint64, err error) {
		if err := r.relog(ctx); err != nil {
			return 0, &applyError{err: fmt.Errorf("start following %s: %w", events.StreamReceipts, err)}
		}
		next, created, err = r.startReceipts(ctx, js)
		if err != nil {
			return next, err
		}
		if err := r.relog(ctx); err != nil {
			return 0, &applyError{err: fmt.Errorf("start following %s: %w", events.StreamReceipts, err)}
		}
		// The filter follows the log's device: a legacy log that forked
		// reads its new device's subject once its legacy writes are all
		// answered, from where it forked.
		filter, err := r.wantReceiptFilter()
		if err != nil {
			return 0, &applyError{err: fmt.Errorf("start following %s: %w", events.StreamReceipts, err)}
		}
		if filter != events.ReceiptSubject(r.tenant, r.client) {
			if next, err = r.rewindToFork(next); err != nil {
				return 0, &applyError{err: fmt.Errorf("start following %s: %w", events.StreamReceipts, err)}
			}
		}
		f.filters = []string{filter}
		r.mu.Lock()
		r.following = filter
		r.mu.Unlock()
		return next, nil
	}
	f.prepare = func(m jetstream.Msg, v *receipt, _ *arena) {
		v.rc, v.err = decodeReceipt(m.Data())
		v.retry = v.err != nil && newerSchema(m.Data())
	}
	f.apply = func(ctx context.Context, ds []delivery[receipt]) error {
		// Receipts may have been lost before these: the ordered consumer
		// resumed by itself, or it was behind the stream's retention.
		// Check before the cursor moves past them for good.
		r.mu.Lock()
		prev := r.receiptsP
		r.mu.Unlock()
		if receiptGapSuspect(prev, ds) || r.receiptSkipped(prev, ds) {
			if lost, err := r.receiptsLost(ctx, js); err != nil || lost {
				return errRestart
			}
		}
		if err := r.applyReceipts(ctx, ds, created); err != nil {
			return err
		}
		if afterReceiptsCommit != nil {
			afterReceiptsCommit()
		}
		if err := r.relog(ctx); err != nil {
			return err
		}
		if f.filters[0] != r.receiptFilter() {
			// A legacy log forked: follow its device's subject once its
			// legacy writes are answered.
			if want, err := r.wantReceiptFilter(); err != nil || want != f.filters[0] {
				return errRestart
			}
		}
		return nil
	}
	return f
}

// afterReceiptsCommit, if set (by a crash test), runs after a receipts
// transaction commits and before its deferred receipts reach the log.
var afterReceiptsCommit func()

// receiptFilter is the RECEIPTS filter of the log's current device.
func (r *Replica) receiptFilter() string { return receiptFilter(r.tenant, r.client, r.log.Device()) }

// receiptSkew is how much later than RECEIPTS' first message an event may
// have been published (by the client's clock) and still have lost its
// receipt: it absorbs clock skew between client and server. Erring late
// costs only a republish answered "duplicate".
const receiptSkew = 10 * time.Minute

// startReceipts returns where to read receipts from. When receipts after the
// stored sequence may be gone (RECEIPTS' retention removed them, or the
// stream was reset), the log decides what was lost: the published events
// still waiting for a receipt that could have been among them are published
// again with their original ids. The projector answers "duplicate" for the
// ones it applied (their effect arrives through CHANGES anyway) and applies
// the ones it never saw, so every write still gets a receipt. A cursor
// behind the stream with nothing outstanding lost nothing: the cursor just
// moves, with no resync.
func (r *Replica) startReceipts(ctx context.Context, js jetstream.JetStream) (next uint64, created int64, err error) {
	s, err := stream(ctx, js, events.StreamReceipts)
	if err != nil {
		return 0, 0, fmt.Errorf("read stream %s: %w", events.StreamReceipts, err)
	}
	info := s.CachedInfo()
	created = createdNano(info.Created)
	check := func(c cursor) (cursor, bool, bool) { return receiptsCheck(info, created, c) }
	var c cursor
	err = r.db.View(func(tx *bbolt.Tx) (err error) {
		c, err = getCursor(tx, events.StreamReceipts)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("start following %s: %w", events.StreamReceipts, err)
	}
	// A stream restored from a backup of the cursor's (not a reset: the
	// cursor stays) lacks whatever the backup did not hold: every write
	// still awaiting a receipt is at risk, its event perhaps gone from
	// EVENTS too.
	restored := func(c cursor) bool { return c.Seq > 0 && c.Created != created }
	if _, reset, behind := check(c); !reset && !behind && !restored(c) {
		r.retryQuarantinedReceipts(ctx, s)
		if err := r.republishStored(ctx, js, s); err != nil {
			return 0, 0, err
		}
		if err := r.settleDueUnansweredNow(); err != nil {
			return 0, 0, fmt.Errorf("start following %s: %w", events.StreamReceipts, err)
		}
		return c.Seq + 1, created, nil
	}
	var lost, suspects []*events.Event
	err = r.db.Update(func(tx *bbolt.Tx) error {
		lost, suspects = lost[:0], suspects[:0]
		old, err := getCursor(tx, events.StreamReceipts)
		if err != nil {
			return err
		}
		c, reset, behind := check(old)
		if reset {
			// Quarantined and unanswered sequences are the old stream's;
			// every unsettled write is republished below.
			if err := clearQuarantine(tx, events.StreamReceipts); err != nil {
				return err
			}
			if err := tx.Bucket(bucketMeta).Delete(metaUnanswered); err != nil {
				return fmt.Errorf("drop unanswered events: %w", err)
			}
		}
		if reset || behind || restored(old) {
			es, err := r.log.Unsettled(tx)
			if err != nil {
				return err
			}
			lost, suspects = receiptsAtRisk(info, es, reset || restored(old))
		}
		if len(lost) > 0 {
			r.noteResync(fmt.Errorf("%w: receipts after sequence %d may be gone (stream %s first %d at %s, last %d): republishing %d unsettled events, watching %d pending ones",
				ErrResync, old.Seq, events.StreamReceipts, info.State.FirstSeq, info.State.FirstTime.Format(time.RFC3339), info.State.LastSeq, len(lost), len(suspects)))
		}
		c.Created = created
		next = c.Seq + 1
		// The cursor moves past the gap in this transaction: what to
		// republish is stored with it, so a republish that fails (the
		// link detached, the server gone, the process killed) is done at
		// the next start instead of being forgotten.
		if err := addRepublish(tx, lost); err != nil {
			return err
		}
		if err := addSuspects(tx, suspects); err != nil {
			return err
		}
		return putCursor(tx, events.StreamReceipts, c)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("start following %s: %w", events.StreamReceipts, err)
	}
	r.startedAt(&r.receiptsP, next-1)
	r.retryQuarantinedReceipts(ctx, s)
	if err := r.republishStored(ctx, js, s); err != nil {
		return 0, 0, err
	}
	if err := r.settleDueUnansweredNow(); err != nil {
		return 0, 0, fmt.Errorf("start following %s: %w", events.StreamReceipts, err)
	}
	return next, created, nil
}

// republishStored republishes the events a start stored (addRepublish)
// that still await their receipt, defers those JetStream dropped
// (deferUnanswered), and only then forgets them; s is RECEIPTS.
func (r *Replica) republishStored(ctx context.Context, js jetstream.Publisher, s jetstream.Stream) error {
	var evs []*events.Event
	var ids []string
	err := r.db.View(func(tx *bbolt.Tx) (err error) {
		ids, err = getRepublish(tx)
		if err != nil || len(ids) == 0 {
			return err
		}
		for _, id := range ids {
			e, ok, err := r.log.UnsettledEntry(tx, id)
			if err != nil {
				return err
			}
			if ok && e.State == producer.StatePublished {
				evs = append(evs, e.Event)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read events to republish: %w", err)
	}
	if len(evs) > 0 {
		dropped, err := r.republish(ctx, js, evs)
		if len(dropped) > 0 {
			err = errors.Join(err, r.deferUnanswered(ctx, s, dropped))
		}
		if err != nil {
			return err
		}
	}
	// Only the ids read above: another start may have added one meanwhile,
	// for the next start.
	err = r.db.Update(func(tx *bbolt.Tx) error {
		now, err := getRepublish(tx)
		if err != nil || len(now) == 0 {
			return err
		}
		now = slices.DeleteFunc(now, func(id string) bool { return slices.Contains(ids, id) })
		if len(now) == 0 {
			return tx.Bucket(bucketMeta).Delete(metaRepublish)
		}
		b, _ := json.Marshal(now) // strings always encode
		return tx.Bucket(bucketMeta).Put(metaRepublish, b)
	})
	if err != nil {
		return fmt.Errorf("forget republished events: %w", err)
	}
	return nil
}

// republish publishes evs again, each with its id as Nats-Msg-Id, and
// returns those JetStream dropped as duplicates (their first publish is
// inside EVENTS' dedupe window): they reach no projector, so no receipt will
// answer them (see unanswered).
func (r *Replica) republish(ctx context.Context, js jetstream.Publisher, evs []*events.Event) (dropped []*events.Event, err error) {
	for _, e := range evs {
		b, err := events.EncodeEvent(e)
		if err != nil {
			return dropped, fmt.Errorf("republish event %s: %w", e.ID, err)
		}
		ack, err := js.Publish(ctx, e.Subject(), b, jetstream.WithMsgID(e.ID))
		if err != nil {
			return dropped, fmt.Errorf("republish event %s: %w", e.ID, err)
		}
		if ack.Duplicate {
			dropped = append(dropped, e)
		}
	}
	r.logger.Info("republished events whose receipts may be lost", "count", len(evs), "dropped", len(dropped))
	return dropped, nil
}

// applyReceipts settles the replica's events from their receipts, in one
// transaction with the cursor (and created, the stream's creation time). A rejected or invalid write is settled and
// recorded as a Rejection (the view reverts to the server's state). An
// applied, merged or conflict receipt settles the event only once the view
// holds the version it names; until then it waits in bucketAwaiting and the
// write stays on top of the view, so the app never sees it flicker.
func (r *Replica) applyReceipts(ctx context.Context, ds []delivery[receipt], created int64) error {
	var touched [][]byte
	rejected := 0
	var prog Progress
	var quarantined []error
	device := r.log.Device() // before the transaction: an append holds the log's lock while it waits for one
	err := r.db.Update(func(tx *bbolt.Tx) error {
		touched, rejected, quarantined = touched[:0], 0, quarantined[:0]
		c, err := getCursor(tx, events.StreamReceipts)
		if err != nil {
			return err
		}
		b, err := r.newReceiptBatch(tx, device)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if d.seq <= c.Seq {
				prog.Pending = d.pending
				continue
			}
			prog.Pending = d.pending
			c.Seq = d.seq
			why := d.v.err
			if why == nil {
				why = r.checkReceipt(d.subject, d.v.rc)
			}
			if why != nil {
				// As for changes: set aside and read again at the next
				// start, so an upgrade can still tell the writer.
				qerr, err := r.quarantine(tx, events.StreamReceipts, d.subject, d.seq, why, d.v.retry)
				if err != nil {
					return err
				}
				quarantined = append(quarantined, qerr)
				continue
			}
			n, key, err := r.applyReceipt(tx, b, d.seq, d.v.rc)
			if err != nil {
				return err
			}
			rejected += n
			if key != nil {
				touched = append(touched, key)
			}
		}
		n, keys, err := r.settleDueUnanswered(tx, c.Seq)
		if err != nil {
			return err
		}
		rejected += n
		touched = append(touched, keys...)
		prog.Seq = c.Seq
		c.Created = created
		return putCursor(tx, events.StreamReceipts, c)
	})
	if err != nil {
		return fmt.Errorf("apply %d receipts: %w", len(ds), err)
	}
	r.noteQuarantine(quarantined)
	r.mu.Lock()
	r.receiptsP = Progress{Seq: prog.Seq, Applied: r.receiptsP.Applied + uint64(len(ds)), Pending: prog.Pending}
	r.rejected += rejected
	r.mu.Unlock()
	r.committed(touched)
	return nil
}

// receiptBatch is what applying receipts in one transaction needs to know
// of the log: its current device. Each receipt looks its event up by id
// (Log.UnsettledEntry), so a batch costs its receipts, not the backlog.
type receiptBatch struct {
	device string
}

// newReceiptBatch starts a batch inside tx; device is the log's current
// device, read before tx began.
func (r *Replica) newReceiptBatch(tx *bbolt.Tx, device string) (*receiptBatch, error) {
	return &receiptBatch{device: device}, nil
}

// applyReceipt handles one receipt, read at RECEIPTS sequence seq; it
// returns 1 if it recorded a rejection and the key of the document whose
// view changed (nil if none). A receipt of an event the log does not hold
// unsettled (another device's of the client, or one settled already)
// changes nothing, except that one of the current device is deferred to
// the log's ObserveReceipt (it may name a sequence the log never wrote),
// and a rejection makes a recorded unknown fate precise. A "reused"
// receipt is deferred to the log's Reissue (see devices.go).
func (r *Replica) applyReceipt(tx *bbolt.Tx, b *receiptBatch, seq uint64, rc *events.Receipt) (int, []byte, error) {
	ent, ok, err := r.unsettled(tx, rc.Event)
	if err != nil {
		return 0, nil, err
	}
	if !ok {
		if rc.Device != "" && rc.Device == b.device {
			if err := r.deferRelog(tx, seq, rc); err != nil {
				return 0, nil, err
			}
		}
		switch rc.Outcome {
		case events.OutcomeRejected, events.OutcomeInvalid, events.OutcomeApplied, events.OutcomeMerged, events.OutcomeConflict:
			return 0, nil, r.refineUnknownFate(tx, rc)
		}
		return 0, nil, nil
	}
	if rc.Outcome == events.OutcomeReused {
		// Still pending (and on top of the view) until Reissue writes it
		// again and settles it, in one transaction of the log's.
		return 0, nil, r.deferRelog(tx, seq, rc)
	}
	key := docKey(rc.Collection, rc.Doc)
	switch rc.Outcome {
	case events.OutcomeApplied, events.OutcomeMerged, events.OutcomeConflict:
		if rc.Collection != "" && rc.Version > syncedVersion(tx, key) {
			ak := append(append(append([]byte{}, key...), 0), rc.Event...)
			return 0, nil, putJSON(tx, r.seal, bucketAwaiting, ak, rc)
		}
		return 0, key, r.log.Settle(tx, rc)
	case events.OutcomeRejected, events.OutcomeInvalid:
		rej := Rejection{Event: rc.Event, Collection: ent.Collection, Doc: ent.Doc, Op: ent.Op, Fields: ent.Fields, Outcome: rc.Outcome, Reason: rc.Reason}
		if err := putJSON(tx, r.seal, bucketRejections, []byte(rc.Event), rej); err != nil {
			return 0, nil, fmt.Errorf("record rejection of %s: %w", rc.Event, err)
		}
		r.logger.Info("write rejected", logEvent, rc.Event, logDoc, ent.Doc, logReason, rc.Reason)
		return 1, docKey(ent.Collection, ent.Doc), r.log.Settle(tx, rc)
	case events.OutcomeDuplicate:
		return r.applyDuplicate(tx, rc)
	default:
		return 0, key, r.log.Settle(tx, rc)
	}
}

// applyDuplicate handles a "duplicate" receipt: the projector had already
// decided the event, and says nothing of how. When the replica knows the
// fate otherwise, the duplicate settles the event silently: it is settled
// already (by its change or its first receipt), its first receipt awaits
// its change (which will settle it), or the synced document was made by it
// or records it in a conflict. Otherwise, typically a write republished
// after its receipt expired whose change CHANGES no longer holds (a later
// write to the document replaced it), the write may have been rejected: it
// is settled and recorded as a Rejection with outcome duplicate and a
// reason saying its fate is unknown, so the writer is told (invariant 1)
// rather than its write vanishing from the overlay. A change caused by the
// event that arrives later proves it applied and removes that Rejection
// (settleByChange).
func (r *Replica) applyDuplicate(tx *bbolt.Tx, rc *events.Receipt) (int, []byte, error) {
	ent, ok, err := r.unsettled(tx, rc.Event)
	if err != nil || !ok {
		return 0, nil, err
	}
	key := docKey(ent.Collection, ent.Doc)
	prefix := append(append([]byte{}, key...), 0)
	if tx.Bucket(bucketAwaiting).Get(append(prefix, rc.Event...)) != nil {
		return 0, nil, nil // its first receipt said how; its change settles it
	}
	synced, err := syncedDoc(tx, r.seal, key)
	if err != nil {
		return 0, nil, err
	}
	known := synced.Event == rc.Event
	for _, c := range synced.Conflicts {
		known = known || c.ID == rc.Event || c.Resolution == rc.Event
	}
	if known {
		return 0, key, r.log.Settle(tx, rc)
	}
	reason := "fate unknown: the server had already decided this write, but its receipt expired and the replica has not seen a change it caused (applied and since overwritten, or rejected); check the document"
	if rc.Reason != "" {
		reason += " (server: " + rc.Reason + ")"
	}
	if rc.Stream == 0 && rc.Reason == reasonUnanswered {
		reason = reasonUnanswered // made up by settleDueUnanswered, not the server's
	}
	rej := Rejection{Event: rc.Event, Collection: ent.Collection, Doc: ent.Doc, Op: ent.Op, Fields: ent.Fields, Outcome: rc.Outcome, Reason: reason}
	if err := putJSON(tx, r.seal, bucketRejections, []byte(rc.Event), rej); err != nil {
		return 0, nil, fmt.Errorf("record unknown fate of %s: %w", rc.Event, err)
	}
	r.logger.Warn("write of unknown fate", logEvent, rc.Event, logDoc, ent.Doc, logReason, reason)
	return 1, key, r.log.Settle(tx, rc)
}

// unsettled finds the unsettled event id in the log.
func (r *Replica) unsettled(tx *bbolt.Tx, id string) (*events.Event, bool, error) {
	e, ok, err := r.log.UnsettledEntry(tx, id)
	if err != nil || !ok {
		return nil, false, err
	}
	return e.Event, true, nil
}

// committed wakes Sync waiters and watchers after a view commit.
func (r *Replica) committed(keys [][]byte) {
	r.changed.notify()
	r.watchers.touch(keys)
}

// ---- reading ----

// overlay applies the unsettled entries es (of one document, in log order)
// on top of the synced state cur with the replica's policies, exactly as the
// server will decide them if it sees the same state.
func (r *Replica) overlay(cur projection.Doc, es []producer.Entry) (projection.Doc, int, error) {
	n := 0
	for _, e := range es {
		if e.State == producer.StateFailed {
			continue // refused for good: it will never apply
		}
		d, err := projection.Decide(r.cfg.Policies, cur, e.Event)
		if err != nil {
			return cur, n, fmt.Errorf("apply pending event %s: %w", e.Event.ID, err)
		}
		if d.Doc != nil {
			cur = *d.Doc
		}
		n++
	}
	return cur, n, nil
}

func toDoc(collection, id string, d projection.Doc, pending int) Doc {
	var open []events.Conflict
	for _, c := range d.Conflicts {
		if c.Status == events.ConflictOpen {
			open = append(open, c)
		}
	}
	return Doc{Collection: collection, ID: id, Version: d.Version, Deleted: d.Deleted, Fields: d.Fields, Pending: pending, Conflicts: open}
}

// pendingIn groups the log's unsettled entries of collection by document
// key; it reads only that collection's (Log.UnsettledIn).
func (r *Replica) pendingIn(tx *bbolt.Tx, collection string) (map[string][]producer.Entry, error) {
	es, err := r.log.UnsettledIn(tx, collection)
	if err != nil {
		return nil, err
	}
	m := make(map[string][]producer.Entry)
	for _, e := range es {
		k := string(docKey(e.Event.Collection, e.Event.Doc))
		m[k] = append(m[k], e)
	}
	return m, nil
}

// localDoc returns the view of one document inside tx.
func (r *Replica) localDoc(tx *bbolt.Tx, collection, id string) (Doc, error) {
	key := docKey(collection, id)
	cur, err := syncedDoc(tx, r.seal, key)
	if err != nil {
		return Doc{}, err
	}
	pend, err := r.log.UnsettledFor(tx, collection, id)
	if err != nil {
		return Doc{}, err
	}
	d, n, err := r.overlay(cur, pend)
	if err != nil {
		return Doc{}, err
	}
	return toDoc(collection, id, d, n), nil
}

// Get returns the document as the app sees it: synced state plus pending
// local writes. A document that does not exist or is deleted is ErrNotFound.
func (r *Replica) Get(ctx context.Context, collection, id string) (Doc, error) {
	if err := ctx.Err(); err != nil {
		return Doc{}, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	if err := r.checkOpen(); err != nil {
		return Doc{}, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	var d Doc
	err := r.db.View(func(tx *bbolt.Tx) (err error) {
		d, err = r.localDoc(tx, collection, id)
		return err
	})
	if err != nil {
		return Doc{}, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	if d.Version == 0 || d.Deleted {
		return d, fmt.Errorf("get %s/%s: %w", collection, id, ErrNotFound)
	}
	return d, nil
}

// List returns the live documents of collection, ordered by id. With
// tombstones, deleted documents are included too.
func (r *Replica) List(ctx context.Context, collection string, tombstones bool) ([]Doc, error) {
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	var out []Doc
	err := r.db.View(func(tx *bbolt.Tx) error {
		pend, err := r.pendingIn(tx, collection)
		if err != nil {
			return err
		}
		prefix := collectionPrefix(collection)
		c := tx.Bucket(bucketDocs).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			cur, err := decodeSynced(r.seal, k, v)
			if err != nil {
				return err
			}
			d, n, err := r.overlay(cur, pend[string(k)])
			if err != nil {
				return err
			}
			delete(pend, string(k))
			_, id := splitDocKey(k)
			out = append(out, toDoc(collection, id, d, n))
		}
		for k, es := range pend { // documents only pending writes have made
			if col, id := splitDocKey([]byte(k)); col == collection {
				d, n, err := r.overlay(projection.Doc{}, es)
				if err != nil {
					return err
				}
				out = append(out, toDoc(collection, id, d, n))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	out = slices.DeleteFunc(out, func(d Doc) bool { return d.Version == 0 || (d.Deleted && !tombstones) })
	slices.SortFunc(out, func(a, b Doc) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Conflict is an open conflict on a document of the replica's view.
type Conflict struct {
	Collection, Doc string
	Conflict        events.Conflict
}

// Conflicts returns the open conflicts of the synced view, for the app to
// let its user choose and Resolve.
func (r *Replica) Conflicts(ctx context.Context) ([]Conflict, error) {
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("list conflicts: %w", err)
	}
	var out []Conflict
	err := r.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketConflicts).ForEach(func(k, _ []byte) error {
			d, err := syncedDoc(tx, r.seal, k)
			if err != nil {
				return err
			}
			col, id := splitDocKey(k)
			for _, c := range d.Conflicts {
				if c.Status == events.ConflictOpen {
					out = append(out, Conflict{Collection: col, Doc: id, Conflict: c})
				}
			}
			return ctx.Err()
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list conflicts: %w", err)
	}
	return out, nil
}

// Rejections returns the local writes the server rejected, not yet dismissed.
func (r *Replica) Rejections(ctx context.Context) ([]Rejection, error) {
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("list rejections: %w", err)
	}
	var out []Rejection
	err := r.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketRejections).ForEach(func(k, v []byte) error {
			var rej Rejection
			if err := getJSON(r.seal, bucketRejections, k, v, &rej); err != nil {
				return fmt.Errorf("read rejection %s: %w", k, err)
			}
			out = append(out, rej)
			return ctx.Err()
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list rejections: %w", err)
	}
	return out, nil
}

// DismissRejection forgets a rejection the app has dealt with.
func (r *Replica) DismissRejection(ctx context.Context, event string) error {
	if err := r.checkOpen(); err != nil {
		return fmt.Errorf("dismiss rejection %s: %w", event, err)
	}
	err := r.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketRejections).Delete([]byte(event))
	})
	if err != nil {
		return fmt.Errorf("dismiss rejection %s: %w", event, err)
	}
	return nil
}

// ---- writing ----

// write appends one write to the log with the version the app currently
// sees as its base, and returns the new local view of the document.
// basis is what a new write of a document builds on: the version the
// replica last had from the server, and its own latest pending write of the
// document, if any (events.Event.After). A failed write never reaches the
// server, so nothing builds on it.
func (r *Replica) basis(tx *bbolt.Tx, collection, id string) (base uint64, after string, err error) {
	key := docKey(collection, id)
	synced, err := syncedDoc(tx, r.seal, key)
	if err != nil {
		return 0, "", err
	}
	pend, err := r.log.UnsettledFor(tx, collection, id)
	if err != nil {
		return 0, "", err
	}
	for _, e := range pend {
		if e.State != producer.StateFailed {
			after = e.Event.ID
		}
	}
	return synced.Version, after, nil
}

// prepare is the producer.Prepare of the replica's writes: it sets a
// write's base version and After from what tx holds (basis).
func (r *Replica) prepare(tx *bbolt.Tx, w *producer.Write) error {
	var err error
	w.BaseVersion, w.After, err = r.basis(tx, w.Collection, w.Doc)
	return err
}

func (r *Replica) write(ctx context.Context, w producer.Write) (Doc, error) {
	if !r.inScope(w.Collection) {
		return Doc{}, fmt.Errorf("%s %s/%s: %w", w.Op, w.Collection, w.Doc, ErrOutOfScope)
	}
	if err := r.checkOpen(); err != nil {
		return Doc{}, fmt.Errorf("%s %s/%s: %w", w.Op, w.Collection, w.Doc, err)
	}
	// The base is read inside the log's transaction (prepare), so
	// concurrent writes are group-committed and still each build on the
	// one stored before it.
	if _, err := r.log.AppendWith(ctx, []producer.Write{w}, r.prepare); err != nil {
		return Doc{}, fmt.Errorf("%s %s/%s: %w", w.Op, w.Collection, w.Doc, err)
	}
	var d Doc
	err := r.db.View(func(tx *bbolt.Tx) (err error) {
		d, err = r.localDoc(tx, w.Collection, w.Doc)
		return err
	})
	if err != nil {
		return Doc{}, fmt.Errorf("%s %s/%s: %w", w.Op, w.Collection, w.Doc, err)
	}
	r.committed([][]byte{docKey(w.Collection, w.Doc)})
	return d, nil
}

// Put replaces (or creates) a document. The write is durable when Put
// returns and shows in the view at once; it reaches the server when the
// replica is attached.
func (r *Replica) Put(ctx context.Context, collection, id string, fields events.Fields) (Doc, error) {
	return r.write(ctx, producer.Write{Collection: collection, Doc: id, Op: events.OpPut, Fields: fields})
}

// Patch sets the given fields of an existing document; a JSON null removes
// a field.
func (r *Replica) Patch(ctx context.Context, collection, id string, fields events.Fields) (Doc, error) {
	return r.write(ctx, producer.Write{Collection: collection, Doc: id, Op: events.OpPatch, Fields: fields})
}

// Delete deletes a document (a tombstone remains).
func (r *Replica) Delete(ctx context.Context, collection, id string) (Doc, error) {
	return r.write(ctx, producer.Write{Collection: collection, Doc: id, Op: events.OpDelete})
}

// Resolve settles the open conflict conflictID on a document with fields as
// its new state.
func (r *Replica) Resolve(ctx context.Context, collection, id, conflictID string, fields events.Fields) (Doc, error) {
	return r.write(ctx, producer.Write{Collection: collection, Doc: id, Op: events.OpResolve, Fields: fields, Resolves: conflictID})
}

// ---- status and sync ----

// Status returns a snapshot of the replica's state.
func (r *Replica) Status() Status {
	r.mu.Lock()
	s := Status{
		Online: r.link != nil && r.lastErr == nil, Client: r.client, Changes: r.changesP, Receipts: r.receiptsP,
		Resyncs: r.resyncs, LastResync: r.lastResync, Err: r.lastErr,
		Quarantined: r.quarantined, LastQuarantine: r.lastQuarantine,
	}
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return s
	}
	_ = r.db.View(func(tx *bbolt.Tx) error {
		s.Pending = r.log.UnsettledCount(tx)
		s.Rejections = tx.Bucket(bucketRejections).Stats().KeyN
		return nil
	})
	return s
}

func (r *Replica) counters() (pulled, rejected, resyncs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pulled, r.rejected, r.resyncs
}

// Sync brings the replica up to date with the server, bounded by ctx: it
// publishes every pending write (the publisher's Flush), waits for the fate
// of every write published (receipts, and the changes they name), then
// waits until the view has applied every change in scope that CHANGES held
// when the receipts were in. It returns ErrOffline when not attached. The
// report counts what happened during the call.
func (r *Replica) Sync(ctx context.Context) (SyncReport, error) {
	r.mu.Lock()
	l := r.link
	r.mu.Unlock()
	if l == nil {
		return SyncReport{}, fmt.Errorf("sync: %w", ErrOffline)
	}
	select {
	case <-l.ready:
	case <-ctx.Done():
		return SyncReport{}, fmt.Errorf("sync: wait for the changes follower: %w", ctx.Err())
	}
	var ids []string
	err := r.db.View(func(tx *bbolt.Tx) error {
		es, err := r.log.Unsettled(tx)
		for _, e := range es {
			if e.State != producer.StateFailed {
				ids = append(ids, e.Event.ID)
			}
		}
		return err
	})
	if err != nil {
		return SyncReport{}, fmt.Errorf("sync: %w", err)
	}
	pushed := 0
	// A write a "reused" receipt made the log write again (as a new
	// device) is waited for under its new event, until none is left.
	for waiting := ids; ; {
		if err := l.pub.Flush(ctx); err != nil {
			return SyncReport{}, fmt.Errorf("sync: push: %w", err)
		}
		// The publisher runs from Attach on, so it may have sent writes
		// before this Sync began: count what it published that no Sync
		// reported yet.
		pushed += l.pushed.since(l.pub.Status().Published)
		// Receipts lost while attached would keep this wait from ending:
		// check now (the link's watchGaps checks again while it lasts).
		r.checkGaps(ctx, l, false)
		// A write, once settled or failed, stays so: the check drops
		// those from the front and stops at the first still waiting, so
		// the whole wait costs O(writes) lookups, not O(backlog) per commit.
		rest := waiting
		if err := r.waitFor(ctx, func(tx *bbolt.Tx) (bool, error) {
			for len(rest) > 0 {
				e, ok, err := r.log.UnsettledEntry(tx, rest[0])
				if err != nil {
					return false, err
				}
				if ok && e.State != producer.StateFailed {
					return false, nil
				}
				rest = rest[1:]
			}
			return true, nil
		}); err != nil {
			return SyncReport{}, fmt.Errorf("sync: wait for receipts: %w", err)
		}
		if waiting, err = r.takeReissued(ctx, waiting); err != nil {
			return SyncReport{}, fmt.Errorf("sync: %w", err)
		}
		if len(waiting) == 0 {
			break
		}
	}
	// A CHANGES reset while attached is noticed here at the latest: wait
	// for the follower's restart to reset the view, or "caught up" would be
	// judged by the old stream's cursor.
	reset, created, err := r.changesReset(ctx, l.js)
	if err != nil {
		return SyncReport{}, fmt.Errorf("sync: %w", err)
	}
	if reset {
		r.logger.Warn("stream reset while attached; recovering", logStream, events.StreamChanges)
		l.changes.restart()
		if err := r.waitFor(ctx, func(tx *bbolt.Tx) (bool, error) {
			c, err := getCursor(tx, events.StreamChanges)
			return c.Created == created, err
		}); err != nil {
			return SyncReport{}, fmt.Errorf("sync: wait for the resync of %s: %w", events.StreamChanges, err)
		}
	}
	target, err := r.lastInScope(ctx, l.js)
	if err != nil {
		return SyncReport{}, fmt.Errorf("sync: pull: %w", err)
	}
	if err := r.waitFor(ctx, func(tx *bbolt.Tx) (bool, error) {
		c, err := getCursor(tx, events.StreamChanges)
		if err != nil || c.Seq < target {
			return false, err
		}
		// A follower updates its progress and the counters this report
		// reads just after its commit: wait until they cover what tx sees.
		rc, err := getCursor(tx, events.StreamReceipts)
		r.mu.Lock()
		counted := r.changesP.Seq >= c.Seq && r.receiptsP.Seq >= rc.Seq
		r.mu.Unlock()
		return counted, err
	}); err != nil {
		return SyncReport{}, fmt.Errorf("sync: pull to %d: %w", target, err)
	}
	pulled1, rejected1, resyncs1 := r.counters()
	conflicts, err := r.Conflicts(ctx)
	if err != nil {
		return SyncReport{}, fmt.Errorf("sync: %w", err)
	}
	return SyncReport{
		Pushed: pushed, Pulled: l.pulled.since(uint64(pulled1)), Rejected: l.rejected.since(uint64(rejected1)),
		Conflicts: len(conflicts), Resynced: l.resyncs.since(uint64(resyncs1)) > 0,
	}, nil
}

// lastInScope returns the sequence of the last message in CHANGES under the
// replica's filters (0 if none).
func (r *Replica) lastInScope(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	s, err := stream(ctx, js, events.StreamChanges)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", events.StreamChanges, err)
	}
	var last uint64
	for _, f := range r.filters {
		m, err := lastMsgFor(ctx, s, f)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("last change under %s: %w", f, err)
		}
		last = max(last, m.Sequence)
	}
	return last, nil
}

// waitFor re-checks cond after every view commit until it holds, ctx ends,
// or the replica goes offline.
func (r *Replica) waitFor(ctx context.Context, cond func(tx *bbolt.Tx) (bool, error)) error {
	for {
		wake := r.changed.wait()
		var ok bool
		if err := r.db.View(func(tx *bbolt.Tx) (err error) {
			ok, err = cond(tx)
			return err
		}); err != nil {
			return err
		}
		if ok {
			return nil
		}
		r.mu.Lock()
		offline, ferr := r.link == nil, r.lastErr
		r.mu.Unlock()
		if ferr != nil {
			return ferr
		}
		if offline {
			return ErrOffline
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
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
