package projection

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// Issue 11 item 5: with a wide publisher window (MaxInFlight 16384) one hot
// document's events wait behind each other while the writer's events of
// other documents overtake them, leaving one hole per write. Every late
// event is a first-time event and must apply, however many holes there
// are below the mark, as long as they are inside the window.
func TestApplier_ManyHolesInsideWindowAreNotDuplicates(t *testing.T) {
	r := newApplierRun(t, Config{})
	const holes = 5000 // more than the 4096 ranges the old scheme kept
	// Sequences 2, 4, ..., 2*holes (other documents) arrive first, then the
	// hot document's 1, 3, ..., 2*holes-1.
	var early, late []*events.Event
	for s := uint64(2); s <= 2*holes; s += 2 {
		early = append(early, seqEvent("w", s, fmt.Sprintf("other-%d", s)))
	}
	for s := uint64(1); s < 2*holes; s += 2 {
		late = append(late, seqEvent("w", s, "hot"))
	}
	r.batch(early)
	r.batch(late)
	dups := 0
	for _, ev := range late {
		if o := r.outcome(ev.ID); o != events.OutcomeApplied {
			dups++
			if dups < 3 {
				t.Errorf("late event seq %d: outcome %q (%s), want applied", ev.Seq, o, r.receipts[ev.ID][0].Reason)
			}
		}
	}
	if dups > 0 {
		t.Fatalf("%d of %d first-time late events not applied", dups, len(late))
	}
	// And each is applied once: all are duplicates now.
	for _, ev := range late[:10] {
		r.event(ev)
		if got := r.receipts[ev.ID][1].Outcome; got != events.OutcomeDuplicate {
			t.Errorf("republished seq %d: %q, want duplicate", ev.Seq, got)
		}
	}
	hw, err := r.store.HighWater(t.Context(), "t", "w")
	if err != nil {
		t.Fatal(err)
	}
	if hw.Seq != 2*holes || hw.Holes != nil {
		t.Errorf("mark after every hole filled: %+v", hw)
	}
}

// Issue 12: a client sequence more than the window ahead of the writer's
// mark is refused, so it cannot make the writer's later real writes look
// like duplicates (or forget their holes).
func TestApplier_SequenceJumpBeyondWindowRefused(t *testing.T) {
	r := newApplierRun(t, Config{HoleWindow: 100})
	r.event(seqEvent("w", 1, "d1"))
	jump := seqEvent("w", 1+100+1, "d2")
	s := r.event(jump)
	if o := r.outcome(jump.ID); o != events.OutcomeInvalid {
		t.Fatalf("jump of 101 past mark 1 (window 100): outcome %q, want invalid", o)
	}
	dl := r.dead[s]
	if dl == nil || !strings.Contains(dl.Reason, "window") {
		t.Fatalf("dead letter of the jump: %+v, want one whose reason names the window", dl)
	}
	// The writer's next real writes apply.
	for seq := uint64(2); seq <= 5; seq++ {
		ev := seqEvent("w", seq, "d1")
		r.event(ev)
		if o := r.outcome(ev.ID); o != events.OutcomeApplied {
			t.Fatalf("real write seq %d after the refused jump: %q, want applied", seq, o)
		}
	}
	// A jump of exactly the window is a legitimate overtaking: applied.
	ok := seqEvent("w", 5+100, "d3")
	r.event(ok)
	if o := r.outcome(ok.ID); o != events.OutcomeApplied {
		t.Fatalf("jump of exactly the window: %q, want applied", o)
	}
}

// A sequence at or below mark-window cannot be told from a duplicate: it is
// answered duplicate with a reason that says so, never silently.
func TestApplier_TooFarBehindSaysSo(t *testing.T) {
	r := newApplierRun(t, Config{HoleWindow: 10})
	r.event(seqEvent("w", 5, "d"))
	r.event(seqEvent("w", 15, "d")) // hole 6..14; 1..4 and 5 below
	old := seqEvent("w", 5, "e")
	r.event(old)
	rc := r.receipts[old.ID][0]
	if rc.Outcome != events.OutcomeDuplicate || !strings.Contains(rc.Reason, "too far behind") {
		t.Fatalf("seq 5 at mark 15, window 10: %s %q, want duplicate saying too far behind", rc.Outcome, rc.Reason)
	}
	in := seqEvent("w", 6, "e")
	r.event(in)
	if o := r.outcome(in.ID); o != events.OutcomeApplied {
		t.Fatalf("seq 6 inside the window: %q, want applied", o)
	}
}

// The stored mark keeps every hole inside the window however many there
// are, reads back what was written, and reads the format of older stores.
func TestHighWater_EncodingKeepsEveryHole(t *testing.T) {
	var every HighWater
	for s := uint64(2); s <= 2*40000; s += 2 {
		every.record(s, DefaultHoleWindow)
	}
	cases := map[string]HighWater{
		"none":        {Seq: 7},
		"zero":        {},
		"few":         {Seq: 100, Holes: []SeqRange{{3, 3}, {50, 60}}},
		"every other": every,
		"one jump":    {Seq: 1 << 40, Holes: []SeqRange{{1<<40 - DefaultHoleWindow + 1, 1<<40 - 1}}},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			b := encodeHighWater(h)
			if len(b) > 8+1+8+DefaultHoleWindow/8+1 {
				t.Errorf("encoded %d holes in %d bytes, more than a window's bitmap", len(h.Holes), len(b))
			}
			got, err := decodeHighWater(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, h) {
				t.Fatalf("decoded %d holes (seq %d), want %d (seq %d)", len(got.Holes), got.Seq, len(h.Holes), h.Seq)
			}
		})
	}
	// Stores written before: 8 bytes of mark, then 16 per range.
	old := []byte{0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4}
	got, err := decodeHighWater(old)
	if err != nil || !reflect.DeepEqual(got, HighWater{Seq: 10, Holes: []SeqRange{{3, 4}}}) {
		t.Fatalf("old format: %+v, %v", got, err)
	}
}

// Random writers (seeded): whatever the holes, the stored mark reads back
// exactly, in either form, and stays within a window's bitmap.
func TestHighWater_EncodingRoundTripRandom(t *testing.T) {
	bitmaps, padded := 0, 0
	for seed := uint64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		window := uint64(rng.IntN(3000) + 1)
		var h HighWater
		for range rng.IntN(4000) {
			var s uint64
			if h.Seq > 0 && rng.IntN(3) == 0 {
				s = h.Seq - uint64(rng.IntN(int(min(h.Seq, window))))
			} else {
				s = h.Seq + uint64(rng.IntN(int(window))+1)
			}
			if !h.applied(s) && !h.behind(s, window) {
				h.record(s, window)
			}
		}
		b := encodeHighWater(h)
		if (len(b)-8)%16 != 0 {
			bitmaps++
			if len(b) == 18+int((h.Seq-h.Holes[0].From+7)/8) {
				padded++
			}
		}
		got, err := decodeHighWater(b)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if !reflect.DeepEqual(got, h) {
			t.Fatalf("seed %d: decoded %d holes (seq %d), want %d (seq %d)", seed, len(got.Holes), got.Seq, len(h.Holes), h.Seq)
		}
		if max := 18 + int(window)/8 + 1; len(b) > max && len(b) > 8+16*len(h.Holes) {
			t.Fatalf("seed %d: %d bytes for %d holes, window %d", seed, len(b), len(h.Holes), window)
		}
	}
	if bitmaps == 0 || padded == 0 {
		t.Fatalf("%d bitmaps, %d padded: the seeds do not reach both forms", bitmaps, padded)
	}
}
