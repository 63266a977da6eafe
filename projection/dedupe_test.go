package projection

import (
	"reflect"
	"testing"
)

func TestHighWater_Record(t *testing.T) {
	type r = SeqRange
	tests := []struct {
		name       string
		start      HighWater
		seq        uint64
		window     uint64
		maxRanges  int
		want       HighWater
		wantForgot uint64
	}{
		{"next in order", HighWater{Seq: 2}, 3, 100, 10, HighWater{Seq: 3}, 0},
		{"first event", HighWater{}, 1, 100, 10, HighWater{Seq: 1}, 0},
		{"skip leaves a hole", HighWater{Seq: 2}, 5, 100, 10, HighWater{Seq: 5, Holes: []r{{3, 4}}}, 0},
		{"fill a single hole", HighWater{Seq: 5, Holes: []r{{3, 3}}}, 3, 100, 10, HighWater{Seq: 5}, 0},
		{"fill the start of a range", HighWater{Seq: 9, Holes: []r{{3, 5}}}, 3, 100, 10, HighWater{Seq: 9, Holes: []r{{4, 5}}}, 0},
		{"fill the end of a range", HighWater{Seq: 9, Holes: []r{{3, 5}}}, 5, 100, 10, HighWater{Seq: 9, Holes: []r{{3, 4}}}, 0},
		{"fill the middle splits", HighWater{Seq: 9, Holes: []r{{1, 1}, {3, 7}}}, 5, 100, 10,
			HighWater{Seq: 9, Holes: []r{{1, 1}, {3, 4}, {6, 7}}}, 0},
		{"holes past the window are forgotten", HighWater{Seq: 10, Holes: []r{{2, 2}, {5, 8}}}, 12, 5, 10,
			HighWater{Seq: 12, Holes: []r{{8, 8}, {11, 11}}}, 0},
		{"a jump keeps only the window", HighWater{Seq: 1}, 1_000_000_000, 1 << 16, 10,
			HighWater{Seq: 1_000_000_000, Holes: []r{{1_000_000_000 - 1<<16 + 1, 1_000_000_000 - 1}}}, 0},
		{"the range cap forgets the oldest", HighWater{Seq: 10, Holes: []r{{2, 3}, {5, 5}}}, 12, 100, 2,
			HighWater{Seq: 12, Holes: []r{{5, 5}, {11, 11}}}, 2},
		{"a split over the cap forgets the oldest", HighWater{Seq: 10, Holes: []r{{2, 8}}}, 5, 100, 1,
			HighWater{Seq: 10, Holes: []r{{6, 8}}}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.start
			h.Holes = append([]SeqRange(nil), tt.start.Holes...)
			if h.applied(tt.seq) {
				t.Fatalf("%d counts as applied in %+v before record", tt.seq, tt.start)
			}
			forgot := h.record(tt.seq, tt.window, tt.maxRanges)
			if !reflect.DeepEqual(h, tt.want) || forgot != tt.wantForgot {
				t.Fatalf("record(%d) on %+v = %+v forgot %d, want %+v forgot %d", tt.seq, tt.start, h, forgot, tt.want, tt.wantForgot)
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
