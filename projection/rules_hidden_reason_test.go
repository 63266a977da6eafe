package projection_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestProjector_HiddenReceiptStillNamesTheState: hiddenFrom zeroes the
// receipt's Version for a refused writer who may not read the document,
// but judgeWrite runs only when the policy produced a new state, so a
// stale write that LWW rejects first keeps Decide's reason: the current
// version, the event id and the HLC of a state bob may not read.
func TestProjector_HiddenReceiptStillNamesTheState(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, testRules)})
	ann := newWriter("acme", "ann", 0)
	secret := ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann", "team": "red"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, secret), secret.ID))
	bob := newWriter("acme", "bob", -time.Hour) // an old HLC: LWW rejects before the rules judge
	ev := bob.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "bob"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	r := receiptOf(t, e.js, ev)
	t.Logf("bob's receipt: outcome %s version %d reason %q", r.Outcome, r.Version, r.Reason)
	if strings.Contains(r.Reason, secret.ID) || strings.Contains(r.Reason, "version 1") {
		t.Fatalf("a receipt hidden from bob (version %d) names the state he may not read: %q", r.Version, r.Reason)
	}
}
