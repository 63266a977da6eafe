package storetest

import (
	"slices"
	"testing"

	"github.com/ebbsync/ebb/projection"
)

// testDocsWithField: the followers of a parent under sync rules are found
// by a field's string value, live documents of one collection and tenant
// only, in id order.
func testDocsWithField(t *testing.T, s projection.Store) {
	gone := doc(addr("t", "todos", "t4"), 2)
	gone.Deleted = true
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 1, Docs: []projection.Doc{
		doc(addr("t", "todos", "t2"), 1, "list", `"l1"`),
		doc(addr("t", "todos", "t1"), 1, "list", `"l1"`, "title", `"a"`),
		doc(addr("t", "todos", "t3"), 1, "list", `"l2"`),
		gone,
		doc(addr("t", "todos", "t5"), 1, "list", `["l1"]`), // a list is not the string
		doc(addr("t", "todos", "t6"), 1, "other", `"l1"`),
		doc(addr("t", "lists", "x"), 1, "list", `"l1"`),  // another collection
		doc(addr("u", "todos", "t1"), 1, "list", `"l1"`), // another tenant
		doc(addr("t", "todos", "t7"), 1, "list", `1`),
	}}))
	got, err := s.DocsWithField(ctx, "t", "todos", "list", "l1")
	must(t, err)
	var ids []string
	for _, d := range got {
		ids = append(ids, d.ID)
		if d.Tenant != "t" || d.Collection != "todos" || d.Version != 1 {
			t.Errorf("found %+v", d)
		}
	}
	if want := []string{"t1", "t2"}; !slices.Equal(ids, want) {
		t.Errorf("DocsWithField(list = l1) = %q, want %q", ids, want)
	}
	none, err := s.DocsWithField(ctx, "t", "todos", "list", "1")
	must(t, err)
	if len(none) != 0 {
		t.Errorf("DocsWithField(list = \"1\") found the number 1: %+v", none)
	}
}

// testDocsWithFieldAfterMoves: what DocsWithField finds agrees with a scan
// of the view after followers move between parents, are deleted, created
// again, and change the field to something that is no string, over
// several commits (one of which holds two states of one document), for
// every parent asked about before and after.
func testDocsWithFieldAfterMoves(t *testing.T, s projection.Store) {
	parents := []string{"l1", "l2", "l3"}
	check := func(when string) {
		t.Helper()
		for _, tenant := range []string{"t", "u"} {
			for _, p := range parents {
				got, err := s.DocsWithField(ctx, tenant, "todos", "list", p)
				must(t, err)
				var ids, want []string
				for _, d := range got {
					ids = append(ids, d.ID)
				}
				must(t, s.Scan(ctx, func(d projection.Doc) error {
					if d.Tenant == tenant && d.Collection == "todos" && d.Exists() && string(d.Fields["list"]) == `"`+p+`"` {
						want = append(want, d.ID)
					}
					return nil
				}))
				if !slices.Equal(ids, want) {
					t.Errorf("%s: DocsWithField(%s, list = %s) = %q, a scan finds %q", when, tenant, p, ids, want)
				}
			}
		}
	}
	check("empty")
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 1, Docs: []projection.Doc{
		doc(addr("t", "todos", "a"), 1, "list", `"l1"`),
		doc(addr("t", "todos", "b"), 1, "list", `"l1"`),
		doc(addr("t", "todos", "c"), 1, "list", `"l2"`),
		doc(addr("u", "todos", "a"), 1, "list", `"l1"`),
	}}))
	check("created")
	gone := doc(addr("t", "todos", "b"), 2)
	gone.Deleted = true
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 2, Docs: []projection.Doc{
		doc(addr("t", "todos", "a"), 2, "list", `"l2"`), // moved
		gone,
		doc(addr("t", "todos", "c"), 2, "list", `"l3"`), // moved twice in one batch
		doc(addr("t", "todos", "c"), 3, "list", `"l1"`),
		doc(addr("u", "todos", "a"), 2, "list", `7`), // no string
	}}))
	check("moved and deleted")
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 3, Docs: []projection.Doc{
		doc(addr("t", "todos", "b"), 3, "list", `"l2"`), // created again elsewhere
		doc(addr("u", "todos", "a"), 3, "list", `"l3"`),
		doc(addr("t", "todos", "d"), 1, "list", `"l3"`, "title", `"x"`),
	}}))
	check("created again")
}
