package storetest

import (
	"errors"
	"testing"

	"github.com/ebbsync/ebb/projection"
)

// RunPartitionSuite runs the cases of projection.PartitionedStore against
// fresh stores from newStore, which must return an empty store and
// arrange its cleanup with t.Cleanup. A store implementation that
// supports several projectors over one view (see projection.Group) must
// pass it as well as RunStoreSuite.
func RunPartitionSuite(t *testing.T, newStore func(t *testing.T) projection.PartitionedStore) {
	cases := []struct {
		name string
		fn   func(t *testing.T, s projection.PartitionedStore)
	}{
		{"SeparateProgressSharedView", testPartitionsSeparate},
		{"Fence", testPartitionFence},
		{"CountFixed", testPartitionCountFixed},
		{"StartFromWhole", testPartitionFromWhole},
		{"Close", testPartitionClose},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newStore(t)) })
	}
}

func mustPartition(t *testing.T, s projection.PartitionedStore, i, n int) projection.Store {
	t.Helper()
	p, err := s.Partition(ctx, projection.Partition{Index: i, Count: n})
	must(t, err)
	return p
}

func u64p(v uint64) *uint64 { return &v }

func testPartitionsSeparate(t *testing.T, s projection.PartitionedStore) {
	p0, p1 := mustPartition(t, s, 0, 2), mustPartition(t, s, 1, 2)
	a, b := addr("t", "c", "a"), addr("t", "c", "b")
	w := projection.ClientKey{Tenant: "t", Client: "c1"}
	must(t, p0.Commit(ctx, &projection.Batch{Checkpoint: 5, Prev: u64p(0), Docs: []projection.Doc{doc(a, 1)},
		HighWater: map[projection.ClientKey]projection.HighWater{w: {Seq: 3}},
		Outbox:    []projection.OutboxEntry{{Subject: "s", MsgID: "m0"}}}))
	must(t, p1.Commit(ctx, &projection.Batch{Checkpoint: 9, Prev: u64p(0), Docs: []projection.Doc{doc(b, 1)},
		HighWater: map[projection.ClientKey]projection.HighWater{w: {Seq: 4}}}))
	for i, c := range []struct {
		s      projection.Store
		cp, hw uint64
		outbox int
	}{{p0, 5, 3, 1}, {p1, 9, 4, 0}} {
		cp, err := c.s.Checkpoint(ctx)
		must(t, err)
		hw, err := c.s.HighWater(ctx, "t", "c1")
		must(t, err)
		out, err := c.s.Outbox(ctx, 0)
		must(t, err)
		if cp != c.cp || hw.Seq != c.hw || len(out) != c.outbox {
			t.Errorf("partition %d: checkpoint %d, mark %d, outbox %d; want %d, %d, %d", i, cp, hw.Seq, len(out), c.cp, c.hw, c.outbox)
		}
		for _, x := range []projection.Doc{doc(a, 1), doc(b, 1)} {
			d, err := c.s.Get(ctx, x.Address())
			must(t, err)
			if d.Version != 1 {
				t.Errorf("partition %d does not see document %v of the shared view", i, x.Address())
			}
		}
	}
	d, err := s.Get(ctx, b)
	must(t, err)
	if d.Version != 1 {
		t.Errorf("the whole store does not see its partitions' documents")
	}
	if err := s.Commit(ctx, &projection.Batch{Checkpoint: 10}); !errors.Is(err, projection.ErrCheckpoint) {
		t.Errorf("Commit on the whole of a partitioned store = %v, want ErrCheckpoint", err)
	}
}

func testPartitionFence(t *testing.T, s projection.PartitionedStore) {
	p := mustPartition(t, s, 0, 3)
	a := addr("t", "c", "a")
	must(t, p.Commit(ctx, &projection.Batch{Checkpoint: 5, Prev: u64p(0), Docs: []projection.Doc{doc(a, 1)}}))
	// A second projector of the partition decided from checkpoint 0 too.
	err := p.Commit(ctx, &projection.Batch{Checkpoint: 5, Prev: u64p(0), Docs: []projection.Doc{doc(a, 2)},
		Outbox: []projection.OutboxEntry{{Subject: "s", MsgID: "late"}}})
	if !errors.Is(err, projection.ErrCheckpoint) {
		t.Fatalf("fenced Commit = %v, want ErrCheckpoint", err)
	}
	d, err := p.Get(ctx, a)
	must(t, err)
	out, err := p.Outbox(ctx, 0)
	must(t, err)
	if d.Version != 1 || len(out) != 0 {
		t.Fatalf("a fenced Commit wrote: version %d, outbox %d", d.Version, len(out))
	}
	must(t, p.Commit(ctx, &projection.Batch{Checkpoint: 6, Prev: u64p(5), Docs: []projection.Doc{doc(a, 2)}}))
}

func testPartitionCountFixed(t *testing.T, s projection.PartitionedStore) {
	mustPartition(t, s, 0, 4)
	if _, err := s.Partition(ctx, projection.Partition{Index: 0, Count: 2}); !errors.Is(err, projection.ErrInvalidConfig) {
		t.Fatalf("Partition with another count = %v, want ErrInvalidConfig", err)
	}
	if _, err := s.Partition(ctx, projection.Partition{Index: 4, Count: 4}); !errors.Is(err, projection.ErrInvalidConfig) {
		t.Fatalf("Partition index out of range = %v, want ErrInvalidConfig", err)
	}
	mustPartition(t, s, 3, 4)
}

func testPartitionFromWhole(t *testing.T, s projection.PartitionedStore) {
	marks := projection.StreamMarks{Events: projection.StreamMark{FirstSeq: 1}}
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 10, Streams: &marks,
		HighWater: map[projection.ClientKey]projection.HighWater{{Tenant: "t", Client: "c1"}: {Seq: 7, Holes: []projection.SeqRange{{From: 2, To: 3}}}},
		Outbox:    []projection.OutboxEntry{{Subject: "s", MsgID: "left1"}, {Subject: "s", MsgID: "left2"}}}))
	for i := range 2 {
		p := mustPartition(t, s, i, 2)
		cp, err := p.Checkpoint(ctx)
		must(t, err)
		hw, err := p.HighWater(ctx, "t", "c1")
		must(t, err)
		m, err := p.Streams(ctx)
		must(t, err)
		out, err := p.Outbox(ctx, 0)
		must(t, err)
		want := 0
		if i == 0 {
			want = 2
		}
		if cp != 10 || hw.Seq != 7 || len(hw.Holes) != 1 || m.Events.FirstSeq != 1 || len(out) != want {
			t.Errorf("partition %d from the whole store: checkpoint %d, mark %+v, marks %+v, outbox %d (want 10, 7 with a hole, the marks, %d)", i, cp, hw, m, len(out), want)
		}
		if i == 0 && len(out) == 2 && (out[0].MsgID != "left1" || out[1].MsgID != "left2") {
			t.Errorf("partition 0 outbox = %+v, want the whole store's in order", out)
		}
	}
}

func testPartitionClose(t *testing.T, s projection.PartitionedStore) {
	p := mustPartition(t, s, 1, 2)
	must(t, p.Close())
	if _, err := p.Checkpoint(ctx); !errors.Is(err, projection.ErrClosed) {
		t.Fatalf("closed partition Checkpoint = %v, want ErrClosed", err)
	}
	if _, err := s.Checkpoint(ctx); err != nil {
		t.Fatalf("closing a partition closed the store: %v", err)
	}
	q := mustPartition(t, s, 0, 2)
	must(t, s.Close())
	if _, err := q.Checkpoint(ctx); !errors.Is(err, projection.ErrClosed) {
		t.Fatalf("partition of a closed store: Checkpoint = %v, want ErrClosed", err)
	}
}
