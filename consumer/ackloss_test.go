package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
	"github.com/ebbsync/ebb/projection"
)

// TestReplica_ReceiptLostWhileItsAckWas: a write's publish reached EVENTS
// but its ack never reached the replica (the server was killed, or the
// replica detached, with the publish in flight), so the write is still
// pending in its log. The projector applies it, a later write of another
// client replaces its change in CHANGES, and its receipt leaves RECEIPTS
// (a purge, the stream's age) before the replica reads it. When the replica
// attaches, its RECEIPTS start finds receipts gone, but the write is only
// pending, not published, so it is not taken for one at risk and the
// cursor moves past the gap; then its publisher sends it again, JetStream
// drops the copy inside its dedupe window and acks it as a duplicate, and
// no receipt will ever answer it: the write stayed published, Sync timed
// out, with no resync (the model test's seed 4332561506497849166: "1 writes
// still pending after its final sync (0 resyncs)"). The start that steps
// over the gap keeps such pending writes as suspects; one whose publish is
// then acked as a duplicate is like a republish JetStream dropped: it is
// settled, as of unknown fate unless a receipt or a change shows its fate.
func TestReplica_ReceiptLostWhileItsAckWas(t *testing.T) {
	_, nc, js := mustServer(t)
	store, err := projection.OpenBolt(filepath.Join(t.TempDir(), "view.db"), projection.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	pr := startProjector(t, js, store)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	// One publish at a time, and writes to other documents before the one
	// whose ack is lost: its publish comes after the RECEIPTS start has
	// checked the stream (it would be published by then otherwise, and
	// so taken for one at risk: the other order, which was handled).
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "a", Policies: testPolicies(),
		Publisher: producer.PublisherConfig{MaxInFlight: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const before = 50
	for i := range before {
		if _, err := r.Put(ctx, "lww", fmt.Sprintf("o%d", i), events.Fields{"n": json.RawMessage(`0`)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Put(ctx, "lww", "d", events.Fields{"n": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	es, err := r.Log().Entries(ctx, producer.StatePending)
	if err != nil || len(es) != before+1 {
		t.Fatalf("pending %d, %v: want %d", len(es), err, before+1)
	}
	mine := es[before].Event
	// The publish whose ack was lost.
	data, err := events.EncodeEvent(mine)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, mine.Subject(), data, jetstream.WithMsgID(mine.ID)); err != nil {
		t.Fatal(err)
	}
	// Another client's write replaces the first one's change (and
	// another, after the purge below).
	other := &events.Event{Schema: events.SchemaVersion, ID: events.NewIDSource(nil).New().String(), Tenant: "t1",
		Collection: "lww", Doc: "d", Op: events.OpPut, BaseVersion: 1, Fields: events.Fields{"n": json.RawMessage(`2`)},
		HLC: events.HLC{Wall: time.Now().UnixMilli() + 1}, Client: "b", Seq: 1}
	if data, err = events.EncodeEvent(other); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, other.Subject(), data, jetstream.WithMsgID(other.ID))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the projector to apply both", func() bool { return pr.Stats().Checkpoint >= ack.Sequence })
	rs, err := js.Stream(ctx, events.StreamReceipts)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the first write's receipt", func() bool {
		_, err := rs.GetLastMsgForSubject(ctx, mine.ReceiptSubject())
		return err == nil
	})
	if err := rs.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	// Receipts go on for the others: RECEIPTS holds some, all younger
	// than the first write's publish.
	later := *other
	later.ID, later.Seq, later.BaseVersion, later.HLC.Wall = events.NewIDSource(nil).New().String(), 2, 2, later.HLC.Wall+1
	if data, err = events.EncodeEvent(&later); err != nil {
		t.Fatal(err)
	}
	if ack, err = js.Publish(ctx, later.Subject(), data, jetstream.WithMsgID(later.ID)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the other client's later receipt", func() bool {
		_, err := rs.GetLastMsgForSubject(ctx, later.ReceiptSubject())
		return err == nil
	})

	if err := r.Attach(ctx, nc); err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
	defer scancel()
	if _, err := r.Sync(sctx); err != nil {
		t.Fatalf("sync: %v (status %+v)", err, r.Status())
	}
	if st := r.Status(); st.Pending != 0 {
		t.Fatalf("status %+v: the write is still pending", st)
	}
	settled, err := r.Log().Entries(ctx, producer.StateSettled)
	if err != nil || len(settled) != before+1 {
		t.Fatalf("settled %d, %v: want every write settled", len(settled), err)
	}
	rej, err := r.Rejections(ctx)
	if err != nil || len(rej) != 1 || rej[0].Event != mine.ID {
		t.Fatalf("rejections %+v, %v: want the write listed, its fate unknown", rej, err)
	}
}
