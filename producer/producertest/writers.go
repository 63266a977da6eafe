// Package producertest holds what the benchmarks of local writes share:
// writers spread over goroutines, and the raw baseline they are measured
// against, one bbolt transaction (one fsync) per write.
package producertest

import (
	"fmt"
	"sync"
	"testing"

	"go.etcd.io/bbolt"
)

// ParallelWrites calls write b.N times, spread over n goroutines (write
// gets the goroutine and the write's index), and reports writes/s.
func ParallelWrites(b *testing.B, n int, write func(g, i int) error) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	b.ResetTimer()
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < b.N; i += n {
				if err := write(g, i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

// RawWrite returns a write for ParallelWrites that commits 256 bytes in
// a transaction of its own on db: the disk's one-fsync-per-write rate.
func RawWrite(db *bbolt.DB) func(g, i int) error {
	v := make([]byte, 256)
	return func(g, i int) error {
		return db.Update(func(tx *bbolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("raw"))
			if err != nil {
				return err
			}
			return bk.Put(fmt.Appendf(nil, "w%d-%d", g, i), v)
		})
	}
}
