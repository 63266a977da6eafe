package projection_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestRules_ReadersHeaderUnbounded: MaxAudienceBytes (16 KiB) bounds the
// cumulative audience (was-readers, a tombstone's readers) but not a live
// change's Ebb-Readers, the rules' audience of the state. JetStream
// refuses a message whose headers pass 64 KiB. A list shared with 6000
// users (78 KB of fields, far under MaxDocBytes and the event limits) is
// applied — receipt applied v1 — but its change is refused for good and
// dead-lettered: it never reaches CHANGES, no reader ever gets it, and the
// writer's replica waits for v1 forever.
func TestRules_ReadersHeaderUnbounded(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, testRules)})
	ann := newWriter("acme", "ann", 0)
	owners := []any{"ann"}
	for i := 0; i < 6000; i++ {
		owners = append(owners, fmt.Sprintf("user-%05d", i))
	}
	big := ann.event("lists", "big", events.OpPut, 0, map[string]any{"owner": owners})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, big), big.ID))
	small := ann.event("lists", "small", events.OpPut, 0, map[string]any{"owner": "ann"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, small), small.ID))
	waitAudience(t, e.js, "lists", "small", 1, "u:ann", "") // the publishes of the batch before are done
	rb := receiptOf(t, e.js, big)
	for _, m := range streamMsgs(t, e.js, events.StreamDead) {
		t.Logf("DEAD: %.220s", m.Data)
	}
	// Either refused, saying why, or applied and in CHANGES: never applied
	// and then lost on the way.
	if rb.Outcome == events.OutcomeRejected {
		if !strings.Contains(rb.Reason, "MaxAudienceBytes") {
			t.Fatalf("big refused for another reason: %q", rb.Reason)
		}
		return
	}
	s, _ := e.js.Stream(context.Background(), events.StreamChanges)
	if _, err := s.GetLastMsgForSubject(context.Background(), events.ChangeSubject("acme", "lists", "big")); err != nil {
		t.Fatalf("big: receipt %s v%d, but no change of it in CHANGES: %v", rb.Outcome, rb.Version, err)
	}
}
