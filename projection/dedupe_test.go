package projection

import (
	"reflect"
	"testing"
)

func TestHighWater_Record(t *testing.T) {
	type r = SeqRange
	tests := []struct {
		name   string
		start  HighWater
		seq    uint64
		window uint64
		want   HighWater
	}{
		{"next in order", HighWater{Seq: 2}, 3, 100, HighWater{Seq: 3}},
		{"first event", HighWater{}, 1, 100, HighWater{Seq: 1}},
		{"skip leaves a hole", HighWater{Seq: 2}, 5, 100, HighWater{Seq: 5, Holes: []r{{3, 4}}}},
		{"fill a single hole", HighWater{Seq: 5, Holes: []r{{3, 3}}}, 3, 100, HighWater{Seq: 5}},
		{"fill the start of a range", HighWater{Seq: 9, Holes: []r{{3, 5}}}, 3, 100, HighWater{Seq: 9, Holes: []r{{4, 5}}}},
		{"fill the end of a range", HighWater{Seq: 9, Holes: []r{{3, 5}}}, 5, 100, HighWater{Seq: 9, Holes: []r{{3, 4}}}},
		{"fill the middle splits", HighWater{Seq: 9, Holes: []r{{1, 1}, {3, 7}}}, 5, 100,
			HighWater{Seq: 9, Holes: []r{{1, 1}, {3, 4}, {6, 7}}}},
		{"holes past the window are forgotten", HighWater{Seq: 10, Holes: []r{{2, 2}, {5, 8}}}, 12, 5,
			HighWater{Seq: 12, Holes: []r{{8, 8}, {11, 11}}}},
		{"a jump keeps only the window", HighWater{Seq: 1}, 1_000_000_000, 1 << 16,
			HighWater{Seq: 1_000_000_000, Holes: []r{{1_000_000_000 - 1<<16 + 1, 1_000_000_000 - 1}}}},
		{"fill the oldest single hole", HighWater{Seq: 9, Holes: []r{{3, 3}, {5, 5}}}, 3, 100,
			HighWater{Seq: 9, Holes: []r{{5, 5}}}},
		{"no cap on ranges inside the window", HighWater{Seq: 10, Holes: []r{{2, 3}, {5, 5}}}, 12, 100,
			HighWater{Seq: 12, Holes: []r{{2, 3}, {5, 5}, {11, 11}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.start
			h.Holes = append([]SeqRange(nil), tt.start.Holes...)
			if h.applied(tt.seq) {
				t.Fatalf("%d counts as applied in %+v before record", tt.seq, tt.start)
			}
			h.record(tt.seq, tt.window)
			if !reflect.DeepEqual(h, tt.want) {
				t.Fatalf("record(%d) on %+v = %+v, want %+v", tt.seq, tt.start, h, tt.want)
			}
			if !h.applied(tt.seq) {
				t.Fatalf("%d not applied after record: %+v", tt.seq, h)
			}
		})
	}
}

func TestHighWater_Applied(t *testing.T) {
	h := HighWater{Seq: 10, Holes: []SeqRange{{3, 3}, {6, 8}}}
	for seq, want := range map[uint64]bool{1: true, 2: true, 3: false, 4: true, 5: true, 6: false, 7: false, 8: false, 9: true, 10: true, 11: false} {
		if got := h.applied(seq); got != want {
			t.Errorf("applied(%d) = %v, want %v", seq, got, want)
		}
	}
}
