package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// Issue 11 item 1 end to end under merge: A's put stacked on its own
// merged patch must not drop B's field, and what it overwrote is recorded.
func TestProjector_StackedWriteAfterMergeKeepsConcurrentField(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	a := newWriter("acme", "A", 0)
	b := newWriter("acme", "B", 0)

	publish(t, e.js, eventMsg(t, a.event("profiles", "p1", events.OpPut, 0, map[string]any{"v": 0})), "")
	publish(t, e.js, eventMsg(t, b.event("profiles", "p1", events.OpPatch, 1, map[string]any{"x": 1})), "")
	a.offset = time.Second // A writes later, offline
	patch := a.event("profiles", "p1", events.OpPatch, 1, map[string]any{"a": 1})
	publish(t, e.js, eventMsg(t, patch), "")
	put := a.event("profiles", "p1", events.OpPut, 1, map[string]any{"a": 2, "v": 0})
	put.After = patch.ID
	last := publish(t, e.js, eventMsg(t, put), "")

	cfg := projection.Config{Policies: testPolicies()}
	p := startProjector(t, e.js, store, cfg)
	waitCheckpoint(t, p, last)

	ctx := context.Background()
	d, err := store.Get(ctx, put.Address())
	if err != nil {
		t.Fatal(err)
	}
	if d.Version != 4 || string(d.Fields["x"]) != "1" || string(d.Fields["a"]) != "2" || string(d.Fields["v"]) != "0" {
		t.Fatalf("document v%d %s: want v4 with B's x=1 kept and A's a=2, v=0", d.Version, d.Fields)
	}
	recs, err := store.Conflicts(ctx, put.Address())
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, r := range recs {
		found = found || r.ID == put.ID || r.Sides[1].Event == put.ID
	}
	if !found {
		t.Errorf("no conflict record for the stacked put among %d records", len(recs))
	}
	if _, err := projection.Verify(ctx, e.js, store, cfg); err != nil {
		t.Fatal(err)
	}
}
