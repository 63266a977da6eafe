package projection_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

const ownerRules = `
collections:
  lists:
    read: [{user: owner}]
    write: [{everyone: true}]
  todos:
    follow: {collection: lists, field: list}
`

// TestProjectorRules_WasReadersCumulative: CHANGES keeps one message per
// document, so its WasReaders must name everyone who may still hold a
// copy, not only the previous state's readers: a reader offline across
// two moves (ann -> bob -> carl) finds itself in the last message's
// WasReaders; so does the reader of a deleted document recreated for
// someone else.
func TestProjectorRules_WasReadersCumulative(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, ownerRules)})
	w := newWriter("acme", "svc", 0)
	apply := func(ev *events.Event) { waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID)) }

	t.Run("two moves", func(t *testing.T) {
		apply(w.event("lists", "m1", events.OpPut, 0, map[string]any{"owner": "ann"}))
		apply(w.event("lists", "m1", events.OpPatch, 1, map[string]any{"owner": "bob"}))
		waitAudience(t, e.js, "lists", "m1", 2, "u:bob", "u:ann")
		apply(w.event("lists", "m1", events.OpPatch, 2, map[string]any{"owner": "carl"}))
		waitAudience(t, e.js, "lists", "m1", 3, "u:carl", "u:ann u:bob")
		// The delete reaches every holder.
		apply(w.event("lists", "m1", events.OpDelete, 3, nil))
		waitAudience(t, e.js, "lists", "m1", 4, "u:ann u:bob u:carl", "u:ann u:bob u:carl")
	})
	t.Run("recreate over a tombstone", func(t *testing.T) {
		apply(w.event("lists", "r1", events.OpPut, 0, map[string]any{"owner": "ann"}))
		apply(w.event("lists", "r1", events.OpDelete, 1, nil))
		waitAudience(t, e.js, "lists", "r1", 2, "u:ann", "u:ann")
		// Only a reader of the tombstone may create over it (judgeWrite): ann, not svc.
		apply(newWriter("acme", "ann", 0).event("lists", "r1", events.OpPut, 2, map[string]any{"owner": "bob"}))
		waitAudience(t, e.js, "lists", "r1", 3, "u:bob", "u:ann")
	})
	t.Run("a follower's parent moves twice", func(t *testing.T) {
		apply(w.event("lists", "p1", events.OpPut, 0, map[string]any{"owner": "ann"}))
		apply(w.event("todos", "f1", events.OpPut, 0, map[string]any{"list": "p1"}))
		apply(w.event("lists", "p1", events.OpPatch, 1, map[string]any{"owner": "bob"}))
		apply(w.event("lists", "p1", events.OpPatch, 2, map[string]any{"owner": "carl"}))
		waitAudience(t, e.js, "todos", "f1", 1, "u:carl", "u:ann u:bob u:carl")
	})
}

// TestProjectorRules_RepublishedTombstoneReachesHolders: a tombstone
// published again from the view (a reseed) carries the same audience as
// the one apply published, so a holder that missed the delete learns of
// it from the copy.
func TestProjectorRules_RepublishedTombstoneReachesHolders(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, ownerRules)})
	w := newWriter("acme", "svc", 0)
	for _, ev := range []*events.Event{
		w.event("lists", "d1", events.OpPut, 0, map[string]any{"owner": "ann"}),
		w.event("lists", "d1", events.OpPatch, 1, map[string]any{"owner": "bob"}),
		w.event("lists", "d1", events.OpDelete, 2, nil),
	} {
		waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	}
	waitAudience(t, e.js, "lists", "d1", 3, "u:ann u:bob", "u:ann u:bob")

	purgeStream(t, e, events.StreamChanges)
	waitFor(t, 20*time.Second, "the reseed", func() bool { return p.Stats().Reseeds > 0 && msgCount(t, e.js, events.StreamChanges) == 1 })
	m := lastChangeMsg(t, e.js, "acme", "lists", "d1")
	if id := m.Header.Get(jetstream.MsgIDHeader); !strings.HasPrefix(id, "seed:") {
		t.Fatalf("last change %q is not a reseeded copy", id)
	}
	if r, was, _ := audienceOf(m); r != "u:ann u:bob" || was != "u:ann u:bob" {
		t.Errorf("reseeded tombstone: readers %q was %q, want both \"u:ann u:bob\"", r, was)
	}
}
