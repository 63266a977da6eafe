package storetest

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// testAudience: a state's cumulative audience (Doc.Audience) is stored
// with it and read back by Get, Scan and DocsWithField, a tombstone's
// too; a state committed without one reads with none; a later state
// replaces it whole.
func testAudience(t *testing.T, s projection.Store) {
	held := doc(addr("t", "todos", "a1"), 2, "list", `"l1"`)
	held.Audience = []string{"g:red", "u:ann", "u:bob"}
	gone := doc(addr("t", "todos", "a2"), 3)
	gone.Deleted = true
	gone.Audience = []string{"u:carl"}
	bare := doc(addr("t", "todos", "a3"), 1, "list", `"l1"`)
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 1, Docs: []projection.Doc{held, gone, bare}}))

	want := map[string][]string{"a1": held.Audience, "a2": gone.Audience, "a3": nil}
	check := func(how string, d projection.Doc) {
		t.Helper()
		if w, ok := want[d.ID]; ok && !slices.Equal(d.Audience, w) {
			t.Errorf("%s %s: audience %q, want %q", how, d.ID, d.Audience, w)
		}
	}
	for id := range want {
		d, err := s.Get(ctx, addr("t", "todos", id))
		must(t, err)
		check("Get", d)
	}
	must(t, s.Scan(ctx, func(d projection.Doc) error { check("Scan", d); return nil }))
	found, err := s.DocsWithField(ctx, "t", "todos", "list", "l1")
	must(t, err)
	if len(found) != 2 {
		t.Fatalf("DocsWithField found %d, want 2", len(found))
	}
	for _, d := range found {
		check("DocsWithField", d)
	}

	next := held
	next.Version = 3
	next.Audience = []string{"u:dan"}
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 2, Docs: []projection.Doc{next}}))
	d, err := s.Get(ctx, held.Address())
	must(t, err)
	if !slices.Equal(d.Audience, next.Audience) {
		t.Errorf("after a later state: audience %q, want %q", d.Audience, next.Audience)
	}
	// The change a state makes never carries the audience.
	if c := d.Change(nil); c == nil {
		t.Fatal("no change")
	}
}

// testKept: what a parent's tombstone keeps of its last live state for
// its followers' write rules (Doc.Kept) is stored with it and read back
// by Get and Scan: some fields, none (kept, but empty: not nil), or
// nothing kept (nil).
func testKept(t *testing.T, s projection.Store) {
	some := doc(addr("t", "lists", "k1"), 2)
	some.Deleted = true
	some.Kept = events.Fields{"owner": json.RawMessage(`"ann"`)}
	empty := doc(addr("t", "lists", "k2"), 2)
	empty.Deleted = true
	empty.Kept = events.Fields{}
	none := doc(addr("t", "lists", "k3"), 2)
	none.Deleted = true
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 1, Docs: []projection.Doc{some, empty, none}}))
	want := map[string]events.Fields{"k1": some.Kept, "k2": empty.Kept, "k3": nil}
	check := func(how string, d projection.Doc) {
		t.Helper()
		w, ok := want[d.ID]
		if !ok {
			return
		}
		if (d.Kept == nil) != (w == nil) || !maps.EqualFunc(d.Kept, w, func(x, y json.RawMessage) bool { return string(x) == string(y) }) {
			t.Errorf("%s %s: kept %v (nil %v), want %v (nil %v)", how, d.ID, d.Kept, d.Kept == nil, w, w == nil)
		}
	}
	for id := range want {
		d, err := s.Get(ctx, addr("t", "lists", id))
		must(t, err)
		check("Get", d)
	}
	must(t, s.Scan(ctx, func(d projection.Doc) error { check("Scan", d); return nil }))
}
