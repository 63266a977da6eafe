package projection_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestProjector_ResolverInvalidJSONDeadLettered: a custom resolver returns a
// field value that is no JSON. events.EncodeChange refused it (the event
// was dead-lettered "encode the new state"); the hand-written encoder
// copies it, so the state is committed, the change published, and the
// view's own copy of the document can no longer be read.
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
	t.Logf("receipt of the stale put: %s %q; dead letters %d", r.Outcome, r.Reason, p.Stats().Dead)
	if _, err := store.Get(context.Background(), stale.Address()); err != nil {
		t.Errorf("the view cannot read the state the projector committed: %v", err)
	}
	if r.Outcome != events.OutcomeInvalid && p.Stats().Dead == 0 {
		t.Errorf("a state that is no JSON was applied (%s), not dead-lettered", r.Outcome)
	}
	// Any later event of n1, then one of another document: does the stream move on?
	next := w.event("notes", "n1", events.OpPatch, 2, map[string]any{"y": 1})
	publish(t, e.js, eventMsg(t, next), next.ID)
	other := w.event("notes", "n2", events.OpPut, 0, map[string]any{"y": 1})
	seq := publish(t, e.js, eventMsg(t, other), other.ID)
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Checkpoint < seq && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := p.Stats().Checkpoint; got < seq {
		t.Errorf("projector stalled: checkpoint %d after 5s, want %d (every later event waits behind the unreadable state)", got, seq)
	}
}
