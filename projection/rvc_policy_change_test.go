package projection_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestRVC_PolicyChangedToMergeDropsADocFromChanges: a document accepted
// under LWW (MaxDocBytes checked on the clock-less change) is, once its
// collection is switched to merge, too big to publish at all: a reseed
// dead-letters it and CHANGES never holds it again.
func TestRVC_PolicyChangedToMergeDropsADocFromChanges(t *testing.T) {
	e := newEnv(t, func(c *embedded.Config) { c.MaxPayload = 64 << 10 })
	store := mustOpenBolt(t, "")
	cfg := projection.Config{MaxDocBytes: 48 << 10}
	p := startProjector(t, e.js, store, cfg)
	w := newWriter("acme", "ann", 0)
	ev := w.event("notes", "n1", events.OpPut, 0, map[string]any{"title": "x"})
	waitCheckpoint(t, p, publish(t, e.js, eventMsg(t, ev), ev.ID))
	v := uint64(1)
	for b := 0; b < 3; b++ {
		f := map[string]any{}
		for i := range 500 {
			f[fmt.Sprintf("f%04d", b*500+i)] = 1
		}
		ev = w.event("notes", "n1", events.OpPatch, v, f)
		waitCheckpoint(t, p, publish(t, e.js, eventMsg(t, ev), ev.ID))
		v++
	}
	if c := lastChange(t, e.js, events.DocAddress{Tenant: "acme", Collection: "notes", Doc: "n1"}); c.Version != v {
		t.Fatalf("under lww CHANGES holds v%d, want v%d", c.Version, v)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := e.js.Stream(context.Background(), events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(context.Background()); err != nil { // an operator's purge: the reseed repairs it from the view
		t.Fatal(err)
	}
	cfg.Policies = projection.Policies{Collections: map[string]projection.Resolver{"notes": projection.Merge}}
	p = startProjector(t, e.js, store, cfg)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := s.GetLastMsgForSubject(context.Background(), events.ChangeSubject("acme", "notes", "n1")); err == nil {
			return
		} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("after the policy of notes became merge, the reseed never put n1 (v%d) back in CHANGES; stats %+v", v, p.Stats())
}
