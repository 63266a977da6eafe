package producer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBatch_StressWithAppendsFailuresAndCancels: appends, Batches (some failing, some cancelled) and
// Updates from many goroutines. Every Batch that returned nil is stored
// and its OnCommit ran exactly once; every one that failed stored nothing
// and its OnCommit never ran.
func TestBatch_StressWithAppendsFailuresAndCancels(t *testing.T) {
	l := tempLog(t)
	boom := errors.New("boom")
	type rec struct {
		key      string
		err      error
		commits  atomic.Int32
		runs     atomic.Int32
		wantFail bool
	}
	var mu sync.Mutex
	var recs []*rec
	var wg sync.WaitGroup
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for n := range 300 {
				switch rng.IntN(4) {
				case 0:
					w := put("c", fmt.Sprint("d", rng.IntN(5)), n)
					if rng.IntN(10) == 0 {
						w.Collection = "" // invalid: fails its own call
					}
					_, _ = l.Append(context.Background(), w)
				default:
					r := &rec{key: fmt.Sprintf("%d-%d", g, n), wantFail: rng.IntN(8) == 0}
					ctx, cancel := context.WithCancel(context.Background())
					if rng.IntN(6) == 0 {
						d := time.Duration(rng.IntN(200)) * time.Microsecond
						time.AfterFunc(d, cancel) // a caller giving up at a random moment
					}
					r.err = l.Batch(ctx, func(tx *Tx) error {
						r.runs.Add(1)
						b, err := tx.CreateBucketIfNotExists(testBucket)
						if err != nil {
							return err
						}
						if err := b.Put([]byte(r.key), []byte("v")); err != nil {
							return err
						}
						tx.OnCommit(func() { r.commits.Add(1) })
						if r.wantFail {
							return boom
						}
						return nil
					})
					cancel()
					mu.Lock()
					recs = append(recs, r)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	stored := storedKeys(t, l)
	var ok, failed, cancelled int
	for _, r := range recs {
		switch {
		case r.err == nil:
			ok++
			if !stored[r.key] || r.commits.Load() != 1 || r.wantFail {
				t.Errorf("batch %s returned nil: stored %v, OnCommit ran %d times, wantFail %v", r.key, stored[r.key], r.commits.Load(), r.wantFail)
			}
		case errors.Is(r.err, context.Canceled):
			cancelled++
			if stored[r.key] || r.commits.Load() != 0 || r.runs.Load() != 0 {
				t.Errorf("batch %s cancelled: stored %v, OnCommit %d, runs %d", r.key, stored[r.key], r.commits.Load(), r.runs.Load())
			}
		default:
			failed++
			if stored[r.key] || r.commits.Load() != 0 || !errors.Is(r.err, boom) {
				t.Errorf("batch %s failed (%v): stored %v, OnCommit %d", r.key, r.err, stored[r.key], r.commits.Load())
			}
		}
	}
	c := l.Counts()
	es, err := l.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if c.Pending != len(es) || c.Unsettled != len(es) {
		t.Errorf("counts %+v, %d entries", c, len(es))
	}
	t.Logf("%d ok, %d failed, %d cancelled, %d entries, stats %+v", ok, failed, cancelled, len(es), l.Stats())
}
