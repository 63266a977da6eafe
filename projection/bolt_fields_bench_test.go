package projection_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// BenchmarkBoltDocsWithField: the followers of one parent among 10,000
// documents of their collection (what the projector asks for each write
// of a parent under sync rules).
func BenchmarkBoltDocsWithField(b *testing.B) {
	s := mustOpenBolt(b, "")
	docs := make([]projection.Doc, 0, 10000)
	for i := range 10000 {
		docs = append(docs, projection.Doc{Tenant: "t", Collection: "todos", ID: fmt.Sprintf("t%05d", i), Version: 1,
			Fields: events.Fields{"list": []byte(fmt.Sprintf(`"l%d"`, i%3333)), "title": []byte(`"something to do"`)}})
	}
	if err := s.Commit(context.Background(), &projection.Batch{Checkpoint: 1, Docs: docs}); err != nil {
		b.Fatal(err)
	}
	if _, err := s.DocsWithField(context.Background(), "t", "todos", "list", "l7"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got, err := s.DocsWithField(context.Background(), "t", "todos", "list", "l7")
		if err != nil || len(got) != 3 {
			b.Fatalf("found %d, err %v", len(got), err)
		}
	}
}
