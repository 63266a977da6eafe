package projection_test

import (
	"context"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ebbsync/ebb/projection"
)

// storeOp is one write the projector made to its store: a Commit (batch
// set) or a RemoveOutbox (keys).
type storeOp struct {
	batch *projection.Batch
	keys  []uint64
}

// recordingStore is a BoltStore that keeps a copy of every write the
// projector makes, so that the same writes can be replayed into another
// store (benchmarkCommitReplay).
type recordingStore struct {
	*projection.BoltStore
	mu  sync.Mutex
	ops []storeOp
}

func (r *recordingStore) Commit(ctx context.Context, b *projection.Batch) error {
	c := *b
	c.Docs = slices.Clone(b.Docs)
	c.Conflicts = slices.Clone(b.Conflicts)
	c.Outbox = slices.Clone(b.Outbox)
	c.Published = slices.Clone(b.Published)
	c.SeqEvents = slices.Clone(b.SeqEvents)
	c.HighWater = maps.Clone(b.HighWater)
	c.ForgetSeqEvents = maps.Clone(b.ForgetSeqEvents)
	if err := r.BoltStore.Commit(ctx, b); err != nil {
		return err
	}
	r.mu.Lock()
	r.ops = append(r.ops, storeOp{batch: &c})
	r.mu.Unlock()
	return nil
}

func (r *recordingStore) RemoveOutbox(ctx context.Context, keys []uint64) error {
	if err := r.BoltStore.RemoveOutbox(ctx, keys); err != nil {
		return err
	}
	r.mu.Lock()
	r.ops = append(r.ops, storeOp{keys: slices.Clone(keys)})
	r.mu.Unlock()
	return nil
}

// recordProjector runs the projector over benchEnv's n events into a
// recording store and returns what it wrote, and the store it wrote it to.
func recordProjector(b *testing.B, n int, opts projection.BoltOptions) ([]storeOp, *projection.BoltStore) {
	e := benchEnv(b, n)
	bs, err := projection.OpenBolt(filepath.Join(b.TempDir(), "recorded.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bs.Close() })
	rs := &recordingStore{BoltStore: bs}
	p, err := projection.New(e.js, rs, projection.Config{})
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	waitFor(b, 5*time.Minute, "projector", func() bool { return p.Stats().Checkpoint >= uint64(n) })
	// Let the last outbox entries go before the recording stops.
	waitFor(b, time.Minute, "outbox published", func() bool {
		out, err := bs.Outbox(context.Background(), 1)
		return err == nil && len(out) == 0
	})
	if err := p.Close(); err != nil {
		b.Fatal(err)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.ops, bs
}

// replay applies ops to s in order.
func replay(b *testing.B, s *projection.BoltStore, ops []storeOp) {
	ctx := context.Background()
	for _, op := range ops {
		if op.batch == nil {
			if err := s.RemoveOutbox(ctx, op.keys); err != nil {
				b.Fatal(err)
			}
			continue
		}
		c := *op.batch
		c.Outbox = slices.Clone(op.batch.Outbox) // Commit sets the keys
		if err := s.Commit(ctx, &c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBoltCommitReplay replays the store writes of BenchmarkProjector
// (20,000 events) into a fresh BoltStore per iteration: the cost of
// BoltStore.Commit (transaction building and bbolt's commit, without the
// fsync) per event, apart from deciding, NATS and the disk. The replayed
// view must equal the projector's.
func BenchmarkBoltCommitReplay(b *testing.B) { benchCommitReplay(b, projection.BoltOptions{}) }

// BenchmarkBoltCommitReplayEncrypted is BenchmarkBoltCommitReplay on a
// store encrypted at rest.
func BenchmarkBoltCommitReplayEncrypted(b *testing.B) {
	benchCommitReplay(b, projection.BoltOptions{Cipher: viewCipher(b, 1)})
}

func benchCommitReplay(b *testing.B, opts projection.BoltOptions) {
	const n = 20000
	ops, recorded := recordProjector(b, n, opts)
	dir := b.TempDir()
	opts.NoSync = true
	b.ResetTimer()
	var cpu time.Duration // the process's, while replaying
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		s, err := projection.OpenBolt(filepath.Join(dir, "replay"+string(rune('a'+i%26))+".db"), opts)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c0 := processCPU(b)
		replay(b, s, ops)
		cpu += processCPU(b) - c0
		b.StopTimer()
		if i == 1 {
			if _, err := projection.Compare(context.Background(), recorded, s); err != nil {
				b.Fatalf("the replayed view differs from the projector's: %v", err)
			}
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
	// The process's CPU time is steadier than the wall clock on a shared
	// machine (it counts the garbage collector too).
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*n), "cpu-ns/event")
}

// processCPU returns the user and system CPU time of the process so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
