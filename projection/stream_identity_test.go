package projection_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// recreateStream deletes stream name and creates it again with ebb's
// configuration: a new incarnation, its sequences starting over at 1.
func recreateStream(tb testing.TB, e *env, name string) {
	tb.Helper()
	ctx := context.Background()
	if err := e.js.DeleteStream(ctx, name); err != nil {
		tb.Fatalf("delete stream %s: %v", name, err)
	}
	if err := events.EnsureStreams(ctx, e.js, events.StreamOptions{}); err != nil {
		tb.Fatalf("recreate stream %s: %v", name, err)
	}
}

// checkApplied checks that every event of evs made its document: each is a
// put of its own document.
func checkApplied(t *testing.T, store projection.Store, evs []*events.Event) {
	t.Helper()
	for _, ev := range evs {
		d, err := store.Get(context.Background(), ev.Address())
		if err != nil {
			t.Fatal(err)
		}
		if d.Version != 1 || d.Event != ev.ID {
			t.Errorf("event %s (client seq %d) on %s: document v%d by %q, want v1 by it (skipped)", ev.ID, ev.Seq, ev.Doc, d.Version, d.Event)
		}
	}
}

// TestProjector_EventsRecreatedWhileStopped projects 20 events, deletes
// and recreates EVENTS, publishes 10 new events (sequences 1..10, below the
// old checkpoint 20) and restarts the projector: it must apply every new
// one, not resume at 21 and skip them.
func TestProjector_EventsRecreatedWhileStopped(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	w := newWriter("acme", "phone", 0)
	old, last := publishPuts(t, e, w, 20)
	p := startProjector(t, e.js, store, projection.Config{})
	waitCheckpoint(t, p, last)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	recreateStream(t, e, events.StreamEvents)
	fresh, last := publishPuts(t, e, w, 10)
	if last >= 20 {
		t.Fatalf("recreated EVENTS ends at %d, want below the old checkpoint", last)
	}
	p = startProjector(t, e.js, store, projection.Config{})
	waitFor(t, 30*time.Second, "every new event applied", func() bool {
		d, err := store.Get(context.Background(), fresh[len(fresh)-1].Address())
		return err == nil && d.Version == 1
	})
	waitCheckpoint(t, p, last)
	checkApplied(t, store, fresh)
	checkApplied(t, store, old)
	if s := p.Stats(); s.Applied != uint64(len(fresh)) || s.Duplicates != 0 || s.Checkpoint != last {
		t.Errorf("stats %+v, want %d applied, checkpoint %d", s, len(fresh), last)
	}
	marks, err := store.Streams(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if marks.Reanchors != 1 || marks.Events.Created.IsZero() {
		t.Errorf("stream marks %+v, want one re-anchor on the new EVENTS", marks)
	}
}

// TestProjector_EventsRecreatedWhileRunning does the same under a running
// projector: when its consumer goes with the old stream, it must not
// recreate it at the old checkpoint on the new one.
func TestProjector_EventsRecreatedWhileRunning(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	w := newWriter("acme", "phone", 0)
	_, last := publishPuts(t, e, w, 20)
	p := startProjector(t, e.js, store, projection.Config{})
	waitCheckpoint(t, p, last)

	recreateStream(t, e, events.StreamEvents)
	fresh, _ := publishPuts(t, e, w, 10)
	waitFor(t, 30*time.Second, "every new event applied", func() bool {
		d, err := store.Get(context.Background(), fresh[len(fresh)-1].Address())
		return err == nil && d.Version == 1
	})
	checkApplied(t, store, fresh)
	// A duplicate of an event applied before the stream was recreated is
	// judged by its writer's mark: a duplicate, not a second change.
	publish(t, e.js, eventMsg(t, fresh[0]), "")
	waitFor(t, 30*time.Second, "the duplicate judged", func() bool { return p.Stats().Duplicates == 1 })
}

// TestProjector_ServerRestartKeepsIdentity: restarting the server keeps
// EVENTS and CHANGES the same incarnations: the projector neither
// re-anchors nor reseeds.
func TestProjector_ServerRestartKeepsIdentity(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	_, last := publishPuts(t, e, newWriter("acme", "phone", 0), 20)
	p := startProjector(t, e.js, store, projection.Config{})
	waitCheckpoint(t, p, last)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	e.nc.Close()
	srv := embeddedtest.MustRestart(t, e.srv)
	nc := embeddedtest.MustConnect(t, srv)
	js := embeddedtest.MustJetStream(t, nc)
	p = startProjector(t, js, store, projection.Config{})
	if s := p.Stats(); s.Reanchors != 0 || s.Reseeds != 0 || s.Checkpoint != last {
		t.Fatalf("after a server restart: stats %+v, want checkpoint %d, no re-anchor, no reseed", s, last)
	}
}

// TestProjector_ReadyWhileEventsMissing: EVENTS deleted under a running
// projector and not created again: Ready says the consumer is failing once
// StallTimeout has passed; EVENTS back, the projector re-anchors on it and
// is ready again.
func TestProjector_ReadyWhileEventsMissing(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	w := newWriter("acme", "phone", 0)
	_, last := publishPuts(t, e, w, 5)
	p := startProjector(t, e.js, store, projection.Config{StallTimeout: 300 * time.Millisecond})
	waitCheckpoint(t, p, last)
	waitFor(t, 10*time.Second, "ready", func() bool { return p.Ready() == nil })
	if err := e.js.DeleteStream(context.Background(), events.StreamEvents); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "not ready while EVENTS is missing", func() bool {
		err := p.Ready()
		return err != nil && strings.Contains(err.Error(), "consumer on EVENTS")
	})
	if err := events.EnsureStreams(context.Background(), e.js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	fresh, _ := publishPuts(t, e, w, 5)
	waitFor(t, 30*time.Second, "the new events applied", func() bool {
		d, err := store.Get(context.Background(), fresh[len(fresh)-1].Address())
		return err == nil && d.Version == 1
	})
	waitFor(t, 10*time.Second, "ready again", func() bool { return p.Ready() == nil })
	checkApplied(t, store, fresh)
}
