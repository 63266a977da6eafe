package projection_test

import (
	"path/filepath"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
	"github.com/ebbsync/ebb/projection/storetest"
)

func TestBoltStore_Partitions(t *testing.T) {
	storetest.RunPartitionSuite(t, func(t *testing.T) projection.PartitionedStore {
		s, err := projection.OpenBolt(filepath.Join(t.TempDir(), "view.db"), projection.BoltOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// A document's events, whoever writes them, and its current state are in
// one partition; the partitions are all used.
func TestPartitionOf(t *testing.T) {
	const n = 4
	used := map[int]int{}
	for i := range 200 {
		a := events.DocAddress{Tenant: "acme", Collection: "notes", Doc: "doc " + string(rune('a'+i%26)) + string(rune('0'+i/26))}
		want := projection.PartitionOfDoc(a, n)
		for _, client := range []string{"dev1", "dev2"} {
			if got := projection.PartitionOfSubject(events.EventSubject(a.Tenant, client, a.Collection, a.Doc), n); got != want {
				t.Fatalf("%v written by %s: partition %d, its document's is %d", a, client, got, want)
			}
		}
		used[want]++
	}
	if len(used) != n {
		t.Fatalf("200 documents used partitions %v, want all %d", used, n)
	}
	if got := projection.PartitionOfSubject("ebb.evt.garbage", n); got != 0 {
		t.Fatalf("a malformed subject is in partition %d, want 0", got)
	}
}
