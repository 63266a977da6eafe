package projection_test

import (
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// HOLE: hiddenFrom zeroes a refused receipt's Version when the writer may
// not read the document, but a rejection decided by the policy (Decide)
// before judgeWrite keeps its Reason, which names the current version:
// bob learns ann's list exists and is at version 3.
func TestRulesHole_RejectReasonLeaksVersion(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, testRules)})
	ann, bob := newWriter("acme", "ann", 0), newWriter("acme", "bob", 0)
	ev := ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann", "title": "a"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	ev = ann.event("lists", "l1", events.OpPatch, 1, map[string]any{"title": "b"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	ev = ann.event("lists", "l1", events.OpPatch, 2, map[string]any{"title": "c"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))

	probe := bob.event("lists", "l1", events.OpPatch, 999, map[string]any{"title": "x"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, probe), probe.ID))
	r := receiptOf(t, e.js, probe)
	t.Logf("bob's probe receipt: outcome %s version %d reason %q", r.Outcome, r.Version, r.Reason)
	if strings.Contains(r.Reason, "current version 3") || !strings.Contains(r.Reason, "sync rules") {
		t.Errorf("LEAK: bob, who may not read lists/l1, learns its version from the receipt's reason: %q", r.Reason)
	}
}
