package producer

import (
	"fmt"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/producer/producertest"
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
		producertest.ParallelWrites(b, writers, func(g, i int) error {
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
		pages := pagesWritten(db)
		defer func() { b.ReportMetric(float64(pagesWritten(db)-pages)/float64(b.N), "pages/commit") }()
		producertest.ParallelWrites(b, writers, producertest.RawWrite(db))
	})
}

// pagesWritten is how many pages db's committed transactions wrote.
func pagesWritten(db *bbolt.DB) int64 {
	st := db.Stats()
	return st.TxStats.GetWrite()
}
