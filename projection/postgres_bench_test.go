package projection_test

import (
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/pgtest"
	"github.com/ebbsync/ebb/projection"
)

// BenchmarkProjectorPostgres is BenchmarkProjector's workload with the
// view on PostgreSQL (a throwaway server on loopback, fsync and
// synchronous_commit on) instead of bbolt.
func BenchmarkProjectorPostgres(b *testing.B) {
	srv := pgtest.MustStart(b)
	e := benchEnv(b, b.N)
	store := mustOpenPostgres(b, srv, pgtest.Schema(b))
	b.ResetTimer()
	start := time.Now()
	p := startProjector(b, e.js, store, projection.Config{})
	waitFor(b, 5*time.Minute, "projector", func() bool { return p.Stats().Checkpoint >= uint64(b.N) })
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
