package projection_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestRulesOrphans_OwnerCleansUpAfterDeletingTheList: a user who deletes a
// list can still delete its todos, move them to another list, and create
// the list again over its live todos: a follower of a deleted parent is
// judged for writes on what the parent's tombstone kept of its last live
// state. Nobody else gains anything: a team member who read the list but
// could not write it, and a stranger, may neither delete nor move its
// orphans, nor point a new todo at the deleted list or at one that never
// existed, nor create the list again. A rebuild judges the same.
func TestRulesOrphans_OwnerCleansUpAfterDeletingTheList(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	cfg := projection.Config{Rules: mustRules(t, testRules)}
	p := startProjector(t, e.js, store, cfg)
	ann, bob, carl := newWriter("acme", "ann", 0), newWriter("acme", "bob", 0), newWriter("acme", "carl", 0)
	for _, ev := range []*events.Event{
		ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann", "team": "red"}),
		ann.event("lists", "l3", events.OpPut, 0, map[string]any{"owner": "ann"}),
		ann.event("todos", "t1", events.OpPut, 0, map[string]any{"list": "l1"}),
		ann.event("todos", "t2", events.OpPut, 0, map[string]any{"list": "l1"}),
		ann.event("todos", "t3", events.OpPut, 0, map[string]any{"list": "l1"}),
		bob.event("lists", "bl", events.OpPut, 0, map[string]any{"owner": "bob"}),
		bob.event("todos", "b1", events.OpPut, 0, map[string]any{"list": "bl"}),
		ann.event("lists", "l1", events.OpDelete, 1, nil),
	} {
		waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
		if r := receiptOf(t, e.js, ev); r.Outcome != events.OutcomeApplied {
			t.Fatalf("setup %s/%s: %s %q", ev.Collection, ev.Doc, r.Outcome, r.Reason)
		}
	}
	waitAudience(t, e.js, "todos", "t3", 1, "", "g:red u:ann")

	refused := []struct {
		name   string
		ev     *events.Event
		groups []string
	}{
		{"a team member deletes an orphan", carl.event("todos", "t2", events.OpDelete, 1, nil), []string{"red"}},
		{"a stranger deletes an orphan", bob.event("todos", "t2", events.OpDelete, 1, nil), nil},
		{"a team member moves an orphan to his list", carl.event("todos", "t2", events.OpPatch, 1, map[string]any{"list": "bl"}), []string{"red"}},
		{"a stranger points a new todo at the deleted list", bob.event("todos", "b2", events.OpPut, 0, map[string]any{"list": "l1"}), nil},
		{"a stranger moves his todo under the deleted list", bob.event("todos", "b1", events.OpPatch, 1, map[string]any{"list": "l1"}), nil},
		{"a stranger points a new todo at a list that never existed", bob.event("todos", "b3", events.OpPut, 0, map[string]any{"list": "ghost"}), nil},
		{"a team member creates the list again", carl.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "carl", "team": "red"}), []string{"red"}},
		{"a stranger creates the list again", bob.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "bob"}), nil},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			before, err := store.Get(context.Background(), c.ev.Address())
			if err != nil {
				t.Fatal(err)
			}
			waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, c.ev, c.groups...), c.ev.ID))
			r := receiptOf(t, e.js, c.ev)
			if r.Outcome != events.OutcomeRejected || !strings.HasPrefix(r.Reason, "sync rules: ") {
				t.Errorf("receipt %s %q, want rejected by the sync rules", r.Outcome, r.Reason)
			}
			after, err := store.Get(context.Background(), c.ev.Address())
			if err != nil {
				t.Fatal(err)
			}
			if after.Version != before.Version {
				t.Errorf("view of %s at v%d after a refused write, was v%d", c.ev.Doc, after.Version, before.Version)
			}
		})
	}

	// The list's owner deletes one orphan, moves another to her other
	// list, and creates the list again over the third.
	del := ann.event("todos", "t1", events.OpDelete, 1, nil)
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, del), del.ID))
	if r := receiptOf(t, e.js, del); r.Outcome != events.OutcomeApplied || r.Version != 2 {
		t.Errorf("ann deleting a todo of the list she deleted: receipt %s v%d %q, want applied v2", r.Outcome, r.Version, r.Reason)
	}
	// The tombstone reaches everyone who may hold a copy.
	waitAudience(t, e.js, "todos", "t1", 2, "g:red u:ann", "g:red u:ann")
	move := ann.event("todos", "t2", events.OpPatch, 1, map[string]any{"list": "l3"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, move), move.ID))
	if r := receiptOf(t, e.js, move); r.Outcome != events.OutcomeApplied || r.Version != 2 {
		t.Errorf("ann moving a todo of the list she deleted to another: receipt %s v%d %q, want applied v2", r.Outcome, r.Version, r.Reason)
	}
	waitAudience(t, e.js, "todos", "t2", 2, "u:ann", "g:red u:ann")
	again := ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, again), again.ID))
	if r := receiptOf(t, e.js, again); r.Outcome != events.OutcomeApplied || r.Version != 3 {
		t.Errorf("ann creating her deleted list again over its todo: receipt %s v%d %q, want applied v3", r.Outcome, r.Version, r.Reason)
	}
	waitAudience(t, e.js, "todos", "t3", 1, "u:ann", "g:red u:ann")

	if _, err := projection.Verify(context.Background(), e.js, store, cfg); err != nil {
		t.Fatalf("verify under the same rules: %v", err)
	}
}
