package producer

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
)

// benchBatch is how many writes the producer benchmark appends per
// AppendBatch (one bbolt transaction, one fsync); benchWindow is the
// publisher's MaxInFlight there.
const (
	benchBatch  = 1024
	benchWindow = 4096
)

// benchWrite is a put whose encoded event is about 256 bytes.
func benchWrite(i int) Write {
	return Write{Collection: "bench", Doc: "doc" + string(rune('a'+i%16)), Op: events.OpPut,
		Fields: events.Fields{"v": json.RawMessage(`"` + strings.Repeat("x", 54) + `"`)}}
}

// benchServer starts an embedded server (fsync per write, the embedded
// default, or the given sync policy) with the ebb streams.
func benchServer(b *testing.B, sync embedded.SyncPolicy) (*nats.Conn, jetstream.JetStream) {
	s := embeddedtest.MustStart(b, embeddedtest.InProcess(), func(c *embedded.Config) { c.Sync = sync })
	nc := embeddedtest.MustConnect(b, s)
	js := embeddedtest.MustJetStream(b, nc)
	mustEnsureStreams(b, js, events.StreamOptions{})
	return nc, js
}

var benchSyncs = []struct {
	name string
	sync embedded.SyncPolicy
}{
	{"sync=always", embedded.SyncPolicy{}},
	{"sync=interval", embedded.SyncPolicy{Interval: embedded.NATSDefaultSyncInterval}},
}

// BenchmarkProducer appends b.N events of ~256 B with AppendBatch (1024 per
// batch, one fsync per batch) while a Publisher (MaxInFlight 4096) drains
// them, and stops the clock when Flush returns: every event durable in the
// log and acknowledged by JetStream.
func BenchmarkProducer(b *testing.B) { benchProducer(b, nil) }

// BenchmarkProducerEncrypted is BenchmarkProducer with the log encrypted at
// rest (LogConfig.Cipher).
func BenchmarkProducerEncrypted(b *testing.B) { benchProducer(b, testCipher(b, 1)) }

func benchProducer(b *testing.B, c *keys.Cipher) {
	for _, sc := range benchSyncs {
		b.Run(sc.name, func(b *testing.B) {
			nc, js := benchServer(b, sc.sync)
			l := tempLog(b, withCipher(c))
			p := mustPublisher(b, l, js, nc, PublisherConfig{MaxInFlight: benchWindow})
			ws := make([]Write, benchBatch)
			for i := range ws {
				ws[i] = benchWrite(i)
			}
			e, _ := events.EncodeEvent(mustAppend(b, l, ws[0])[0])
			if err := p.Flush(b.Context()); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(e)))
			b.ResetTimer()
			start := time.Now()
			for n := 0; n < b.N; n += benchBatch {
				if _, err := l.AppendBatch(b.Context(), ws[:min(benchBatch, b.N-n)]); err != nil {
					b.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
			defer cancel()
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkRawPublishAsync publishes the same payloads (a ~256 B event, the
// same subjects, a Nats-Msg-Id each) with js.PublishMsgAsync (the client's
// default window of 4000 unacknowledged) and stops the clock when
// PublishAsyncComplete fires: the ceiling for BenchmarkProducer.
func BenchmarkRawPublishAsync(b *testing.B) {
	for _, sc := range benchSyncs {
		b.Run(sc.name, func(b *testing.B) {
			_, js := benchServer(b, sc.sync)
			l := tempLog(b)
			var msgs []*nats.Msg
			for i := range benchBatch {
				e := mustAppend(b, l, benchWrite(i))[0]
				data, _ := events.EncodeEvent(e)
				msgs = append(msgs, &nats.Msg{Subject: e.Subject(), Data: data})
			}
			ids := events.NewIDSource(nil)
			b.SetBytes(int64(len(msgs[0].Data)))
			b.ResetTimer()
			start := time.Now()
			for n := range b.N {
				m := msgs[n%benchBatch]
				m = &nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{jetstream.MsgIDHeader: []string{ids.New().String()}}}
				if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(5 * time.Minute):
				b.Fatal("acks missing")
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
