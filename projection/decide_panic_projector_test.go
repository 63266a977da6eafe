package projection_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// Issue 11 item 11 end to end: the projector survives a panicking custom
// resolver, dead-letters the event with the panic's message, goes on, and
// Verify's rebuild decides the same.
func TestProjector_ResolverPanicKeepsGoing(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	g := projection.NewRegistry()
	if err := g.Register("buggy", projection.ResolverFunc(func(projection.Doc, *events.Event) (projection.Decision, error) {
		panic("resolver bug 42")
	})); err != nil {
		t.Fatal(err)
	}
	pol, err := g.Policies("buggy", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := newWriter("acme", "A", 0), newWriter("acme", "B", 0)
	publish(t, e.js, eventMsg(t, a.event("notes", "n1", events.OpPut, 0, map[string]any{"v": 1})), "")
	publish(t, e.js, eventMsg(t, b.event("notes", "n1", events.OpPut, 0, map[string]any{"v": 2})), "") // stale: the resolver runs
	last := publish(t, e.js, eventMsg(t, b.event("notes", "n2", events.OpPut, 0, map[string]any{"v": 3})), "")

	cfg := projection.Config{Policies: pol}
	p := startProjector(t, e.js, store, cfg)
	waitCheckpoint(t, p, last)
	waitFor(t, 20*time.Second, "the dead letter", func() bool { return msgCount(t, e.js, events.StreamDead) == 1 })
	dl, err := events.DecodeDeadLetter(readAll(t, e.js, events.StreamDead)[0].Data())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dl.Reason, "resolver bug 42") {
		t.Errorf("dead letter reason %q does not carry the panic", dl.Reason)
	}
	d, err := store.Get(context.Background(), events.DocAddress{Tenant: "acme", Collection: "notes", Doc: "n2"})
	if err != nil || d.Version != 1 {
		t.Fatalf("the event after the panic: v%d, %v", d.Version, err)
	}
	if _, err := projection.Verify(context.Background(), e.js, store, cfg); err != nil {
		t.Fatal(err)
	}
}
