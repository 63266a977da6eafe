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
