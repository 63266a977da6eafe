package consumer

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
	"github.com/ebbsync/ebb/projection"
)

// TestReplica_RestoredReceiptsRepublishWritesAfterTheBackup: a replica whose
// RECEIPTS cursor is within a backup, with a write JetStream acked after
// the backup began (published, its receipt not read), meets restored
// EVENTS and RECEIPTS (ebb restore: EVENTS lacks the write; RECEIPTS
// carries ebb.restored_from_created/last_seq). The cursor resumes (no
// reset, no full resync), but every write awaiting a receipt is at risk
// and republished: found by review, when the restored cursor resumed with
// nothing republished and the acknowledged write never reached the server.
// The control (no metadata) is the plain reset.
func TestReplica_RestoredReceiptsRepublishWritesAfterTheBackup(t *testing.T) {
	t.Run("restored-metadata", func(t *testing.T) { testRestoredStrands(t, true) })
	t.Run("control-no-metadata", func(t *testing.T) { testRestoredStrands(t, false) })
}

func testRestoredStrands(t *testing.T, withMeta bool) {
	_, nc, js := mustServer(t)
	store, err := projection.OpenBolt(filepath.Join(t.TempDir(), "view.db"), projection.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	pr := startProjector(t, js, store)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "a", Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Attach(ctx, nc); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"x", "y"} {
		if _, err := r.Put(ctx, "lww", id, events.Fields{"n": json.RawMessage(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// The backup: RECEIPTS and EVENTS as they are now.
	rs, _ := js.Stream(ctx, events.StreamReceipts)
	rinfo, _ := rs.Info(ctx)
	es, _ := js.Stream(ctx, events.StreamEvents)
	einfo, _ := es.Info(ctx)
	// After the backup began: the projector is down (or lagging), the
	// write is acked by EVENTS, the replica goes offline.
	_ = pr.Close()
	late, err := r.Put(ctx, "lww", "late", events.Fields{"n": json.RawMessage(`2`)})
	_ = late
	if err != nil {
		t.Fatal(err)
	}
	var id string
	waitFor(t, 10*time.Second, "the late write published", func() bool {
		ps, _ := r.Log().Entries(ctx, producer.StatePublished)
		for _, e := range ps {
			if e.Event.Doc == "late" {
				id = e.Event.ID
				return true
			}
		}
		return false
	})
	r.Detach()
	// ebb restore: same sequences, new creation time, metadata naming the
	// backed-up stream; EVENTS lacks the late write.
	recreate := func(info *jetstream.StreamInfo, meta bool) {
		cfg := info.Config
		if err := js.DeleteStream(ctx, cfg.Name); err != nil {
			t.Fatal(err)
		}
		cfg.FirstSeq = info.State.LastSeq + 1
		if meta {
			cfg.Metadata = map[string]string{
				MetaRestoredCreated: info.Created.UTC().Format(time.RFC3339Nano),
				MetaRestoredLastSeq: strconv.FormatUint(info.State.LastSeq, 10),
			}
		}
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	// The recreated streams must have a later creation time than the old.
	waitFor(t, time.Second, "the clock past the old streams' creation", func() bool {
		return time.Now().After(einfo.Created.Add(time.Millisecond)) && time.Now().After(rinfo.Created.Add(time.Millisecond))
	})
	recreate(einfo, withMeta)
	recreate(rinfo, withMeta)

	if err := r.Attach(ctx, nc); err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	_, serr := r.Sync(sctx)
	scancel()
	es, _ = js.Stream(ctx, events.StreamEvents)
	ev, _, _ := r.Log().Entry(ctx, id)
	_, gerr := es.GetLastMsgForSubject(ctx, ev.Event.Subject())
	e, _, _ := r.Log().Entry(ctx, id)
	t.Logf("meta=%v: sync err %v; late write state %s; in restored EVENTS: %v", withMeta, serr, e.State, gerr == nil)
	if gerr != nil {
		t.Fatalf("the acknowledged write %s (state %s) is not in the restored EVENTS and was never republished: lost", id, e.State)
	}
}
