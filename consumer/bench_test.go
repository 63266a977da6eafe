package consumer

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
)

var benchSizes = []int{5_000, 20_000}

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
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			_, nc, js := mustServer(b)
			publishChanges(b, js, n, n)
			b.ResetTimer()
			stop := peakHeap()
			for range b.N {
				r, err := OpenReplica(b.Context(), ReplicaConfig{Dir: b.TempDir(), Tenant: "t1", Conn: nc, Cipher: c})
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
				_, err = r.Sync(ctx)
				cancel()
				// Not SyncReport.Pulled: the follower may apply some changes
				// between Attach and the start of Sync.
				if st := r.Status(); err != nil || st.Changes.Applied != uint64(n) {
					b.Fatalf("sync: %+v %v", st.Changes, err)
				}
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

// BenchmarkRawOrdered reads the same stream with a bare ordered consumer and
// does nothing with the messages: the ceiling for BenchmarkCatchUp.
func BenchmarkRawOrdered(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			_, _, js := mustServer(b)
			publishChanges(b, js, n, n)
			b.ResetTimer()
			stop := peakHeap()
			for range b.N {
				cons, err := js.OrderedConsumer(b.Context(), events.StreamChanges,
					jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.TenantChanges("t1")}})
				if err != nil {
					b.Fatal(err)
				}
				it, err := cons.Messages(jetstream.PullMaxMessages(DefaultCatchUpBatch))
				if err != nil {
					b.Fatal(err)
				}
				for got := 0; got < n; got++ {
					if _, err := it.Next(); err != nil {
						b.Fatal(err)
					}
				}
				it.Stop()
			}
			peak := stop()
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "docs/s")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}
