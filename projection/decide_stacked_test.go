package projection

import (
	"reflect"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

// stackedScenario is issue 11 item 1: A puts {v:0}; both sync; A goes
// offline; B patches {x:1} and syncs; A patches {a:1}, then puts
// {a:2,v:0} built on that pending patch (After); A syncs. It returns the
// state after A's patch and the decision on A's put.
func stackedScenario(t *testing.T, p Policies) (Doc, Decision) {
	t.Helper()
	put := mkEvent(events.OpPut, 0, 0, "A", "v", "0")
	bx := mkEvent(events.OpPatch, 1, 2*time.Second, "B", "x", "1")
	aa := mkEvent(events.OpPatch, 1, 3*time.Second, "A", "a", "1")
	aa.Seq = 2
	cur := steps(t, p, put, bx, aa)
	a2 := mkEvent(events.OpPut, 1, 4*time.Second, "A", "a", "2", "v", "0")
	a2.Seq, a2.After = 3, aa.ID
	d, err := Decide(p, cur, a2)
	if err != nil {
		t.Fatal(err)
	}
	return cur, d
}

func TestDecide_StackedAfterMergeIsStale(t *testing.T) {
	cur, d := stackedScenario(t, only(Merge))
	if cur.AsWritten {
		t.Errorf("a merged state claims to be exactly its cause's write")
	}
	if d.Doc == nil {
		t.Fatalf("decision %s %q: no new state", d.Outcome, d.Reason)
	}
	if want := fields("a", "2", "v", "0", "x", "1"); !reflect.DeepEqual(d.Doc.Fields, want) {
		t.Errorf("fields %s, want %s (B's x must survive)", d.Doc.Fields, want)
	}
	if d.Outcome != events.OutcomeMerged || d.Settled == nil {
		t.Errorf("outcome %s, record %v: want merged with a conflict record", d.Outcome, d.Settled)
	}
}

func TestDecide_StackedAfterManualConflictIsStale(t *testing.T) {
	cur, d := stackedScenario(t, only(Manual))
	if len(cur.Conflicts) != 1 {
		t.Fatalf("after A's patch: %d open conflicts, want 1", len(cur.Conflicts))
	}
	if d.Outcome != events.OutcomeConflict || d.Doc == nil {
		t.Fatalf("outcome %s %q, want conflict", d.Outcome, d.Reason)
	}
	if want := fields("v", "0", "x", "1"); !reflect.DeepEqual(d.Doc.Fields, want) {
		t.Errorf("fields %s, want %s: the second write replaced the document while the first conflict is open", d.Doc.Fields, want)
	}
	if len(d.Doc.Conflicts) != 2 {
		t.Errorf("%d open conflicts, want 2", len(d.Doc.Conflicts))
	}
}

func TestDecide_StackedAfterLWWOverwriteKeepsRecord(t *testing.T) {
	_, d := stackedScenario(t, only(LWW))
	if d.Doc == nil || !reflect.DeepEqual(d.Doc.Fields, fields("a", "2", "v", "0")) {
		t.Fatalf("decision %s %q: want A's put to win lww", d.Outcome, d.Reason)
	}
	if d.Settled == nil || d.Settled.Status != events.ConflictOverwritten || len(d.Settled.Sides) == 0 {
		t.Fatalf("no overwritten record: B's x would vanish silently (record %v)", d.Settled)
	}
	if got := string(d.Settled.Sides[0].Fields["x"]); got != "1" {
		t.Errorf("recorded server side x = %q, want 1", got)
	}
}

// A successor of a write applied exactly as written stays fresh, whatever
// the policy: only a shaped predecessor makes it stale.
func TestDecide_StackedAfterExactWriteIsFresh(t *testing.T) {
	for _, r := range []Resolver{LWW, Merge, Reject, Manual} {
		t.Run(string(policyName(r)), func(t *testing.T) {
			put := mkEvent(events.OpPut, 0, 0, "A", "v", "0")
			aa := mkEvent(events.OpPatch, 1, 3*time.Second, "A", "a", "1")
			aa.Seq = 2
			cur := steps(t, only(r), put, aa)
			if !cur.AsWritten {
				t.Fatalf("a fresh write's state is not marked as written")
			}
			a2 := mkEvent(events.OpPut, 1, 4*time.Second, "A", "a", "2")
			a2.Seq, a2.After = 3, aa.ID
			d, err := Decide(only(r), cur, a2)
			if err != nil {
				t.Fatal(err)
			}
			if d.Outcome != events.OutcomeApplied || d.Settled != nil || d.Doc == nil || !reflect.DeepEqual(d.Doc.Fields, fields("a", "2")) {
				t.Errorf("outcome %s %q record %v, want applied as written", d.Outcome, d.Reason, d.Settled)
			}
		})
	}
}

// The mark survives the change encoding (store and replicas read states
// back from it), so a rebuild and a client's overlay decide the same.
func TestDoc_AsWrittenRoundTrip(t *testing.T) {
	for _, as := range []bool{true, false} {
		d := Doc{Tenant: "t", Collection: "c", ID: "d", Version: 1, Event: "e", AsWritten: as}
		data, err := events.EncodeChange(d.Change(nil))
		if err != nil {
			t.Fatal(err)
		}
		c, err := events.DecodeChange(data)
		if err != nil {
			t.Fatal(err)
		}
		if got := DocFromChange(c); got.AsWritten != as {
			t.Errorf("AsWritten %v came back %v", as, got.AsWritten)
		}
	}
}
