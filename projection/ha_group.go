package projection

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// GroupJetStream is the part of jetstream.JetStream a Group uses: the
// projector's, and the lease bucket.
type GroupJetStream interface {
	JetStream
	CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
}

// Group defaults.
const (
	DefaultLeaseBucket = "ebb_projector_leases"
	// DefaultLeaseTTL puts a takeover after a holder dies (about LeaseTTL
	// and a quarter, plus the new projector's start) under 5s. A holder
	// stops its projectors when its lease requests have failed for about
	// two thirds of it (a KV stream without a leader for that long): a
	// longer TTL rides out longer KV outages, a shorter one hands over
	// sooner.
	DefaultLeaseTTL = 3 * time.Second
	// MinLeaseTTL bounds LeaseTTL from below: a holder renews three times
	// per TTL, and a renewal must fit in a third of it.
	MinLeaseTTL = time.Second
)

// GroupConfig configures a Group. The zero value works: one partition,
// leases of DefaultLeaseTTL in DefaultLeaseBucket.
type GroupConfig struct {
	// Partitions is how many partitions the projector's work is split
	// into (see Partition); 0 means 1: one active projector among all the
	// instances, the others on standby. Every instance of one view must
	// use the same number, and it cannot change once the view is
	// partitioned (PartitionedStore).
	Partitions int
	// Holder names this instance in the leases (for operators: `nats kv
	// get`); empty means the host name and a random suffix. Two live
	// instances must not share one.
	Holder string
	// LeaseTTL is how long a lease lives unrenewed: a holder that dies is
	// replaced within about LeaseTTL and a quarter. Every instance must
	// use the same (it is the bucket's TTL). Zero means DefaultLeaseTTL;
	// below MinLeaseTTL is invalid.
	LeaseTTL time.Duration
	// Bucket is the KV bucket of the leases; empty means
	// DefaultLeaseBucket.
	Bucket string
	// Replicas is the lease bucket's replicas (a cluster: as many as the
	// streams); zero means 1.
	Replicas int
}

func (gc GroupConfig) withDefaults() GroupConfig {
	if gc.Partitions == 0 {
		gc.Partitions = 1
	}
	if gc.LeaseTTL == 0 {
		gc.LeaseTTL = DefaultLeaseTTL
	}
	if gc.Bucket == "" {
		gc.Bucket = DefaultLeaseBucket
	}
	if gc.Replicas == 0 {
		gc.Replicas = 1
	}
	if gc.Holder == "" {
		host, _ := os.Hostname()
		var b [4]byte
		rand.Read(b[:])
		gc.Holder = host + "-" + hex.EncodeToString(b[:])
	}
	return gc
}

func (gc GroupConfig) validate() error {
	var errs []error
	if gc.Partitions < 0 || gc.Partitions > MaxPartitions {
		errs = append(errs, fmt.Errorf("%w: Partitions %d is not in [0, %d]", ErrInvalidConfig, gc.Partitions, MaxPartitions))
	}
	if gc.LeaseTTL != 0 && gc.LeaseTTL < MinLeaseTTL {
		errs = append(errs, fmt.Errorf("%w: LeaseTTL %s is below %s", ErrInvalidConfig, gc.LeaseTTL, MinLeaseTTL))
	}
	if gc.Replicas < 0 {
		errs = append(errs, fmt.Errorf("%w: Replicas %d is negative", ErrInvalidConfig, gc.Replicas))
	}
	return errors.Join(errs...)
}

// GroupStats are a Group's counters since Start, over every projector it
// ran.
type GroupStats struct {
	Held       []int  // partitions this instance applies now, ascending
	Checkpoint uint64 // the lowest checkpoint of the held partitions (for the lag gauge); 0 when none
	Acquired   uint64 // leases taken (a start, a takeover)
	Lost       uint64 // leases given up or lost (renewal failed, projector stopped)
	Applied    uint64 // Stats.Applied summed
	Duplicates uint64 // Stats.Duplicates summed
	Dead       uint64 // Stats.Dead summed
}

// Group runs, in one ebb server, the projectors of the partitions whose
// lease it holds, so that any number of servers share one view with
// exactly one active projector per partition (see the package doc,
// "The projector"). Per partition it competes for a lease, a key in a JetStream
// KV bucket whose TTL is the lease's; the holder renews it by revision
// (compare and set) three times per TTL and runs that partition's
// Projector while it holds it; the others retry every quarter TTL. A
// holder stops its projector as soon as it can no longer show it holds
// the lease (a renewal refused, or none acknowledged within the TTL);
// every batch of a partition is also fenced in the store by the
// checkpoint it started from (Batch.Prev), so even a holder that did not
// stop in time cannot apply an event twice. When the store is a Fencer
// (PostgresStore), each lease's Epoch is recorded in the store as the
// holder takes it, before its projector starts, and every commit of an
// older holder is refused (ErrFenced) from then on, whether or not the
// new holder has committed yet: a holder paused past its TTL that
// resumes mid-commit neither commits nor evicts its successor. And a
// holder's projector publishes (changes, receipts, dead letters) only
// while its lease is provably held by its own clock and its connection
// is up (nothing waits in a reconnect buffer): what it committed before a
// pause and had not published is published by its successor, from the
// outbox. One window stays: a holder paused between that check and the
// write to its socket (microseconds) sends the message when it resumes;
// JetStream drops it as a duplicate if the successor published the same
// version within the duplicate window, and only a later version of the
// same document, published by the successor in that window, can then be
// followed by the older one in CHANGES. Start it once; Close stops it and
// releases its leases.
type Group struct {
	js    GroupJetStream
	store Store // a PartitionedStore when Partitions > 1
	cfg   Config
	gc    GroupConfig
	log   *slog.Logger

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{}
	parts   []*leaseState
	bucket  time.Time // the lease bucket's creation time: Epoch.Bucket
	kvErr   error     // last lease request error
	kvSince time.Time // when lease requests began failing; zero while they work
	stats   GroupStats
}

// leaseState is one partition's, as this instance sees it. Under g.mu.
type leaseState struct {
	proj  *Projector // non-nil while held
	since time.Time
}

// NewGroup returns a group of projectors reading EVENTS through js into
// store, with cfg for each (its Partition and Durable are set per
// partition; Durable, if set, is the prefix). With more than one
// partition store must be a PartitionedStore. It checks both configs
// (errors wrap ErrInvalidConfig) and does no I/O.
func NewGroup(js GroupJetStream, store Store, cfg Config, gc GroupConfig) (*Group, error) {
	errs := []error{gc.validate()}
	if js == nil || store == nil {
		errs = append(errs, fmt.Errorf("%w: nil JetStream or Store", ErrInvalidConfig))
	}
	if cfg.Partition != (Partition{}) {
		errs = append(errs, fmt.Errorf("%w: Config.Partition is the group's to set", ErrInvalidConfig))
	}
	gc = gc.withDefaults()
	if _, ok := store.(PartitionedStore); gc.Partitions > 1 && !ok {
		errs = append(errs, fmt.Errorf("%w: %d partitions need a PartitionedStore, not %T", ErrInvalidConfig, gc.Partitions, store))
	}
	if err := cfg.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("new projector group: %w", err)
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger.With("component", "projector-group", "holder", gc.Holder)
	return &Group{js: js, store: store, cfg: cfg, gc: gc, log: log, done: make(chan struct{}),
		parts: make([]*leaseState, gc.Partitions)}, nil
}

// Start creates (or updates) the lease bucket and begins competing for
// every partition's lease on goroutines the group owns; it does not wait
// for any lease. ctx bounds the bucket's creation and, cancelled later,
// stops the group like Close.
func (g *Group) Start(ctx context.Context) error {
	g.mu.Lock()
	if g.started {
		g.mu.Unlock()
		return errors.New("start projector group: already started")
	}
	g.started = true
	g.mu.Unlock()
	kv, err := g.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: g.gc.Bucket, Description: "ebb projector leases: which server applies each partition",
		TTL: g.gc.LeaseTTL, History: 1, Storage: jetstream.FileStorage, Replicas: g.gc.Replicas,
	})
	if err != nil {
		close(g.done)
		return fmt.Errorf("start projector group: lease bucket %s: %w", g.gc.Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		close(g.done)
		return fmt.Errorf("start projector group: lease bucket %s status: %w", g.gc.Bucket, err)
	}
	var bucket time.Time
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
		bucket = bs.StreamInfo().Created
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	g.mu.Lock()
	g.cancel = cancel
	g.bucket = bucket
	g.mu.Unlock()
	for i := range g.gc.Partitions {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.compete(runCtx, kv, i)
		}()
	}
	go func() {
		g.wg.Wait()
		stop()
		close(g.done)
	}()
	g.log.Info("projector group started", "partitions", g.gc.Partitions, "lease_ttl", g.gc.LeaseTTL, "bucket", g.gc.Bucket)
	return nil
}

func (g *Group) key(i int) string { return fmt.Sprintf("partition.%d.%d", g.gc.Partitions, i) }

func (g *Group) partition(i int) Partition {
	if g.gc.Partitions <= 1 {
		return Partition{}
	}
	return Partition{Index: i, Count: g.gc.Partitions}
}

// kvResult notes how a lease request went, for Ready.
func (g *Group) kvResult(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err == nil {
		g.kvErr, g.kvSince = nil, time.Time{}
		return
	}
	if g.kvSince.IsZero() {
		g.kvSince = time.Now()
	}
	g.kvErr = err
}

// compete is partition i's goroutine: take the lease when free, hold it
// while its projector runs, and again, until ctx ends.
func (g *Group) compete(ctx context.Context, kv jetstream.KeyValue, i int) {
	ttl := g.gc.LeaseTTL
	poll := ttl / 4
	key := g.key(i)
	for {
		t0 := time.Now()
		rctx, cancel := context.WithTimeout(ctx, ttl/3)
		rev, err := kv.Create(rctx, key, []byte(g.gc.Holder))
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			g.kvResult(nil)
			wait := g.hold(ctx, kv, i, rev, t0)
			if !sleep(ctx, wait) {
				return
			}
			continue
		case errors.Is(err, jetstream.ErrKeyExists):
			g.kvResult(nil) // held by another
		default:
			g.kvResult(fmt.Errorf("take lease %s: %w", key, err))
		}
		if !sleep(ctx, poll) {
			return
		}
	}
}

// sleep waits d or until ctx ends, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// hold runs partition i's projector while the lease (at revision rev,
// requested at t0) is provably held, then stops it and releases the
// lease. It returns how long to wait before competing again: a TTL after
// the projector failed, so that another instance may take the partition.
func (g *Group) hold(ctx context.Context, kv jetstream.KeyValue, i int, rev uint64, t0 time.Time) time.Duration {
	ttl := g.gc.LeaseTTL
	key := g.key(i)
	valid := t0.Add(ttl) // the server expires the lease no earlier
	log := g.log.With("partition", g.partition(i).String())
	log.Info("lease taken: applying the partition", "revision", rev)

	pctx, stop := context.WithCancel(ctx)
	defer stop()
	cfg := g.cfg
	cfg.Partition = g.partition(i)
	if cfg.Durable != DefaultDurable && !cfg.Partition.whole() {
		cfg.Durable = fmt.Sprintf("%s-p%d-of-%d", cfg.Durable, i, g.gc.Partitions)
	} else if cfg.Durable == DefaultDurable {
		cfg.Durable = ""
	}
	var wait time.Duration
	g.mu.Lock()
	epoch := Epoch{Bucket: g.bucket, Revision: rev}
	g.mu.Unlock()
	lease := &leasedJS{GroupJetStream: g.js}
	lease.until(valid)
	proj, err := g.newProjector(pctx, lease, cfg, epoch)
	g.mu.Lock()
	g.stats.Acquired++
	if err == nil {
		g.parts[i] = &leaseState{proj: proj, since: time.Now()}
	}
	g.mu.Unlock()
	var started chan error
	if err != nil {
		log.Error("partition projector", "err", err)
		wait = ttl
		goto release
	}
	started = make(chan error, 1)
	go func() { started <- proj.Start(pctx) }()
	for renew := time.NewTicker(ttl / 3); ; {
		select {
		case <-ctx.Done():
			renew.Stop()
			goto release
		case err := <-started:
			started = nil
			if err != nil {
				log.Error("partition projector did not start", "err", err)
				wait = ttl
				renew.Stop()
				goto release
			}
		case <-proj.Done():
			log.Warn("partition projector stopped; giving up the lease", "err", proj.Err())
			wait = ttl
			renew.Stop()
			goto release
		case <-renew.C:
			t := time.Now()
			rctx, cancel := context.WithTimeout(ctx, ttl/3)
			next, err := kv.Update(rctx, key, []byte(g.gc.Holder), rev)
			cancel()
			switch {
			case err == nil:
				rev, valid = next, t.Add(ttl)
				lease.until(valid)
				g.kvResult(nil)
				continue
			case ctx.Err() != nil:
				renew.Stop()
				goto release
			case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyNotFound):
				log.Warn("lease lost: another instance holds it, or it expired", "err", err)
				renew.Stop()
				goto release
			}
			g.kvResult(fmt.Errorf("renew lease %s: %w", key, err))
			// Stop well before the server may hand the lease on: with
			// less than half of it left, the next renewal (a third of
			// the TTL away, taking up to a third) could come too late.
			if !time.Now().Add(ttl / 2).Before(valid) {
				log.Warn("lease not renewed in time; stopping the partition's projector", "err", err)
				renew.Stop()
				goto release
			}
		}
	}
release:
	stop()
	if proj != nil {
		if err := proj.Close(); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("partition projector stopped with an error", "err", err)
		}
		st := proj.Stats()
		g.mu.Lock()
		g.stats.Applied += st.Applied
		g.stats.Duplicates += st.Duplicates
		g.stats.Dead += st.Dead
		g.mu.Unlock()
	}
	g.mu.Lock()
	g.parts[i] = nil
	g.stats.Lost++
	g.mu.Unlock()
	// Hand the partition on at once rather than after the TTL; refused
	// (harmlessly) when the lease is no longer ours.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ttl/3)
	if err := kv.Delete(rctx, key, jetstream.LastRevision(rev)); err == nil {
		log.Info("lease released")
	}
	cancel()
	return wait
}

// newProjector is partition cfg.Partition's projector, publishing
// through js, fenced: every batch by its starting checkpoint
// (Batch.Prev), and, when the store is a Fencer, by epoch.
func (g *Group) newProjector(ctx context.Context, js JetStream, cfg Config, epoch Epoch) (*Projector, error) {
	store := g.store
	if !cfg.Partition.whole() {
		var err error
		if store, err = g.store.(PartitionedStore).Partition(ctx, cfg.Partition); err != nil {
			return nil, err
		}
	}
	if f, ok := store.(Fencer); ok {
		var err error
		if store, err = f.Fence(ctx, epoch); err != nil {
			return nil, fmt.Errorf("fence partition %s with lease epoch %s: %w", cfg.Partition, epoch, err)
		}
	}
	p, err := New(js, store, cfg)
	if err != nil {
		return nil, err
	}
	p.fenced = true
	return p, nil
}

// leasedJS is the JetStream a held partition's projector uses: it
// refuses every publish (changes, receipts, dead letters, a reseed) once
// the lease can no longer be shown held, its last renewal a TTL old by
// this process's monotonic clock. The hold loop stops the projector
// before that; only a holder paused past its TTL (a GC, a stopped VM)
// gets there, and on resuming it must not publish what a newer holder
// may have superseded: a change of an older version, stored after the
// new holder's and outside the dedupe window, would be the document's
// last message in CHANGES. The refusal wraps ErrFenced; the projector
// retries it (refusedForGood is false) until its group stops it.
type leasedJS struct {
	GroupJetStream
	valid atomic.Pointer[time.Time]
}

func (j *leasedJS) until(t time.Time) { j.valid.Store(&t) }

// held refuses a publish once the lease ran out, and while the
// connection is down: nats.go would keep it in its reconnect buffer and
// send it whenever the link comes back, long after the lease may have
// run out (a refused publish is retried by the projector). ebb's server
// connection has no reconnect buffer either (deploy/server). The check
// needs the JetStream the group is given to have Conn() (jetstream's
// own does); a wrapper without it is not checked, and its connection
// should be made with nats.ReconnectBufSize(-1).
func (j *leasedJS) held() error {
	v := j.valid.Load()
	if v == nil || !time.Now().Before(*v) {
		return fmt.Errorf("%w: the lease ran out before this publish (the process was paused or cut off)", ErrFenced)
	}
	if c, ok := j.GroupJetStream.(interface{ Conn() *nats.Conn }); ok && !c.Conn().IsConnected() {
		return fmt.Errorf("projector publish refused while the NATS connection is %s", c.Conn().Status())
	}
	return nil
}

func (j *leasedJS) Publish(ctx context.Context, subject string, payload []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if err := j.held(); err != nil {
		return nil, err
	}
	return j.GroupJetStream.Publish(ctx, subject, payload, opts...)
}

func (j *leasedJS) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if err := j.held(); err != nil {
		return nil, err
	}
	return j.GroupJetStream.PublishMsg(ctx, msg, opts...)
}

func (j *leasedJS) PublishAsync(subject string, payload []byte, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if err := j.held(); err != nil {
		return nil, err
	}
	return j.GroupJetStream.PublishAsync(subject, payload, opts...)
}

func (j *leasedJS) PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if err := j.held(); err != nil {
		return nil, err
	}
	return j.GroupJetStream.PublishMsgAsync(msg, opts...)
}

// Stats returns the group's counters.
func (g *Group) Stats() GroupStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.stats
	s.Held = nil
	for i, ls := range g.parts {
		if ls == nil {
			continue
		}
		s.Held = append(s.Held, i)
		st := ls.proj.Stats()
		if len(s.Held) == 1 || st.Checkpoint < s.Checkpoint {
			s.Checkpoint = st.Checkpoint
		}
		s.Applied += st.Applied
		s.Duplicates += st.Duplicates
		s.Dead += st.Dead
	}
	return s
}

// Ready returns nil while every partition this instance holds has a
// ready projector (Projector.Ready) and the lease bucket answers; else
// an error naming the first problem: not started, stopped, lease
// requests failing for longer than the lease TTL, or a held partition's
// projector not ready (wrapped). An instance that holds no partition is
// ready: it is on standby.
func (g *Group) Ready() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.started {
		return errors.New("projector group not started")
	}
	select {
	case <-g.done:
		return errors.New("projector group stopped")
	default:
	}
	if !g.kvSince.IsZero() && time.Since(g.kvSince) > g.gc.LeaseTTL {
		return fmt.Errorf("%w: lease requests failing for %s: %w", ErrUnavailable, time.Since(g.kvSince).Round(time.Millisecond), g.kvErr)
	}
	for i, ls := range g.parts {
		if ls == nil {
			continue
		}
		if err := ls.proj.Ready(); err != nil {
			return fmt.Errorf("partition %s: %w", g.partition(i), err)
		}
	}
	return nil
}

// Done is closed when the group's goroutines have ended: only after Close
// or the end of Start's context. A group never stops on its own: a
// partition's projector that fails gives up the lease and is started
// again (here or elsewhere), and Ready reports it meanwhile.
func (g *Group) Done() <-chan struct{} { return g.done }

// Close stops every projector the group runs, releases their leases (so
// another instance takes over at once) and waits. It is safe to call more
// than once, and before Start.
func (g *Group) Close() error {
	g.mu.Lock()
	cancel, started := g.cancel, g.started
	g.mu.Unlock()
	if !started {
		return nil
	}
	if cancel != nil {
		cancel()
	}
	<-g.done
	return nil
}

// Epoch is a lease holder's fencing token: which holder of a partition's
// lease is the newer. A Group takes it when it creates the lease: the
// lease bucket's creation time, then the KV revision of the lease, which
// rises with every holder of one bucket (a bucket deleted and created
// again is newer as a whole). Compare with Before.
type Epoch struct {
	Bucket   time.Time // the lease bucket's creation time (its stream's)
	Revision uint64    // the KV revision at which the holder created the lease
}

// Before reports whether e is older than o.
func (e Epoch) Before(o Epoch) bool {
	if !e.Bucket.Equal(o.Bucket) {
		return e.Bucket.Before(o.Bucket)
	}
	return e.Revision < o.Revision
}

// IsZero reports whether e is the zero Epoch: no fence.
func (e Epoch) IsZero() bool { return e.Bucket.IsZero() && e.Revision == 0 }

func (e Epoch) String() string {
	return fmt.Sprintf("%d@%s", e.Revision, e.Bucket.UTC().Format(time.RFC3339Nano))
}

// Fencer is a Store a lease holder can fence, so that a holder that lost
// its lease without knowing it (paused past the TTL by a GC or a stopped
// VM, cut off from NATS) can no longer commit once a newer one took
// over: the lease alone cannot stop a process that is not running to
// notice it lost it. A Group fences every partition's Store it applies
// through, when the Store (a partition's, or the whole store) is a
// Fencer; PostgresStore is one. BoltStore is not: its data directory's
// lock allows one ebb server only, so there is no other holder to fence.
type Fencer interface {
	// Fence records e as the epoch of the store's newest holder and
	// returns a Store through which every Commit first checks, in its own
	// transaction, that no newer epoch has been recorded since: if one
	// has, the Commit is refused with an error wrapping ErrFenced and
	// nothing is written. Fence itself is refused (ErrFenced) when the
	// store records an epoch newer than e. Reads are not fenced.
	Fence(ctx context.Context, e Epoch) (Store, error)
}
