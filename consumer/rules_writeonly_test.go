package consumer

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
	"github.com/ebbsync/ebb/projection/rules"
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
	set, err := rules.Parse([]byte("collections:\n  lists:\n    read: [{user: owner}]\n    write: [{everyone: true}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := projection.OpenBolt(filepath.Join(t.TempDir(), "view.db"), projection.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pr, err := projection.New(js, store, projection.Config{Rules: set})
	if err != nil {
		t.Fatal(err)
	}
	if err := pr.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pr.Close(); _ = store.Close() })
	startResponder(t, nc, js)
	ann := openRulesReplica(t, t.TempDir(), nc)
	syncWithin(t, ann)
	if _, err := ann.Put(t.Context(), "lists", "forbob", events.Fields{"owner": json.RawMessage(`"bob"`)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Second)
	defer cancel()
	_, err = ann.Sync(ctx)
	d, gerr := ann.Get(t.Context(), "lists", "forbob")
	t.Logf("pending=%d Get=%+v err=%v", ann.Status().Pending, d, gerr)
	if err != nil {
		t.Fatalf("ann's Sync after creating a list for bob: %v", err)
	}
}
