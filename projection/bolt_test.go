package projection_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
	"github.com/ebbsync/ebb/projection/storetest"
)

func TestBoltStore(t *testing.T) {
	storetest.RunStoreSuite(t, func(t *testing.T) projection.Store {
		s, err := projection.OpenBolt(filepath.Join(t.TempDir(), "view.db"), projection.BoltOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestBoltStore_Reopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "view.db")
	s, err := projection.OpenBolt(path, projection.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d := projection.Doc{Tenant: "t", Collection: "c", ID: "d", Version: 1}
	if err := s.Commit(ctx, &projection.Batch{Checkpoint: 3, Docs: []projection.Doc{d}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = projection.OpenBolt(path, projection.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cp, _ := s.Checkpoint(ctx)
	got, _ := s.Get(ctx, events.DocAddress{Tenant: "t", Collection: "c", Doc: "d"})
	if cp != 3 || got.Version != 1 {
		t.Fatalf("after reopen: checkpoint %d doc v%d", cp, got.Version)
	}
}
