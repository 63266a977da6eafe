package producer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// backlogDocs is how many documents the backlog benchmark's writes go
// round: more than the window, so one-in-flight-per-document does not bound
// the drain (as in `ebb bench`'s push workload).
const backlogDocs = 4096

// BenchmarkPublisherBacklog drains a backlog of b.N writes appended
// offline (untimed) with a Publisher (MaxInFlight 4096), timed from Start
// until Flush returns, and, on the same server in the same run, publishes
// the same encoded events with PublishMsgAsync into a stream configured as
// EVENTS: msgs/s of each and their ratio. It is `ebb bench`'s push row in
// one process, for profiling the publisher alone:
//
//	go test -run XXX -bench 'PublisherBacklog/sync=interval' -benchtime 20000x -cpuprofile cpu.out ./producer
func BenchmarkPublisherBacklog(b *testing.B) {
	for _, sc := range benchSyncs {
		b.Run(sc.name, func(b *testing.B) {
			nc, js := benchServer(b, sc.sync)
			raw := events.Streams(events.StreamOptions{})[0]
			for _, c := range events.Streams(events.StreamOptions{}) {
				if c.Name == events.StreamEvents {
					raw = c
				}
			}
			raw.Name, raw.Subjects = "BENCH_RAW", []string{"benchraw.>"}
			if _, err := js.CreateOrUpdateStream(b.Context(), raw); err != nil {
				b.Fatal(err)
			}
			l := tempLog(b)
			ws := make([]Write, b.N)
			for i := range ws {
				ws[i] = Write{Collection: "bench", Doc: fmt.Sprintf("doc-%05d", i%backlogDocs), Op: events.OpPut,
					Fields: benchWrite(i).Fields}
			}
			evs, err := l.AppendBatch(b.Context(), ws)
			if err != nil {
				b.Fatal(err)
			}
			ids := events.NewIDSource(nil)
			msgs := make([]*nats.Msg, len(evs))
			for i, e := range evs {
				data, _ := events.EncodeEvent(e)
				msgs[i] = &nats.Msg{Subject: "benchraw." + e.Subject(), Data: data,
					Header: nats.Header{jetstream.MsgIDHeader: []string{ids.New().String()}}}
			}
			b.ResetTimer()

			start := time.Now()
			for _, m := range msgs {
				if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(5 * time.Minute):
				b.Fatal("acks missing")
			}
			rawRate := float64(b.N) / time.Since(start).Seconds()

			start = time.Now()
			p := mustPublisher(b, l, js, nc, PublisherConfig{MaxInFlight: benchWindow})
			ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
			defer cancel()
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			ebbRate := float64(b.N) / time.Since(start).Seconds()
			b.StopTimer()
			b.ReportMetric(ebbRate, "ebb-msgs/s")
			b.ReportMetric(rawRate, "raw-msgs/s")
			b.ReportMetric(ebbRate/rawRate, "ratio")
		})
	}
}
