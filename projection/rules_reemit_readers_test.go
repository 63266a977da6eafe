package projection_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestRulesReemit_ReadersPastTheBound: a list written under rules that
// read it by owner only names 6000 members, which the new rules make
// readers: 78 KB of readers, over MaxAudienceBytes (16 KiB) and over the
// 64 KiB of headers JetStream takes. The re-emission under the new rules
// keeps the bound: the copy goes with nobody as readers (every earlier
// holder gets its Left notice, nobody reads a state the header could not
// name), the list stays in the view, and the projector says so: a warning,
// Stats.OverAudience, never a dead letter far from the cause. A smaller
// list of the same run gets its new readers.
func TestRulesReemit_ReadersPastTheBound(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	byOwner := `
collections:
  lists:
    read:  [{user: owner}]
  todos:
    follow: {collection: lists, field: list}
`
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, byOwner)})
	ann := newWriter("acme", "ann", 0)
	members := []any{}
	for i := 0; i < 6000; i++ {
		members = append(members, fmt.Sprintf("user-%05d", i))
	}
	big := ann.event("lists", "big", events.OpPut, 0, map[string]any{"owner": "ann", "members": members})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, big), big.ID))
	small := ann.event("lists", "small", events.OpPut, 0, map[string]any{"owner": "ann", "members": "bob"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, small), small.ID))
	waitAudience(t, e.js, "lists", "small", 1, "u:ann", "")
	waitAudience(t, e.js, "lists", "big", 1, "u:ann", "")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	byMembers := strings.Replace(byOwner, "read:  [{user: owner}]", "read:  [{user: owner}, {user: members}]", 1)
	p = startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, byMembers)})
	waitAudience(t, e.js, "lists", "small", 1, "u:ann u:bob", "u:ann u:bob")
	waitAudience(t, e.js, "lists", "big", 1, "", "u:ann")
	if n := msgCount(t, e.js, events.StreamDead); n != 0 {
		for _, m := range streamMsgs(t, e.js, events.StreamDead) {
			t.Logf("DEAD: %.300s", m.Data)
		}
		t.Errorf("%d dead letters, want none", n)
	}
	if got := p.Stats().OverAudience; got != 1 {
		t.Errorf("Stats.OverAudience = %d, want 1 (the big list)", got)
	}
	d, err := store.Get(context.Background(), big.Address())
	if err != nil || !d.Exists() || d.Version != 1 {
		t.Errorf("the big list in the view: v%d exists %v err %v, want v1", d.Version, d.Exists(), err)
	}
}
