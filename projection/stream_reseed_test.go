package projection_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// projectDocs projects ten documents through p, most of them at versions
// above 1 and one deleted (a tombstone), and returns the view's state of
// each, by address.
func projectDocs(t *testing.T, e *env, p *projection.Projector, store projection.Store) map[events.DocAddress]projection.Doc {
	t.Helper()
	w := newWriter("acme", "phone", 0)
	var last uint64
	for i := range 10 {
		doc := fmt.Sprintf("d%d", i)
		ev := w.event("notes", doc, events.OpPut, 0, map[string]any{"i": i})
		last = publish(t, e.js, eventMsg(t, ev), ev.ID)
		for v := range uint64(i % 3) {
			ev := w.event("notes", doc, events.OpPatch, v+1, map[string]any{"v": v + 2})
			last = publish(t, e.js, eventMsg(t, ev), ev.ID)
		}
	}
	del := w.event("notes", "d9", events.OpDelete, 1, nil)
	last = publish(t, e.js, eventMsg(t, del), del.ID)
	waitCheckpoint(t, p, last)
	waitFor(t, 10*time.Second, "a change per document", func() bool { return msgCount(t, e.js, events.StreamChanges) == 10 })
	return viewDocs(t, store)
}

func viewDocs(t *testing.T, store projection.Store) map[events.DocAddress]projection.Doc {
	t.Helper()
	docs := map[events.DocAddress]projection.Doc{}
	if err := store.Scan(context.Background(), func(d projection.Doc) error {
		docs[d.Address()] = d
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(docs) != 10 {
		t.Fatalf("%d documents in the view, want 10", len(docs))
	}
	return docs
}

// waitChangesMatch waits until CHANGES holds, for every document of want,
// a change of its state (version, deleted, fields), and checks the view
// kept those same states.
func waitChangesMatch(t *testing.T, e *env, store projection.Store, want map[events.DocAddress]projection.Doc) {
	t.Helper()
	waitFor(t, 20*time.Second, "CHANGES holding every document again", func() bool {
		return msgCount(t, e.js, events.StreamChanges) >= uint64(len(want))
	})
	for addr, d := range want {
		c := lastChange(t, e.js, addr)
		got := projection.DocFromChange(c)
		// The wire form: these tests run under the default policy, lww,
		// whose changes leave the per-field clocks out (the view keeps them).
		w := d.Change(nil)
		w.Clocks = nil
		wb, _ := events.EncodeChange(w)
		gb, _ := events.EncodeChange(got.Change(nil))
		if !bytes.Equal(wb, gb) {
			t.Errorf("CHANGES of %s: v%d deleted=%v %v, want v%d deleted=%v %v", addr.Doc, c.Version, c.Deleted, c.Fields, d.Version, d.Deleted, d.Fields)
		}
	}
	for addr, d := range viewDocs(t, store) {
		if d.Version != want[addr].Version {
			t.Errorf("view of %s at v%d after the reseed, want v%d unchanged", addr.Doc, d.Version, want[addr].Version)
		}
	}
}

func purgeStream(t *testing.T, e *env, name string) {
	t.Helper()
	s, err := e.js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestProjector_ReseedsChanges: CHANGES deleted and recreated, or purged,
// under a running projector or while it is stopped: the projector
// republishes every document's current change from the view, its
// authority, and CHANGES holds every document's state again.
func TestProjector_ReseedsChanges(t *testing.T) {
	cases := []struct {
		name    string
		running bool
		breakIt func(t *testing.T, e *env)
	}{
		{"recreated while running", true, func(t *testing.T, e *env) { recreateStream(t, e, events.StreamChanges) }},
		{"purged while running", true, func(t *testing.T, e *env) { purgeStream(t, e, events.StreamChanges) }},
		{"recreated while stopped", false, func(t *testing.T, e *env) { recreateStream(t, e, events.StreamChanges) }},
		{"purged while stopped", false, func(t *testing.T, e *env) { purgeStream(t, e, events.StreamChanges) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			store := mustOpenBolt(t, "")
			p := startProjector(t, e.js, store, projection.Config{})
			want := projectDocs(t, e, p, store)
			if !c.running {
				if err := p.Close(); err != nil {
					t.Fatal(err)
				}
			}
			c.breakIt(t, e)
			if !c.running {
				p = startProjector(t, e.js, store, projection.Config{})
			}
			waitChangesMatch(t, e, store, want)
			// And the projector goes on: a new write reaches CHANGES.
			w := newWriter("acme", "tablet", 0)
			ev := w.event("notes", "after", events.OpPut, 0, map[string]any{"x": 1})
			waitCheckpoint(t, p, publish(t, e.js, eventMsg(t, ev), ev.ID))
			waitFor(t, 10*time.Second, "the new change", func() bool { return msgCount(t, e.js, events.StreamChanges) == uint64(len(want)+1) })
			// CHANGES is whole again: a restart finds nothing to reseed.
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			p = startProjector(t, e.js, store, projection.Config{})
			if s := p.Stats(); s.Reseeds != 0 {
				t.Fatalf("restart after the reseed: stats %+v, want no reseed", s)
			}
		})
	}
}

// TestProjector_ReseedInterruptedStartsAgain: a reseed stopped half way
// (its publishes failing, then Close) records nothing, so the next start
// reseeds CHANGES again, whole.
func TestProjector_ReseedInterruptedStartsAgain(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{})
	want := projectDocs(t, e, p, store)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	purgeStream(t, e, events.StreamChanges)

	down := &downPubJS{JetStream: e.js, err: errServerDown}
	p2, err := projection.New(down, store, projection.Config{})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- p2.Start(context.Background()) }()
	waitFor(t, 10*time.Second, "the reseed publishing", func() bool { return down.attempts.Load() >= 1 })
	if err := p2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-started; err == nil {
		t.Fatal("Start succeeded while every publish failed")
	}
	if n := msgCount(t, e.js, events.StreamChanges); n != 0 {
		t.Fatalf("CHANGES holds %d messages after the failed reseed, want 0", n)
	}

	p3 := startProjector(t, e.js, store, projection.Config{})
	if s := p3.Stats(); s.Reseeds != 1 {
		t.Fatalf("stats %+v, want one reseed on start", s)
	}
	waitChangesMatch(t, e, store, want)
}

// TestProjector_ReseedsAfterPurgeHiddenByNewChanges: CHANGES purged and,
// before the projector's next look, refilled by as many new changes as it
// held, so neither its first sequence nor its message count gives the
// purge away. The view's document count does: every purged document comes
// back.
func TestProjector_ReseedsAfterPurgeHiddenByNewChanges(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{})
	projectDocs(t, e, p, store)
	purgeStream(t, e, events.StreamChanges)
	w := newWriter("acme", "tablet", 0)
	var last uint64
	for i := range 12 {
		ev := w.event("notes", fmt.Sprintf("new%d", i), events.OpPut, 0, map[string]any{"i": i})
		last = publish(t, e.js, eventMsg(t, ev), ev.ID)
	}
	waitCheckpoint(t, p, last)
	docs := viewDocs22(t, store)
	waitFor(t, 20*time.Second, "CHANGES holding all 22 documents", func() bool {
		return msgCount(t, e.js, events.StreamChanges) >= uint64(len(docs))
	})
	for _, d := range docs {
		if c := lastChange(t, e.js, d.Address()); c.Version != d.Version || c.Deleted != d.Deleted {
			t.Errorf("CHANGES of %s: v%d deleted=%v, want v%d deleted=%v", d.ID, c.Version, c.Deleted, d.Version, d.Deleted)
		}
	}
}

// viewDocs22 returns the view's documents, which must be the ten of
// projectDocs and twelve new ones.
func viewDocs22(t *testing.T, store projection.Store) []projection.Doc {
	t.Helper()
	var docs []projection.Doc
	if err := store.Scan(context.Background(), func(d projection.Doc) error {
		docs = append(docs, d)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(docs) != 22 {
		t.Fatalf("%d documents in the view, want 22", len(docs))
	}
	return docs
}
