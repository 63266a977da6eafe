package projection

import "sort"

// Defaults of the duplicate check, applied to zero Config fields.
const (
	// DefaultHoleWindow is how far below a writer's high-water mark, in
	// client sequences, a hole is remembered. The producer lets an event be
	// overtaken by less than its window (producer.PublisherConfig.MaxInFlight,
	// 256 by default, 65536 at most), far below it.
	DefaultHoleWindow = 1 << 16
	// DefaultMaxHoleRanges bounds the hole ranges remembered per writer.
	// Out-of-order arrival leaves a few; a window of w can leave at most w/2
	// (every other sequence late).
	DefaultMaxHoleRanges = 4096
)

// applied reports whether client sequence seq has been applied: at or
// below the mark and not a hole.
func (h *HighWater) applied(seq uint64) bool {
	return seq <= h.Seq && h.hole(seq) < 0
}

// hole returns the index of the range holding seq, -1 if none.
func (h *HighWater) hole(seq uint64) int {
	i := sort.Search(len(h.Holes), func(i int) bool { return h.Holes[i].To >= seq })
	if i < len(h.Holes) && h.Holes[i].From <= seq {
		return i
	}
	return -1
}

// record marks seq, not applied yet, as applied. Above the mark, it raises
// the mark and the sequences it skipped become a hole; below it, it fills
// its hole. Holes window or more below the mark are forgotten (a late event
// there is taken for a duplicate). If more than maxRanges ranges remain,
// the oldest go too, and record returns how many sequences they held, for
// the caller to report: should one of those still arrive, it is taken for
// a duplicate.
//
// A writer that jumps its sequence costs one range, whatever the jump, and
// never more than window sequences of it are remembered.
func (h *HighWater) record(seq, window uint64, maxRanges int) (forgot uint64) {
	if seq > h.Seq {
		if seq > h.Seq+1 {
			h.Holes = append(h.Holes, SeqRange{From: h.Seq + 1, To: seq - 1})
		}
		h.Seq = seq
		if seq > window {
			floor := seq - window // holes at or below it are forgotten
			i := 0
			for i < len(h.Holes) && h.Holes[i].To <= floor {
				i++
			}
			h.Holes = h.Holes[i:]
			if len(h.Holes) > 0 && h.Holes[0].From <= floor {
				h.Holes[0].From = floor + 1
			}
		}
	} else if i := h.hole(seq); i >= 0 {
		r := h.Holes[i]
		switch {
		case r.From == r.To:
			h.Holes = append(h.Holes[:i], h.Holes[i+1:]...)
		case seq == r.From:
			h.Holes[i].From++
		case seq == r.To:
			h.Holes[i].To--
		default:
			h.Holes = append(h.Holes[:i+1], h.Holes[i:]...)
			h.Holes[i].To = seq - 1
			h.Holes[i+1].From = seq + 1
		}
	}
	if n := len(h.Holes) - maxRanges; n > 0 {
		for _, r := range h.Holes[:n] {
			forgot += r.To - r.From + 1
		}
		h.Holes = h.Holes[n:]
	}
	if len(h.Holes) == 0 {
		h.Holes = nil
	}
	return forgot
}
