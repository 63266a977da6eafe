package projection_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// benchEnv runs JetStream with nats-server's default background fsync, the
// same for both benchmarks, and publishes n events of about 256 bytes: a
// third create new documents, the rest update existing ones.
func benchEnv(b *testing.B, n int) *env {
	e := newEnv(b, func(c *embedded.Config) { c.Sync.Interval = embedded.NATSDefaultSyncInterval })
	w := newWriter("acme", "bench", 0)
	pad := strings.Repeat("x", 120)
	docs := 0
	for i := 0; i < n; i++ {
		var ev *events.Event
		if docs == 0 || i%3 == 0 {
			ev = w.event("notes", fmt.Sprintf("doc-%d", docs), events.OpPut, 0, map[string]any{"title": i, "body": pad})
			docs++
		} else {
			ev = w.event("notes", fmt.Sprintf("doc-%d", i%docs), events.OpPatch, 0, map[string]any{"title": i, "body": pad})
			ev.BaseVersion = 1 // stale for most: exercises the policy path
		}
		if _, err := e.js.PublishMsgAsync(eventMsg(b, ev), jetstream.WithMsgID(ev.ID)); err != nil {
			b.Fatal(err)
		}
		if i%500 == 499 {
			<-e.js.PublishAsyncComplete()
		}
	}
	<-e.js.PublishAsyncComplete()
	return e
}

func BenchmarkProjector(b *testing.B) { benchProjector(b, projection.BoltOptions{}) }

// BenchmarkProjectorEncrypted is BenchmarkProjector with the view store
// encrypted at rest (BoltOptions.Cipher).
func BenchmarkProjectorEncrypted(b *testing.B) {
	benchProjector(b, projection.BoltOptions{Cipher: viewCipher(b, 1)})
}

func benchProjector(b *testing.B, opts projection.BoltOptions) {
	e := benchEnv(b, b.N)
	store, err := projection.OpenBolt(filepath.Join(b.TempDir(), "view.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	b.ResetTimer()
	start := time.Now()
	p := startProjector(b, e.js, store, projection.Config{})
	waitFor(b, 5*time.Minute, "projector", func() bool { return p.Stats().Checkpoint >= uint64(b.N) })
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	b.ReportMetric(float64(b.N)/float64(p.Stats().Batches), "events/batch")
}

func BenchmarkRawConsume(b *testing.B) {
	e := benchEnv(b, b.N)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	cons, err := e.js.CreateOrUpdateConsumer(ctx, events.StreamEvents, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	got := 0
	for got < b.N {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			b.Fatal(err)
		}
		for m := range batch.Messages() {
			if err := m.Ack(); err != nil {
				b.Fatal(err)
			}
			got++
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
