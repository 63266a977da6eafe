package consumer

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

// TestRules_WriteYouMayNotReadNeverSettles: with the real projector and feed,
// rules whose write rule admits a user the read rule does not (here the
// rules of TestReplicaRules_LeftAfterTwoMoves: read owner, write everyone).
// ann creates a list for bob: applied v1, but the change goes to bob only
// and names nobody as was-reader, so ann gets neither the change nor a
// Left notice. Her replica parks the applied receipt waiting for v1
// forever: the write never settles and Sync never returns.
func TestRules_WriteYouMayNotReadNeverSettles(t *testing.T) {
	_, nc, js := mustServer(t)
	startRulesProjector(t, nc, js, ownerReadsEveryoneWrites)
	ann := openRulesReplica(t, t.TempDir(), nc)
	syncWithin(t, ann)
	if _, err := ann.Put(t.Context(), "lists", "forbob", events.Fields{"owner": json.RawMessage(`"bob"`)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Second)
	defer cancel()
	_, err := ann.Sync(ctx)
	d, gerr := ann.Get(t.Context(), "lists", "forbob")
	t.Logf("pending=%d Get=%+v err=%v", ann.Status().Pending, d, gerr)
	if err != nil {
		t.Fatalf("ann's Sync after creating a list for bob: %v", err)
	}
}
