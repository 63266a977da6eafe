package projection_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestProjector_ResolverInvalidJSONDeadLettered: a custom resolver returns
// a field value that is no JSON (and that the encoder's fast path would
// copy). The event is dead-lettered "encode the new state" with an invalid
// receipt, as when events.EncodeChange encoded the change: no state the
// view cannot read is committed, no change replicas cannot decode is
// published, and the stream moves on past it.
func TestProjector_ResolverInvalidJSONDeadLettered(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	bad := projection.ResolverFunc(func(cur projection.Doc, ev *events.Event) (projection.Decision, error) {
		n := cur.Clone()
		n.Fields = events.Fields{"x": json.RawMessage(`{bad`)}
		return projection.Decision{Outcome: events.OutcomeMerged, Doc: &n}, nil
	})
	p := startProjector(t, e.js, store, projection.Config{Policies: projection.Policies{Default: bad}})
	w := newWriter("acme", "ann", 0)
	first := w.event("notes", "n1", events.OpPut, 0, map[string]any{"x": 1})
	waitCheckpoint(t, p, publish(t, e.js, eventMsg(t, first), first.ID))
	stale := w.event("notes", "n1", events.OpPut, 0, map[string]any{"x": 2})
	waitCheckpoint(t, p, publish(t, e.js, eventMsg(t, stale), stale.ID))
	r := receiptOf(t, e.js, stale)
	if r.Outcome != events.OutcomeInvalid || !strings.Contains(r.Reason, "encode the new state") || p.Stats().Dead != 1 {
		t.Errorf("a state that is no JSON: receipt %s %q, dead letters %d; want invalid \"encode the new state ...\", 1",
			r.Outcome, r.Reason, p.Stats().Dead)
	}
	d, err := store.Get(context.Background(), stale.Address())
	if err != nil {
		t.Fatalf("the view cannot read the state the projector committed: %v", err)
	}
	if d.Version != 1 || string(d.Fields["x"]) != "1" {
		t.Errorf("n1 in the view: v%d x=%s, want v1 x=1 (the first put's)", d.Version, d.Fields["x"])
	}
	// A later event of n1, then one of another document: the stream moves on.
	next := w.event("notes", "n1", events.OpPatch, 1, map[string]any{"y": 1})
	publish(t, e.js, eventMsg(t, next), next.ID)
	other := w.event("notes", "n2", events.OpPut, 0, map[string]any{"y": 1})
	waitCheckpoint(t, p, publish(t, e.js, eventMsg(t, other), other.ID))
	if r := receiptOf(t, e.js, other); r.Outcome != events.OutcomeApplied {
		t.Errorf("the next document's put after the dead letter: %s %q, want applied", r.Outcome, r.Reason)
	}
}
