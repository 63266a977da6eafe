package projection_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestRulesRecreate_TombstoneWithLiveFollowersRefused: re-creating a
// deleted list's id would hand its orphaned todos (followers) to whoever
// the new state names. While any follower lives, a create over the
// tombstone is refused to everyone: bob, who never read l1, gets the
// hidden receipt; carl of team red, who read l1 once (but not what was
// added after), is refused too, told why. A tombstone with no followers
// may be created again.
func TestRulesRecreate_TombstoneWithLiveFollowersRefused(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, testRules)})
	ann, bob, carl := newWriter("acme", "ann", 0), newWriter("acme", "bob", 0), newWriter("acme", "carl", 0)
	for _, ev := range []*events.Event{
		ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann", "team": "red"}),
		ann.event("todos", "t1", events.OpPut, 0, map[string]any{"list": "l1", "title": "secret"}),
		ann.event("lists", "l1", events.OpDelete, 1, nil),
		ann.event("lists", "l2", events.OpPut, 0, map[string]any{"owner": "ann"}),
		ann.event("lists", "l2", events.OpDelete, 1, nil),
	} {
		waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	}
	hijack := bob.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "bob"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, hijack), hijack.ID))
	r := receiptOf(t, e.js, hijack)
	if r.Outcome != events.OutcomeRejected || r.Version != 0 || r.Reason != "sync rules: lists/l1: you may not write this document" {
		t.Errorf("bob re-creating ann's deleted list: receipt %s v%d %q, want rejected v0 with the hidden reason", r.Outcome, r.Version, r.Reason)
	}
	again := carl.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "carl"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, again, "red"), again.ID))
	if r := receiptOf(t, e.js, again); r.Outcome != events.OutcomeRejected || !strings.Contains(r.Reason, "live followers") {
		t.Errorf("carl, who read l1 once, re-creating it over its live todo: receipt %s %q, want rejected naming the followers", r.Outcome, r.Reason)
	}
	if d, _ := store.Get(context.Background(), hijack.Address()); !d.Deleted || d.Version != 2 {
		t.Fatalf("after the creates l1 is v%d deleted=%v: someone took over ann's orphaned todo", d.Version, d.Deleted)
	}
	free := bob.event("lists", "l2", events.OpPut, 0, map[string]any{"owner": "bob"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, free), free.ID))
	if r := receiptOf(t, e.js, free); r.Outcome != events.OutcomeApplied {
		t.Errorf("bob creating l2 again (a tombstone nothing follows): receipt %s %q, want applied", r.Outcome, r.Reason)
	}
}

// TestRulesOn_PreRulesDocumentsWereEveryones: rules turned on over data
// written without them. Everyone could read the old messages, so the
// re-emit names everyone as was-readers (a Left notice reaches every
// earlier holder), the cumulative audience starts at everyone (the next
// change says so again), and a tombstone's headerless message, which the
// feed sends to everyone, is published again with readers everyone (its
// cumulative audience), which also lets anyone re-create it.
func TestRulesOn_PreRulesDocumentsWereEveryones(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{})
	ann, bob := newWriter("acme", "ann", 0), newWriter("acme", "bob", 0)
	for _, ev := range []*events.Event{
		ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann"}),
		ann.event("lists", "l2", events.OpPut, 0, map[string]any{"owner": "ann"}),
		ann.event("lists", "l2", events.OpDelete, 1, nil),
	} {
		waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p = startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, testRules)})
	waitAudience(t, e.js, "lists", "l1", 1, "u:ann", "*")
	waitAudience(t, e.js, "lists", "l2", 2, "*", "*")

	ev := ann.event("lists", "l1", events.OpPatch, 1, map[string]any{"title": "x"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	waitAudience(t, e.js, "lists", "l1", 2, "u:ann", "*")

	ev = bob.event("lists", "l2", events.OpPut, 0, map[string]any{"owner": "bob"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	if r := receiptOf(t, e.js, ev); r.Outcome != events.OutcomeApplied {
		t.Errorf("bob re-creating a list deleted before the rules (everyone read it): %s %q, want applied", r.Outcome, r.Reason)
	}
}

// flakyChangesJS is the real JetStream, except that its first refuse
// lookups of the CHANGES stream fail.
type flakyChangesJS struct {
	jetstream.JetStream
	refuse atomic.Int64
}

func (j *flakyChangesJS) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	if name == events.StreamChanges && j.refuse.Add(-1) >= 0 {
		return nil, errors.New("changes info refused")
	}
	return j.JetStream.Stream(ctx, name)
}

// TestRulesOn_TransientErrorDoesNotServePreRulesChanges: a projector
// started under new rules must not start serving while CHANGES still holds
// the changes computed under the old ones: a CHANGES lookup that fails
// (twice: the stream check, then the rules check) is retried within Start,
// so when Start returns the re-emit is done.
func TestRulesOn_TransientErrorDoesNotServePreRulesChanges(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{})
	ann := newWriter("acme", "ann", 0)
	ev := ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	js := &flakyChangesJS{JetStream: e.js}
	js.refuse.Store(2)
	startProjector(t, js, store, projection.Config{Rules: mustRules(t, testRules)})
	r, w, has := audienceOf(lastChangeMsg(t, e.js, "acme", "lists", "l1"))
	if !has || r != "u:ann" || !strings.Contains(w, "*") {
		t.Fatalf("Start returned with l1's last change readers=%q was=%q (header %v): the pre-rules change is served to everyone", r, w, has)
	}
}
