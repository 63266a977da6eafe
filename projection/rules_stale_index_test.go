package projection_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestRules_OldBuildWriteCannotHideOrphansFromRecreate: the field index is
// built (ann's list changes readers), an older build then applies ann's
// todo t1 under l1 (no index kept), and this build reopens the file. Ann
// deletes l1; bob, who could never write l1, creates it again as his own:
// refused, because the index finds the orphan t1 a scan finds, and bob
// cannot write t1. OpenBolt stamped the stale index as current before, so
// liveFollowers found no orphan, the recreate was applied and bob took
// over ann's todo.
func TestRules_OldBuildWriteCannotHideOrphansFromRecreate(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "view.db")
	store, err := projection.OpenBolt(path, projection.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := projection.Config{Rules: mustRules(t, testRules)}
	p := startProjector(t, e.js, store, cfg)
	ann, bob := newWriter("acme", "ann", 0), newWriter("acme", "bob", 0)
	step := func(p *projection.Projector, ev *events.Event, want events.Outcome) *events.Receipt {
		t.Helper()
		waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
		r := receiptOf(t, e.js, ev)
		if r.Outcome != want {
			t.Errorf("%s %s/%s: %s %q, want %s", ev.Client, ev.Collection, ev.Doc, r.Outcome, r.Reason, want)
		}
		return r
	}
	step(p, ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann"}), events.OutcomeApplied)
	step(p, ann.event("todos", "t0", events.OpPut, 0, map[string]any{"list": "l1"}), events.OutcomeApplied)
	// new readers: the followers are re-emitted, which builds the index
	step(p, ann.event("lists", "l1", events.OpPatch, 1, map[string]any{"team": "red"}), events.OutcomeApplied)
	step(p, ann.event("todos", "t0", events.OpDelete, 1, nil), events.OutcomeApplied)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	store.Close()

	// Downgrade: the old build applies ann's todo t1 under l1.
	t1 := projection.Doc{Tenant: "acme", Collection: "todos", ID: "t1", Version: 1, Client: "ann", Event: "old-build-event",
		Fields: events.Fields{"list": json.RawMessage(`"l1"`), "title": json.RawMessage(`"ann's secret"`)}, Audience: []string{"g:red", "u:ann"}}
	if err := projection.OldBuildPut(path, nil, t1); err != nil {
		t.Fatal(err)
	}

	// Upgrade again.
	if store, err = projection.OpenBolt(path, projection.BoltOptions{}); err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	p = startProjector(t, e.js, store, cfg)
	defer p.Close()
	found, err := store.DocsWithField(context.Background(), "acme", "todos", "list", "l1")
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 {
		t.Errorf("DocsWithField(todos.list = l1) found %d documents, a scan finds t1", len(found))
	}
	step(p, ann.event("lists", "l1", events.OpDelete, 2, nil), events.OutcomeApplied)
	step(p, bob.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "bob"}), events.OutcomeRejected)
	step(p, bob.event("todos", "t1", events.OpPatch, 1, map[string]any{"title": "bob's now"}), events.OutcomeRejected)
	d, err := store.Get(context.Background(), events.DocAddress{Tenant: "acme", Collection: "todos", Doc: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Version != 1 || string(d.Fields["title"]) != `"ann's secret"` {
		t.Errorf("t1 in the view: v%d title %s, want ann's v1, untouched by bob", d.Version, d.Fields["title"])
	}
}
