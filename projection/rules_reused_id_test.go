package projection_test

import (
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestRules_ReusedIDReceiptTellsHiddenState: the dead-letter path
// (reusedID) runs before the rules and hiddenFrom. bob, who may not read
// ann's l1, learns its current event id from a Left notice (or, for a
// pre-rules/overflowed document, every user gets those) and sends an event
// with that id: his invalid receipt names l1's version, its writer's
// client name and sequence.
func TestRules_ReusedIDReceiptTellsHiddenState(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, testRules)})
	ann, bob := newWriter("acme", "ann", 0), newWriter("acme", "bob", 0)
	var last *events.Event
	for _, ev := range []*events.Event{
		ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann"}),
		ann.event("lists", "l1", events.OpPatch, 1, map[string]any{"a": 1}),
		ann.event("lists", "l1", events.OpPatch, 2, map[string]any{"a": 2}),
	} {
		waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
		last = ev
	}
	probe := bob.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "bob"})
	probe.ID = last.ID
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, probe), "bob-probe"))
	var got *events.Receipt
	for _, m := range streamMsgs(t, e.js, events.StreamReceipts) {
		if r, err := events.DecodeReceipt(m.Data); err == nil && r.Client == "bob" {
			got = r
		}
	}
	if got == nil {
		t.Fatal("no receipt for bob")
	}
	t.Logf("bob's receipt: %s v%d %q", got.Outcome, got.Version, got.Reason)
	if (got.Outcome != events.OutcomeRejected && got.Outcome != events.OutcomeInvalid) || got.Reason != "sync rules: lists/l1: you may not write this document" {
		t.Fatalf("bob's probe of ann's l1 answered %s %q: tells a state he may not read", got.Outcome, got.Reason)
	}
}
