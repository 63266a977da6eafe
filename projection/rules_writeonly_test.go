package projection_test

import (
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

const rvdWriteOnlyRules = `
collections:
  notes:
    read:  [{user: owner}]
    write: [{group: eds}]
`

// TestRules_AcceptedReceiptTellsHiddenVersion: PROTOCOL (gateway, Sync
// rules) says a user who may not read a document's current state gets no
// version in any answer. hiddenFrom only hides REJECTED receipts: carl, an
// editor who may write n1 but never read it, gets an applied receipt
// whose version tells him how many times n1 was written (and the HTTP
// answer sets ETag from it).
func TestRules_AcceptedReceiptTellsHiddenVersion(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, rvdWriteOnlyRules)})
	ann, carl := newWriter("acme", "ann", 0), newWriter("acme", "carl", 0)
	evs := []*events.Event{ann.event("notes", "n1", events.OpPut, 0, map[string]any{"owner": "bob", "eds": "editors", "body": "v1"})}
	for i := uint64(1); i <= 4; i++ {
		evs = append(evs, ann.event("notes", "n1", events.OpPatch, i, map[string]any{"body": "more"}))
	}
	for _, ev := range evs {
		waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev, "editors"), ev.ID))
	}
	for _, ev := range evs {
		r := receiptOf(t, e.js, ev)
		t.Logf("ann: %s v%d %q", r.Outcome, r.Version, r.Reason)
	}
	w := carl.event("notes", "n1", events.OpPatch, 0, map[string]any{"x": 1})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, w, "editors"), w.ID))
	r := receiptOf(t, e.js, w)
	t.Logf("receipt %s v%d %q conflict=%q", r.Outcome, r.Version, r.Reason, r.Conflict)
	if r.Version != 0 {
		t.Fatalf("carl (may write n1, may not read it) got receipt %s v%d %q: the version of a state he may not read", r.Outcome, r.Version, r.Reason)
	}
}
