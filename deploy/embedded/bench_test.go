package embedded_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
)

// BenchmarkPublishSync measures JetStream publish throughput on a file-storage
// stream under each fsync policy: 256-byte messages, PublishAsync with up to
// 256 acks outstanding, over loopback TCP. Run it with a fixed count so both
// policies write the same amount:
//
//	go test -run x -bench PublishSync -benchtime 20000x ./deploy/embedded/
func BenchmarkPublishSync(b *testing.B) {
	const (
		msgSize = 256
		window  = 256
	)
	policies := []struct {
		name string
		sync embedded.SyncPolicy
	}{
		{name: "always", sync: embedded.SyncPolicy{}},
		{name: "interval=2m", sync: embedded.SyncPolicy{Interval: embedded.NATSDefaultSyncInterval}},
	}
	for _, p := range policies {
		b.Run(p.name, func(b *testing.B) {
			s := embeddedtest.MustStart(b, func(c *embedded.Config) { c.Sync = p.sync })
			var failed atomic.Int64
			js := embeddedtest.MustJetStream(b, embeddedtest.MustConnect(b, s),
				jetstream.WithPublishAsyncMaxPending(window),
				jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { failed.Add(1) }),
			)
			ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
			defer cancel()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
				Name:     "BENCH",
				Subjects: []string{"bench"},
				Storage:  jetstream.FileStorage,
			}); err != nil {
				b.Fatalf("create stream: %v", err)
			}
			payload := make([]byte, msgSize)

			b.SetBytes(msgSize)
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if _, err := js.PublishAsync("bench", payload, jetstream.WithStallWait(time.Minute)); err != nil {
					b.Fatalf("publish: %v", err)
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				b.Fatalf("acks outstanding: %d", js.PublishAsyncPending())
			}
			elapsed := time.Since(start)
			b.StopTimer()

			if n := failed.Load(); n > 0 {
				b.Fatalf("%d publishes failed", n)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
		})
	}
}
