package projection_test

import (
	"fmt"
	"testing"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestProjector_FollowerReemitCarriesClocksPastTheSizeBound: under LWW the live
// change of a follower is bounded by MaxDocBytes without its clocks
// (onWire), but reemitFollowers (audience.go) encodes d.Change(nil) WITH
// every clock. A follower well under the bound live is refused for good
// (max payload) when its parent's audience changes: the copy is
// dead-lettered and CHANGES keeps the follower under its OLD audience.
func TestProjector_FollowerReemitCarriesClocksPastTheSizeBound(t *testing.T) {
	e := newEnv(t, func(c *embedded.Config) { c.MaxPayload = 64 << 10 })
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{Rules: mustRules(t, testRules), MaxDocBytes: 48 << 10})
	ann := newWriter("acme", "ann", 0)
	ev := ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann", "team": "red"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	ev = ann.event("todos", "t1", events.OpPut, 0, map[string]any{"list": "l1"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	v := uint64(1)
	for b := 0; b < 3; b++ { // 1500 small fields, in three patches of 500
		f := map[string]any{}
		for i := range 500 {
			f[fmt.Sprintf("f%04d", b*500+i)] = 1
		}
		ev = ann.event("todos", "t1", events.OpPatch, v, f)
		waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
		v++
	}
	live := lastChangeMsg(t, e.js, "acme", "todos", "t1")
	c, err := events.DecodeChange(live.Data)
	if err != nil || c.Version != v {
		t.Fatalf("live change of t1: v%d err %v, want v%d", c.Version, err, v)
	}
	d, _ := store.Get(t.Context(), events.DocAddress{Tenant: "acme", Collection: "todos", Doc: "t1"})
	full, _ := events.EncodeChange(d.Change(nil))
	t.Logf("t1 v%d on CHANGES: %d bytes; with clocks (what a re-emit sends): %d bytes; max payload %d", v, len(live.Data), len(full), 64<<10)
	deadBefore := p.Stats().Dead

	ev = ann.event("lists", "l1", events.OpPatch, 1, map[string]any{"team": "blue"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	waitAudience(t, e.js, "lists", "l1", 2, "g:blue u:ann", "g:red u:ann")
	m := lastChangeMsg(t, e.js, "acme", "todos", "t1")
	r, w, _ := audienceOf(m)
	if r != "g:blue u:ann" {
		t.Fatalf("after l1 moved red->blue, t1's last change has readers=%q was=%q (team red still reads it); dead letters %d -> %d",
			r, w, deadBefore, p.Stats().Dead)
	}
}
