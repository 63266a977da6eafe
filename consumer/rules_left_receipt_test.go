package consumer

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// TestRules_LeftBeforeReceiptStrandsWrite: ann's own write moves her list
// to bob (v2). The projector publishes the change (readers bob, was ann)
// and the applied receipt v2; ann's CHANGES and RECEIPTS followers are
// independent, so the Left notice may be applied first (here: the receipt
// comes after it). forgetLeft settles only receipts already awaiting; the
// receipt that comes later finds the synced version 0 < 2 and parks in
// bucketAwaiting waiting for a change of l1 at v2 that the feed will
// never send ann. The write never settles: Sync never returns, and ann's
// replica keeps showing a list the rules no longer let her read.
func TestRules_LeftBeforeReceiptStrandsWrite(t *testing.T) {
	_, nc, js := mustServer(t)
	startResponder(t, nc, js)
	publishAudience(t, js, testChange("acme", "lists", "l1", 1, 1), []string{annP}, nil)
	r := openRulesReplica(t, t.TempDir(), nc)
	syncWithin(t, r)
	if got := docIDs(t, r, "lists"); got != "[l1]" {
		t.Fatalf("lists %s", got)
	}
	if _, err := r.Put(t.Context(), "lists", "l1", events.Fields{"owner": json.RawMessage(`"bob"`)}); err != nil {
		t.Fatal(err)
	}
	es := waitPublished(t, r, 1)
	ev := es[0].Event
	// The projector's change of ann's write: bob reads it, ann held it.
	ch := testChange("acme", "lists", "l1", 2, 9)
	ch.Event, ch.Client = ev.ID, ev.Client
	seq := changesCursor(t, r).Seq
	publishAudience(t, js, ch, []string{bobP}, []string{annP})
	waitFor(t, 10*time.Second, "the Left notice of l1 applied", func() bool { return changesCursor(t, r).Seq > seq })
	// Its receipt, applied at v2, read after the notice.
	publishReceipt(t, js, ev, events.OutcomeApplied, 2)
	waitFor(t, 10*time.Second, "the receipt read", func() bool {
		var c cursor
		_ = r.log.View(t.Context(), func(tx *producer.Tx) (err error) { c, err = getCursor(tx, events.StreamReceipts); return err })
		return c.Seq > 0
	})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := r.Sync(ctx)
	d, gerr := r.Get(t.Context(), "lists", "l1")
	t.Logf("after the receipt: pending=%d, Get l1 = %+v err=%v", r.Status().Pending, d, gerr)
	if err != nil {
		t.Fatalf("Sync after ann's write moved l1 out of her view: %v (the applied receipt awaits a change the feed never sends her)", err)
	}
}
