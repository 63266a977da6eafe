package projection

import (
	"slices"
	"sort"
)

// Bounds of the duplicate check.
const (
	// DefaultHoleWindow is the dedupe window, in client sequences, of every
	// writer: a hole (a sequence not seen yet) less than the window below
	// the writer's high-water mark is remembered, every one of them, so its
	// event, arriving late, applies; a sequence more than the window above
	// the mark is refused. The producer lets an event be overtaken by at
	// most its window (producer.PublisherConfig.MaxInFlight, 256 by
	// default, 65536 at most), which this must not be below.
	DefaultHoleWindow = 1 << 16
	// MaxHoleWindow bounds Config.HoleWindow, so that a writer's stored
	// mark stays small: at most a bitmap of the window, 128 KiB here, 8 KiB
	// at the default.
	MaxHoleWindow = 1 << 20
	// DefaultMaxHoleRanges is the most hole ranges one writer can have
	// under DefaultHoleWindow (every other sequence of the window late): a
	// Store must keep a HighWater that large intact. Nothing is forgotten
	// below it: the window alone bounds the holes.
	DefaultMaxHoleRanges = DefaultHoleWindow / 2
)

// applied reports whether client sequence seq has been applied: at or
// below the mark and not a hole.
func (h *HighWater) applied(seq uint64) bool {
	return seq <= h.Seq && h.hole(seq) < 0
}

// hole returns the index of the range holding seq, -1 if none.
func (h *HighWater) hole(seq uint64) int {
	if len(h.Holes) == 0 {
		return -1
	}
	i := sort.Search(len(h.Holes), func(i int) bool { return h.Holes[i].To >= seq })
	if i < len(h.Holes) && h.Holes[i].From <= seq {
		return i
	}
	return -1
}

// ahead reports whether seq is more than window above the mark: a jump the
// producer never makes (it lets an event be overtaken by less than its
// window), refused so that it cannot put the writer's real sequences
// below a mark they never reached.
func (h *HighWater) ahead(seq, window uint64) bool {
	return seq > h.Seq && seq-h.Seq > window
}

// behind reports whether seq is window or more below the mark, where holes
// are no longer remembered: an event there cannot be told from a
// duplicate.
func (h *HighWater) behind(seq, window uint64) bool {
	return seq <= h.Seq && h.Seq-seq >= window
}

// record marks seq, not applied yet, as applied. Above the mark, it raises
// the mark and the sequences it skipped become a hole; below it, it fills
// its hole. Holes window or more below the mark are forgotten (a late event
// there is taken for a duplicate, see behind); every hole above that is
// kept, however many: at most window/2 ranges. The caller refuses seq
// ahead of the window first, so a raise costs one range of fewer than
// window sequences.
//
// In-order sequences with no holes touch no slice. The late events of an
// interleaved writer fill the oldest hole first, which costs O(1); a fill
// in the middle moves the ranges above it.
func (h *HighWater) record(seq, window uint64) {
	if seq > h.Seq {
		if seq > h.Seq+1 {
			h.Holes = append(h.Holes, SeqRange{From: h.Seq + 1, To: seq - 1})
		}
		h.Seq = seq
		if len(h.Holes) > 0 && seq > window {
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
		case r.From == r.To && i == 0:
			h.Holes = h.Holes[1:]
		case r.From == r.To:
			h.Holes = slices.Delete(h.Holes, i, i+1)
		case seq == r.From:
			h.Holes[i].From++
		case seq == r.To:
			h.Holes[i].To--
		default:
			h.Holes = slices.Insert(h.Holes, i+1, SeqRange{From: seq + 1, To: r.To})
			h.Holes[i].To = seq - 1
		}
	}
	if len(h.Holes) == 0 {
		h.Holes = nil
	}
}
