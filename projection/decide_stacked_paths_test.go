package projection

import (
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

// The paths by which a stacked write (events.Event.After) could be taken
// for fresh although the state it lands on is not what its writer saw.
// Each runs through the applier over a BoltStore (so the state the
// successor is decided against has been stored and read back) under every
// built-in policy, and requires the successor to be decided stale: not
// applied as written with no conflict record.

// stackedPath is one path: history runs before the successor, which is
// built on pred.
type stackedPath struct {
	name    string
	history func(r *applierRun) (pred *events.Event)
	// fresh: the successor is fresh on this path (its predecessor made the
	// current state exactly as written).
	fresh bool
}

func stackedPaths() []stackedPath {
	return []stackedPath{
		{name: "predecessor applied as written", fresh: true, history: func(r *applierRun) *events.Event {
			r.event(withSeq(mkEvent(events.OpPut, 0, 0, "A", "v", "0"), 1))
			p := withSeq(mkEvent(events.OpPatch, 1, time.Second, "A", "a", "1"), 2)
			r.event(p)
			return p
		}},
		{name: "predecessor rejected or lost", history: func(r *applierRun) *events.Event {
			r.event(withSeq(mkEvent(events.OpPut, 0, 0, "A", "v", "0"), 1))
			r.event(withSeq(mkEvent(events.OpPatch, 1, 3*time.Second, "B", "x", "1"), 1))
			// Older than B's write: loses lww and merge, rejected by reject,
			// an open conflict under manual.
			p := withSeq(mkEvent(events.OpPatch, 1, time.Second, "A", "x", "2"), 2)
			r.event(p)
			return p
		}},
		{name: "predecessor a delete of a deleted document", history: func(r *applierRun) *events.Event {
			r.event(withSeq(mkEvent(events.OpPut, 0, 0, "A", "v", "0"), 1))
			r.event(withSeq(mkEvent(events.OpDelete, 1, time.Second, "B"), 1))
			p := withSeq(mkEvent(events.OpDelete, 2, 2*time.Second, "A"), 2)
			r.event(p) // applied, nothing changes: the state is still B's
			return p
		}},
		{name: "predecessor dead-lettered", history: func(r *applierRun) *events.Event {
			r.event(withSeq(mkEvent(events.OpPut, 0, 0, "A", "v", "0"), 1))
			r.event(withSeq(mkEvent(events.OpPatch, 1, time.Second, "B", "x", "1"), 1))
			p := withSeq(mkEvent(events.OpPatch, 2, 2*time.Second, "A", "a", "1"), 2)
			p.HLC = events.HLC{Wall: time.Now().Add(24 * time.Hour).UnixMilli()} // refused: too far ahead
			r.event(p)
			return p
		}},
		{name: "predecessor reused a sequence", history: func(r *applierRun) *events.Event {
			r.event(withSeq(mkEvent(events.OpPut, 0, 0, "A", "v", "0"), 1))
			r.event(withSeq(mkEvent(events.OpPatch, 1, time.Second, "B", "x", "1"), 1))
			p := withSeq(mkEvent(events.OpPatch, 2, 2*time.Second, "A", "a", "1"), 1) // sequence 1 holds A's put
			r.event(p)
			return p
		}},
		{name: "predecessor written again under a new id (Log.Reissue)", history: func(r *applierRun) *events.Event {
			// The successor was published with After = the original, which
			// was answered reused and never applied; the copy (a new id, the
			// same change) was.
			r.event(withSeq(mkEvent(events.OpPut, 0, 0, "A", "v", "0"), 1))
			p := withSeq(mkEvent(events.OpPatch, 1, time.Second, "A", "a", "1"), 1)
			r.event(p)
			again := *p
			again.ID, again.Device, again.Seq = testIDs.New().String(), testIDs.New().String(), 1
			r.event(&again)
			return p
		}},
		{name: "predecessor arrives after its successor", history: func(r *applierRun) *events.Event {
			r.event(withSeq(mkEvent(events.OpPut, 0, 0, "A", "v", "0"), 1))
			r.event(withSeq(mkEvent(events.OpPatch, 1, time.Second, "B", "x", "1"), 1))
			return withSeq(mkEvent(events.OpPatch, 1, 2*time.Second, "A", "a", "1"), 2) // never applied before the successor
		}},
		{name: "predecessor overwritten by another writer", history: func(r *applierRun) *events.Event {
			r.event(withSeq(mkEvent(events.OpPut, 0, 0, "A", "v", "0"), 1))
			p := withSeq(mkEvent(events.OpPatch, 1, time.Second, "A", "a", "1"), 2)
			r.event(p)
			r.event(withSeq(mkEvent(events.OpPatch, 2, 2*time.Second, "B", "x", "1"), 1))
			return p
		}},
	}
}

func withSeq(ev *events.Event, seq uint64) *events.Event {
	ev.Seq = seq
	return ev
}

func TestApplier_StackedWriteFreshOnlyOnItsExactPredecessor(t *testing.T) {
	for _, path := range stackedPaths() {
		for _, res := range []Resolver{LWW, Merge, Reject, Manual} {
			t.Run(path.name+"/"+string(policyName(res)), func(t *testing.T) {
				r := newApplierRun(t, Config{Policies: only(res)})
				pred := path.history(r)
				before, err := r.store.Get(t.Context(), events.DocAddress{Tenant: "t", Collection: "c", Doc: "d"})
				if err != nil {
					t.Fatal(err)
				}
				// A put built on pred, later than everything before it, with
				// the base version its writer last had from the server (1).
				s := withSeq(mkEvent(events.OpPut, 1, 10*time.Second, "A", "a", "2", "v", "0"), 3)
				s.After = pred.ID
				r.event(s)
				rs := r.receipts[s.ID]
				if len(rs) != 1 {
					t.Fatalf("successor: %d receipts, want 1", len(rs))
				}
				rc := rs[0]
				asWritten := rc.Outcome == events.OutcomeApplied && rc.Conflict == "" && rc.Version == before.Version+1
				if asWritten != path.fresh {
					t.Errorf("successor on v%d (made by %s, as written %v): %s %q conflict %q: applied as written = %v, want %v",
						before.Version, before.Event, before.AsWritten, rc.Outcome, rc.Reason, rc.Conflict, asWritten, path.fresh)
				}
				if !path.fresh && rc.Outcome == events.OutcomeApplied && rc.Conflict == "" && rc.Version > before.Version {
					t.Errorf("stale successor applied with no conflict record")
				}
			})
		}
	}
}
