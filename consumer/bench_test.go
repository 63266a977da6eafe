package consumer

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/producer/producertest"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// benchLarge adds N=100,000 to the catch-up benchmarks; each size
// publishes its stream for every round the benchmark runs, which takes a
// while at that size.
var benchLarge = flag.Bool("bench.large", false, "also run the catch-up benchmarks at N=100000")

func benchSizes() []int {
	if *benchLarge {
		return []int{5_000, 20_000, 100_000}
	}
	return []int{5_000, 20_000}
}

// peakHeap samples the heap every few milliseconds until stop is called and
// returns the highest HeapAlloc seen.
func peakHeap() (stop func() uint64) {
	var (
		wg   sync.WaitGroup
		peak uint64
		done = make(chan struct{})
	)
	runtime.GC()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); wg.Wait(); return peak }
}

// BenchmarkCatchUp catches a fresh replica up from a CHANGES stream of N
// documents (Attach + Sync until the view holds every document).
func BenchmarkCatchUp(b *testing.B) { benchCatchUp(b, nil) }

// BenchmarkCatchUpEncrypted is BenchmarkCatchUp with the local store
// encrypted at rest (ReplicaConfig.Cipher).
func BenchmarkCatchUpEncrypted(b *testing.B) { benchCatchUp(b, atRestCipher(b, 1)) }

func benchCatchUp(b *testing.B, c *keys.Cipher) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			_, nc, js := mustServer(b)
			publishChanges(b, js, n, n)
			b.ResetTimer()
			stop := peakHeap()
			for range b.N {
				r := catchUp(b, nc, n, c)
				b.StopTimer()
				r.Close()
				b.StartTimer()
			}
			peak := stop()
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "docs/s")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}

// catchUp opens a fresh replica on nc and syncs it with a stream of n
// documents; the caller closes it.
func catchUp(tb testing.TB, nc *nats.Conn, n int, c *keys.Cipher) *Replica {
	tb.Helper()
	r, err := OpenReplica(tb.Context(), ReplicaConfig{Dir: tb.TempDir(), Tenant: "t1", Conn: nc, Cipher: c})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(tb.Context(), time.Minute)
	_, err = r.Sync(ctx)
	cancel()
	// Not SyncReport.Pulled: the follower may apply some changes between
	// Attach and the start of Sync.
	if st := r.Status(); err != nil || st.Changes.Applied != uint64(n) {
		tb.Fatalf("sync: %+v %v", st.Changes, err)
	}
	return r
}

// BenchmarkRawOrdered reads the same stream with a bare ordered consumer and
// does nothing with the messages: the ceiling for BenchmarkCatchUp.
func BenchmarkRawOrdered(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			_, _, js := mustServer(b)
			publishChanges(b, js, n, n)
			b.ResetTimer()
			stop := peakHeap()
			for range b.N {
				readRaw(b, js, n)
			}
			peak := stop()
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "docs/s")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}

// readRaw reads the n documents of the stream with a bare ordered
// consumer, with the pull buffer the replica's CHANGES follower uses.
func readRaw(tb testing.TB, js jetstream.JetStream, n int) {
	tb.Helper()
	cons, err := js.OrderedConsumer(tb.Context(), events.StreamChanges,
		jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.TenantChanges("t1")}})
	if err != nil {
		tb.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(DefaultCatchUpBatch))
	if err != nil {
		tb.Fatal(err)
	}
	defer it.Stop()
	for range n {
		if _, err := it.Next(); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkCatchUpRatio alternates one raw read (as BenchmarkRawOrdered)
// and one catch-up (as BenchmarkCatchUp) of the same stream on the same
// server, and reports catch-up's throughput as a percentage of raw's. Run
// this way, both see the same machine load, which on a shared machine
// moves the ratio of the two separate benchmarks by tens of points.
func BenchmarkCatchUpRatio(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			_, nc, js := mustServer(b)
			publishChanges(b, js, n, n)
			b.ResetTimer()
			var raw, cu time.Duration
			for range b.N {
				t0 := time.Now()
				readRaw(b, js, n)
				t1 := time.Now()
				r := catchUp(b, nc, n, nil)
				cu += time.Since(t1)
				raw += t1.Sub(t0)
				b.StopTimer()
				r.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(n)*float64(b.N)/cu.Seconds(), "catchup-docs/s")
			b.ReportMetric(float64(n)*float64(b.N)/raw.Seconds(), "raw-docs/s")
			b.ReportMetric(100*raw.Seconds()/cu.Seconds(), "%-of-raw")
		})
	}
}

// benchUnsettled is the backlog of the local-store benchmarks (issue 15:
// 100k unsettled writes).
const benchUnsettled = 100_000

// backlogBenchReplica opens an offline replica with a document "c"/"target"
// and u unsettled writes over 4096 other documents, appended with
// AppendBatch in batches of 1000.
func backlogBenchReplica(b *testing.B, u int) *Replica {
	b.Helper()
	r, err := OpenReplica(b.Context(), ReplicaConfig{Dir: b.TempDir(), Tenant: "t1"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() })
	if _, err := r.Put(b.Context(), "c", "target", events.Fields{"v": json.RawMessage(`1`)}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < u; i += 1000 {
		ws := make([]producer.Write, 0, 1000)
		for j := i; j < min(u, i+1000); j++ {
			ws = append(ws, producer.Write{Collection: "c", Doc: fmt.Sprintf("doc-%05d", j%4096), Op: events.OpPut,
				Fields: events.Fields{"n": json.RawMessage(fmt.Sprint(j))}})
		}
		if _, err := r.Log().AppendBatch(b.Context(), ws); err != nil {
			b.Fatal(err)
		}
	}
	return r
}

// BenchmarkReplicaGetBacklog: Get of one document with none and with
// 100k unsettled writes to other documents (target: at most 2x).
func BenchmarkReplicaGetBacklog(b *testing.B) {
	for _, u := range []int{0, benchUnsettled} {
		r := backlogBenchReplica(b, u)
		b.Run(fmt.Sprintf("unsettled=%d", u), func(b *testing.B) {
			for b.Loop() {
				if _, err := r.Get(b.Context(), "c", "target"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReplicaPutBacklog: Put of a new document with none and with
// 100k unsettled writes (target: at most 2x).
func BenchmarkReplicaPutBacklog(b *testing.B) {
	for _, u := range []int{0, benchUnsettled} {
		r := backlogBenchReplica(b, u)
		b.Run(fmt.Sprintf("unsettled=%d", u), func(b *testing.B) {
			i := 0
			for b.Loop() {
				i++
				if _, err := r.Put(b.Context(), "c", fmt.Sprint("new-", i), events.Fields{"v": json.RawMessage(`1`)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLocalWrites: 8 goroutines writing, group-committed through
// Replica.Put, against 8 goroutines each committing one bbolt transaction
// (one fsync) per write on the same disk; writes/s is the metric.
func BenchmarkLocalWrites(b *testing.B) {
	const writers = 8
	b.Run("group-commit", func(b *testing.B) {
		r, err := OpenReplica(b.Context(), ReplicaConfig{Dir: b.TempDir(), Tenant: "t1"})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		producertest.ParallelWrites(b, writers, func(g, i int) error {
			_, err := r.Put(b.Context(), "c", fmt.Sprintf("w%d-%d", g, i), events.Fields{"v": json.RawMessage(`1`)})
			return err
		})
	})
	b.Run("fsync-per-write", func(b *testing.B) {
		db, err := bbolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		producertest.ParallelWrites(b, writers, producertest.RawWrite(db))
	})
}
