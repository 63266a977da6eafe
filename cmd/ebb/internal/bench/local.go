package bench

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/events"
)

// localWriters is how many goroutines write in workload local-writes.
const localWriters = 8

// runLocalWrites: Sizes.Local Replica.Put calls on distinct documents from
// 8 goroutines on an offline replica (group-committed: the calls share
// transactions and fsyncs), against 8 goroutines committing one bbolt
// transaction per write, each holding one write of the same size, in a
// file in the same directory: the disk's one-fsync-per-write rate. No
// server: the row is about the local store.
func runLocalWrites(ctx context.Context, r *runner) ([]Result, error) {
	n := max(localWriters, r.sizes.Local)
	e, w, ratio, err := r.pair(ctx, fmt.Sprintf("local-writes: %d writes from %d goroutines", n, localWriters),
		func(ctx context.Context, _ int) (float64, error) { return r.rawLocalWrites(ctx, n) },
		func(ctx context.Context, _ int) (float64, error) { return r.ebbLocalWrites(ctx, n) })
	if err != nil {
		return nil, err
	}
	return []Result{r.row(Result{Key: "local-writes-x8", Workload: fmt.Sprintf("local writes, %d goroutines, group commit", localWriters),
		Unit: "writes/s", Ebb: e, Raw: w, Ratio: ratio, Target: Target{AtLeast, 10},
		Baseline: "one bbolt transaction (one fsync) per write from as many goroutines, same disk"})}, nil
}

// ebbLocalWrites returns the writes/s of n Puts over localWriters
// goroutines on a fresh offline replica.
func (r *runner) ebbLocalWrites(ctx context.Context, n int) (perSec float64, err error) {
	dir, err := r.tempDir()
	if err != nil {
		return 0, err
	}
	rep, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: dir, Tenant: "bench-local", Logger: r.log})
	if err != nil {
		return 0, fmt.Errorf("open replica: %w", err)
	}
	defer func() { err = errors.Join(err, rep.Close()) }()
	return parallel(n, func(g, i int) error {
		_, err := rep.Put(ctx, benchCollection, fmt.Sprintf("w%d-%d", g, i), events.Fields{"v": pad})
		return err
	})
}

// rawLocalWrites returns the writes/s of n one-write bbolt transactions
// over localWriters goroutines.
func (r *runner) rawLocalWrites(ctx context.Context, n int) (perSec float64, err error) {
	dir, err := r.tempDir()
	if err != nil {
		return 0, err
	}
	db, err := bbolt.Open(filepath.Join(dir, "raw.db"), 0o600, nil)
	if err != nil {
		return 0, fmt.Errorf("open raw store: %w", err)
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	name := []byte("raw")
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucketIfNotExists(name); return err }); err != nil {
		return 0, fmt.Errorf("create raw bucket: %w", err)
	}
	v := make([]byte, 256) // about one encoded event
	return parallel(n, func(g, i int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(name).Put(fmt.Appendf(nil, "w%d-%d", g, i), v) })
	})
}

// parallel calls write n times over localWriters goroutines and returns
// the calls per second.
func parallel(n int, write func(g, i int) error) (float64, error) {
	var wg sync.WaitGroup
	errs := make([]error, localWriters)
	start := time.Now()
	for g := range localWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += localWriters {
				if err := write(g, i); err != nil {
					errs[g] = fmt.Errorf("write %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return rate(n, time.Since(start)), nil
}
