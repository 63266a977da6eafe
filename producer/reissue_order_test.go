package producer

import (
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestReissue_OutOfOrderKeepsTheLaterWrite: A, then B (After A) on one
// document are both answered "reused"; receipts of one client come in no
// guaranteed order (PROTOCOL.md), so B's arrives first. Reissue(B) keeps
// After=A (A not yet reissued; A itself is never applied), Reissue(A) then
// writes A' after B' in the log. The server decides B' then A' and the
// user's later write B is overwritten by the earlier A.
func TestReissue_OutOfOrderKeepsTheLaterWrite(t *testing.T) {
	l := tempLog(t)
	wa := put("c", "d", 1)
	wa.BaseVersion = 1
	a := mustAppend(t, l, wa)[0]
	wb := put("c", "d", 2)
	wb.BaseVersion = 1
	wb.After = a.ID
	b := mustAppend(t, l, wb)[0]
	reused := func(e *events.Event) *events.Receipt {
		return &events.Receipt{Schema: events.SchemaVersion, Event: e.ID, Tenant: e.Tenant, Client: e.Client, Device: e.Device,
			Seq: e.Seq, Collection: e.Collection, Doc: e.Doc, Outcome: events.OutcomeReused, Reason: "taken"}
	}
	nb, err := l.Reissue(t.Context(), reused(b))
	if err != nil || nb == nil {
		t.Fatal(nb, err)
	}
	na, err := l.Reissue(t.Context(), reused(a))
	if err != nil || na == nil {
		t.Fatal(na, err)
	}
	t.Logf("B' seq %d after %s (A=%s, A'=%s); A' seq %d", nb.Seq, nb.After, a.ID, na.ID, na.Seq)
	// The server's view: the document at v1, made by another writer; it
	// decides the new device's events in seq order.
	cur := projection.Doc{Version: 1, Fields: events.Fields{"v": []byte("0")}, Event: "X", AsWritten: true}
	evs := map[uint64]*events.Event{nb.Seq: nb, na.Seq: na}
	for s := uint64(1); s <= 2; s++ {
		d, err := projection.Decide(projection.Policies{}, cur, evs[s])
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("seq %d (%s): %s", s, evs[s].ID, d.Outcome)
		if d.Doc != nil {
			cur = *d.Doc
		}
	}
	if got := string(cur.Fields["v"]); got != "2" {
		t.Fatalf("final v=%s: the user's last write (v=2) was overwritten by its predecessor reissued later", got)
	}
}

// TestReissue_KeepsItsPlaceBeforeALaterWrite: the in-order case. A restored
// store writes A (seq s, taken on the server -> "reused") and then B
// (seq s+1, After A, not taken: decided normally). Reissue writes A' only
// once A's receipt is back, i.e. after B was published and decided; A' has
// a new HLC and A's base_version, so the server decides it after B and
// the user's later write B is overwritten by the earlier A.
func TestReissue_KeepsItsPlaceBeforeALaterWrite(t *testing.T) {
	l := tempLog(t)
	wa := put("c", "d", 1)
	wa.BaseVersion = 1
	a := mustAppend(t, l, wa)[0]
	wb := put("c", "d", 2)
	wb.BaseVersion = 1
	wb.After = a.ID
	b := mustAppend(t, l, wb)[0]
	// Server: doc v1 made by the other copy's event X; A is reused (nothing
	// changes); B is decided (stale: A never made the state) -> lww.
	cur := projection.Doc{Version: 1, Fields: events.Fields{"v": []byte("0")}, Event: "X", AsWritten: true}
	d, err := projection.Decide(projection.Policies{}, cur, b)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("B: %s", d.Outcome)
	if d.Doc != nil {
		cur = *d.Doc
	}
	na, err := l.Reissue(t.Context(), &events.Receipt{Schema: events.SchemaVersion, Event: a.ID, Tenant: a.Tenant, Client: a.Client,
		Device: a.Device, Seq: a.Seq, Collection: a.Collection, Doc: a.Doc, Outcome: events.OutcomeReused, Reason: "taken"})
	if err != nil || na == nil {
		t.Fatal(na, err)
	}
	d, err = projection.Decide(projection.Policies{}, cur, na)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("A' (base %d, after %q): %s", na.BaseVersion, na.After, d.Outcome)
	if d.Doc != nil {
		cur = *d.Doc
	}
	if got := string(cur.Fields["v"]); got != "2" {
		t.Fatalf("final v=%s: the reissued earlier write A overwrote the user's later write B", got)
	}
}
