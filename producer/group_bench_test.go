package producer

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"go.etcd.io/bbolt"
)

// BenchmarkLogAppendConcurrent: 8 goroutines appending one write per call,
// group-committed, against 8 goroutines each committing one bbolt
// transaction (one fsync) per write on the same disk. Reports writes/s and,
// for the log, writes per commit.
func BenchmarkLogAppendConcurrent(b *testing.B) {
	const writers = 8
	b.Run("group-commit", func(b *testing.B) {
		l := tempLog(b)
		before, pages := l.commits.Load(), pagesWritten(l.db)
		parallelWrites(b, writers, func(g, i int) error {
			_, err := l.Append(b.Context(), put("c", fmt.Sprintf("w%d-%d", g, i), i))
			return err
		})
		if c := l.commits.Load() - before; c > 0 {
			b.ReportMetric(float64(b.N)/float64(c), "writes/commit")
			b.ReportMetric(float64(pagesWritten(l.db)-pages)/float64(c), "pages/commit")
		}
	})
	b.Run("fsync-per-write", func(b *testing.B) {
		db, err := bbolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		v := make([]byte, 256)
		pages := pagesWritten(db)
		defer func() { b.ReportMetric(float64(pagesWritten(db)-pages)/float64(b.N), "pages/commit") }()
		parallelWrites(b, writers, func(g, i int) error {
			return db.Update(func(tx *bbolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists([]byte("raw"))
				if err != nil {
					return err
				}
				return bk.Put(fmt.Appendf(nil, "w%d-%d", g, i), v)
			})
		})
	})
}

// parallelWrites calls write b.N times over n goroutines and reports
// writes/s.
func parallelWrites(b *testing.B, n int, write func(g, i int) error) {
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

// pagesWritten is how many pages db's committed transactions wrote.
func pagesWritten(db *bbolt.DB) int64 {
	st := db.Stats()
	return st.TxStats.GetWrite()
}
