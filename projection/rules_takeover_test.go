package projection_test

import (
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestRules_PreRulesParentTakeover: the create-over-tombstone guard admits
// every writer when the tombstone's cumulative audience is "*" — which is
// the case for every document written before the rules were turned on.
// ann's todo t1 is created AFTER the rules (readers u:ann only), under her
// pre-rules list l1. ann deletes l1; bob re-creates l1 as its owner and is
// handed t1: the projector re-emits t1 with Ebb-Readers u:bob.
func TestRules_PreRulesParentTakeover(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{})
	ann, bob := newWriter("acme", "ann", 0), newWriter("acme", "bob", 0)
	ev := ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p = startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, testRules)})
	waitAudience(t, e.js, "lists", "l1", 1, "u:ann", "*")
	for _, ev := range []*events.Event{
		ann.event("todos", "t1", events.OpPut, 0, map[string]any{"list": "l1", "title": "ann's secret, made under the rules"}),
		ann.event("lists", "l1", events.OpDelete, 1, nil),
	} {
		waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	}
	m := lastChangeMsg(t, e.js, "acme", "todos", "t1")
	r, w, _ := audienceOf(m)
	t.Logf("t1 after ann deletes l1: readers=%q was=%q", r, w)
	hijack := bob.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "bob"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, hijack), hijack.ID))
	rc := receiptOf(t, e.js, hijack)
	t.Logf("bob's re-create of l1: %s v%d %q", rc.Outcome, rc.Version, rc.Reason)
	m = lastChangeMsg(t, e.js, "acme", "todos", "t1")
	r, w, _ = audienceOf(m)
	c, _ := events.DecodeChange(m.Data)
	if rc.Outcome == events.OutcomeApplied && inAud(r, events.Principals("bob", nil)) {
		t.Fatalf("bob re-created ann's deleted pre-rules list and now reads her post-rules todo t1: readers=%q was=%q fields=%v", r, w, c.Fields)
	}
}

func inAud(v string, p []string) bool {
	a, err := events.ParseAudience(v)
	return err == nil && events.InAudience(a, p)
}

// TestRules_FormerReaderTakesOverLaterFollowers: the guard admits anyone in
// the tombstone's cumulative audience — anyone who read ANY state of the
// list. carl (team red) read l1 once; ann moves l1 to team blue, then
// creates t2 (carl never may read it), then deletes l1. carl re-creates
// l1 as its owner and is handed t2.
func TestRules_FormerReaderTakesOverLaterFollowers(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, testRules)})
	ann, carl := newWriter("acme", "ann", 0), newWriter("acme", "carl", 0)
	for _, ev := range []*events.Event{
		ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann", "team": "red"}),
		ann.event("lists", "l1", events.OpPatch, 1, map[string]any{"team": "blue"}),
		ann.event("todos", "t2", events.OpPut, 0, map[string]any{"list": "l1", "title": "after carl left"}),
		ann.event("lists", "l1", events.OpDelete, 2, nil),
	} {
		waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	}
	r0, _, _ := audienceOf(lastChangeMsg(t, e.js, "acme", "todos", "t2"))
	t.Logf("t2 readers before: %q", r0)
	hijack := carl.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "carl"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, hijack, "red"), hijack.ID))
	rc := receiptOf(t, e.js, hijack)
	r, w, _ := audienceOf(lastChangeMsg(t, e.js, "acme", "todos", "t2"))
	if rc.Outcome == events.OutcomeApplied && inAud(r, events.Principals("carl", []string{"red"})) {
		t.Fatalf("carl, a former reader of l1, re-created it and now reads t2, made after he lost l1: readers=%q was=%q", r, w)
	}
}
