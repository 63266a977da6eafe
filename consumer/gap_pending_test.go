package consumer

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// TestReplica_ReceiptLostWhileWritePending: a write's publish reached
// EVENTS but its ack did not reach the log (the replica detached or was
// killed in between), so the write is still pending; the projector
// answered it and that receipt was removed from RECEIPTS (a purge, its max
// age) before the replica came back. The RECEIPTS start found the gap but
// judged only published writes at risk, so it moved the cursor past the
// lost receipt without a word; the publisher then sent the write again,
// JetStream dropped it as a duplicate inside EVENTS' dedupe window and
// acknowledged it, and no receipt was ever going to answer it: the write
// stayed published forever and Sync never completed (issue 11 scenario 4,
// model seed 15238196025833217317: r3's patch of manual/d1, written just
// before a detach). A write still pending at a gap is at risk too: it is
// kept as a suspect, and the publisher's duplicate ack (Entry.Duplicate)
// settles it as of unknown fate.
func TestReplica_ReceiptLostWhileWritePending(t *testing.T) {
	_, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "a", GapCheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Put(ctx, "c", "d", events.Fields{"n": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	es, err := r.Log().Entries(ctx, producer.StatePending)
	if err != nil || len(es) != 1 {
		t.Fatalf("pending entries %+v, %v: want the one write", es, err)
	}
	e := es[0].Event

	// The publish whose ack was lost: EVENTS holds the write; the log does
	// not know it. The projector rejected it; its receipt is purged.
	b, err := events.EncodeEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, e.Subject(), b, jetstream.WithMsgID(e.ID)); err != nil {
		t.Fatal(err)
	}
	publishReceipt(t, js, e, events.OutcomeRejected, 0)
	rs, err := js.Stream(ctx, events.StreamReceipts)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Purge(ctx); err != nil {
		t.Fatal(err)
	}

	// The start must see the write pending (otherwise the publisher may
	// win the race and the write is judged as a published one).
	evs := attachPastGap(t, r, nc, js)

	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if _, err := r.Sync(sctx); err != nil {
		t.Fatalf("sync: %v (write %s stayed without a fate: its receipt was lost while it was pending)", err, e.ID)
	}
	if info, err := evs.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("EVENTS %+v, %v: want the write once (every later publish dropped as a duplicate)", info, err)
	}
	if st := r.Status(); st.Pending != 0 || st.Resyncs == 0 {
		t.Errorf("status %+v: want nothing pending and the lost receipt reported", st)
	}
	rejs, err := r.Rejections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rejs) != 1 || rejs[0].Event != e.ID || !strings.Contains(rejs[0].Reason, "fate unknown") {
		t.Fatalf("rejections %+v: want one of unknown fate for %s", rejs, e.ID)
	}
}

// TestReplica_OfflineWritesAfterReceiptGap: the common case next to the
// one above: writes made offline, never published, and a RECEIPTS gap
// (other clients' receipts removed) when the replica attaches, its start
// running before the publisher sends them. They are suspects like the
// write above, but their publish is new to EVENTS: each
// ends as the projector decided it, never settled early as of unknown
// fate. (Republishing every pending write at the gap, an earlier attempt
// at the fix, raced the publisher: the second publish was dropped and
// most runs settled all 20 as of unknown fate.)
func TestReplica_OfflineWritesAfterReceiptGap(t *testing.T) {
	_, nc, js := mustServer(t)
	mustProjector(t, js, testPolicies())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "a", Policies: testPolicies(), GapCheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const n = 20
	for i := range n {
		if _, err := r.Put(ctx, "lww", "d"+strconv.Itoa(i), events.Fields{"n": json.RawMessage(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Another client's receipt, gone before this replica ever read one.
	other := &events.Event{ID: events.NewIDSource(nil).New().String(), Tenant: "t1", Client: "other", Collection: "lww", Doc: "x", Seq: 1}
	publishReceipt(t, js, other, events.OutcomeApplied, 1)
	rs, err := js.Stream(ctx, events.StreamReceipts)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	attachPastGap(t, r, nc, js)
	rep, err := r.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rejected != 0 {
		t.Errorf("sync report %+v: want no rejection", rep)
	}
	if st := r.Status(); st.Pending != 0 || st.Resyncs != 0 {
		t.Errorf("status %+v: want nothing pending, and no resync (no receipt of this replica was lost)", st)
	}
	rejs, err := r.Rejections(ctx)
	if err != nil || len(rejs) != 0 {
		t.Fatalf("rejections %+v, %v: want none (every write applied)", rejs, err)
	}
	es, err := r.Log().Entries(ctx, producer.StateSettled)
	if err != nil || len(es) != n {
		t.Fatalf("settled %d, %v: want %d", len(es), err, n)
	}
	for _, e := range es {
		if e.Outcome != events.OutcomeApplied {
			t.Errorf("write %s settled %s (%s): want applied, as its receipt says", e.Event.ID, e.Outcome, e.Reason)
		}
	}
	for i := range n {
		d, err := r.Get(ctx, "lww", "d"+strconv.Itoa(i))
		if err != nil || d.Version != 1 || d.Pending != 0 || string(d.Fields["n"]) != strconv.Itoa(i) {
			t.Fatalf("d%d: %+v, %v: want the write applied at v1", i, d, err)
		}
	}
}

// attachPastGap attaches r with EVENTS taking no publish of the tenant until
// r's RECEIPTS start has moved the cursor past the gap ahead of it, so the
// start sees r's unpublished writes pending; it returns EVENTS.
func attachPastGap(t *testing.T, r *Replica, nc *nats.Conn, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	ctx := t.Context()
	evs, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	cfg := evs.CachedInfo().Config
	closed := cfg
	closed.Subjects = []string{"ebb.evt.nobody.>"}
	if _, err := js.UpdateStream(ctx, closed); err != nil {
		t.Fatal(err)
	}
	if err := r.Attach(ctx, nc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the RECEIPTS start to move past the gap", func() bool {
		var c cursor
		err := r.log.View(t.Context(), func(tx *producer.Tx) (err error) {
			c, err = getCursor(tx, events.StreamReceipts)
			return err
		})
		return err == nil && c.Seq >= 1
	})
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return evs
}
