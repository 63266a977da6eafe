package projection_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestPartition_WriterAheadOfItsPartitionMarkApplies: one writer writes many
// events to a document of partition A, then creates a document of
// partition B. Partition B's high-water mark of that writer never saw the
// others (they are A's), so the new event is "ahead of the window" there
// and dead-lettered as invalid: a legitimate write refused only because
// the view is partitioned. (HoleWindow 64 stands for the default 65536.)
func TestPartition_WriterAheadOfItsPartitionMarkApplies(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	const n = 2
	a := events.DocAddress{Tenant: "acme", Collection: "notes", Doc: "a"}
	pa := projection.PartitionOfDoc(a, n)
	var b events.DocAddress
	for i := 0; ; i++ {
		b = events.DocAddress{Tenant: "acme", Collection: "notes", Doc: fmt.Sprintf("b%d", i)}
		if projection.PartitionOfDoc(b, n) != pa {
			break
		}
	}
	pb := projection.PartitionOfDoc(b, n)
	w := newWriter("acme", "sensor", 0)
	var last uint64
	for v := range 100 { // 100 updates of doc a (partition A), as one device
		ev := w.event("notes", "a", events.OpPut, uint64(v), map[string]any{"v": v})
		last = publish(t, e.js, eventMsg(t, ev), ev.ID)
	}
	evb := w.event("notes", b.Doc, events.OpPut, 0, map[string]any{"x": 1})
	last = publish(t, e.js, eventMsg(t, evb), evb.ID)
	ps, err := store.Partition(context.Background(), projection.Partition{Index: pb, Count: n})
	if err != nil {
		t.Fatal(err)
	}
	p := startProjector(t, e.js, ps, projection.Config{Partition: projection.Partition{Index: pb, Count: n}, HoleWindow: 64})
	waitCheckpoint(t, p, last)
	d, err := ps.Get(context.Background(), b)
	if err != nil || d.Version != 1 {
		t.Fatalf("doc %s (partition %d) after its writer's 101st event: version %d, err %v (dead %d): the write was refused as ahead of the window",
			b.Doc, pb, d.Version, err, p.Stats().Dead)
	}
}
