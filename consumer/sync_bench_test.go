package consumer

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
	"github.com/ebbsync/ebb/projection"
)

// syncBenchPayload is the server's MaxPayload in BenchmarkReplicaSyncBacklog:
// a backlog write carries a field larger than it, so its publish is refused
// for good (nats.ErrMaxPayload) and it stays unsettled as failed.
const syncBenchPayload = 2048

// BenchmarkReplicaSyncBacklog: one Put and one Sync (pushed, answered by
// the projector, caught up) on an attached replica whose log holds none,
// and 100k, unsettled writes that Sync does not wait for (refused for
// good: failed, never settled). What a Sync costs must not grow with the
// writes it does not wait for (issue 15: Sync's id scan, wait and gap
// checks read the whole backlog); target at most 2x.
func BenchmarkReplicaSyncBacklog(b *testing.B) {
	for _, u := range []int{0, benchUnsettled} {
		b.Run(fmt.Sprintf("unsettled=%d", u), func(b *testing.B) {
			s := embeddedtest.MustStart(b, fastSync, func(c *embedded.Config) { c.MaxPayload = syncBenchPayload })
			nc := embeddedtest.MustConnect(b, s)
			js := embeddedtest.MustJetStream(b, nc)
			if err := events.EnsureStreams(b.Context(), js, events.StreamOptions{}); err != nil {
				b.Fatal(err)
			}
			mustProjector(b, js, projection.Policies{})
			r, err := OpenReplica(b.Context(), ReplicaConfig{Dir: b.TempDir(), Tenant: "t1"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = r.Close() })
			big := json.RawMessage(`"` + strings.Repeat("x", syncBenchPayload) + `"`)
			for i := 0; i < u; i += 1000 {
				ws := make([]producer.Write, 0, 1000)
				for j := i; j < min(u, i+1000); j++ {
					ws = append(ws, producer.Write{Collection: "c", Doc: fmt.Sprintf("doc-%05d", j%4096), Op: events.OpPut,
						Fields: events.Fields{"big": big}})
				}
				if _, err := r.Log().AppendBatch(b.Context(), ws); err != nil {
					b.Fatal(err)
				}
			}
			if err := r.Attach(b.Context(), nc); err != nil {
				b.Fatal(err)
			}
			embeddedtest.WaitFor(b, 10*time.Minute, "the backlog refused for good", func() bool {
				es, err := r.Log().Entries(b.Context(), producer.StateFailed)
				return err == nil && len(es) == u
			})
			if _, err := r.Sync(b.Context()); err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				i++
				if _, err := r.Put(b.Context(), "c", fmt.Sprint("new-", i), events.Fields{"v": json.RawMessage(`1`)}); err != nil {
					b.Fatal(err)
				}
				if _, err := r.Sync(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
