package projection

import (
	"testing"

	"github.com/ebbsync/ebb/events"
)

// An event id that already names the document's current state, or one of
// its open conflicts, but arrives as another write (another writer, or
// another sequence) is refused: applying it would make one id name two
// writes (the receipt, the conflict a resolve names, the change's cause).
func TestApplier_ReusedEventIDOnSameDocumentInvalid(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy Resolver
		manual bool
	}{{"current state", LWW, false}, {"open conflict", Manual, true}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newApplierRun(t, Config{Policies: only(tc.policy)})
			first := seqEvent("A", 1, "d", "v", "1")
			r.event(first)
			if tc.manual {
				// B's stale write opens a conflict named by its id, which C reuses.
				bw := seqEvent("B", 1, "d", "v", "2")
				r.event(bw)
				if r.outcome(bw.ID) != events.OutcomeConflict {
					t.Fatalf("setup: %q", r.outcome(bw.ID))
				}
				first = bw
			}
			before, err := r.store.Get(t.Context(), first.Address())
			if err != nil {
				t.Fatal(err)
			}
			reused := seqEvent("C", 1, "d", "v", "3")
			reused.BaseVersion = before.Version
			reused.ID = first.ID
			s := r.event(reused)
			rs := r.receipts[reused.ID]
			last := rs[len(rs)-1]
			if last.Client != "C" || last.Outcome != events.OutcomeInvalid || r.dead[s] == nil {
				t.Fatalf("reused id: receipt %+v, dead letter %v: want invalid to C with a dead letter", last, r.dead[s])
			}
			after, err := r.store.Get(t.Context(), first.Address())
			if err != nil {
				t.Fatal(err)
			}
			if after.Version != before.Version {
				t.Fatalf("document changed from v%d to v%d", before.Version, after.Version)
			}
		})
	}
}

// Every message id the projector derives is unique for what it names: a
// change by document and version, a receipt by writer, event and stream
// sequence, a dead letter by stream sequence.
func TestApplier_MessageIDsUnique(t *testing.T) {
	r := newApplierRun(t, Config{})
	a := seqEvent("A", 1, "d1")
	b := seqEvent("B", 1, "d2")
	b.ID = a.ID
	r.event(a)
	r.event(b)
	again := seqEvent("A", 2, "d1") // A reuses its own id at its next sequence: invalid
	again.ID = a.ID
	r.event(again)
	r.add(a.Subject(), []byte("garbage"))
	seen := map[string]bool{}
	for _, e := range r.entries {
		if seen[e.MsgID] {
			t.Errorf("message id %q used twice", e.MsgID)
		}
		seen[e.MsgID] = true
	}
	if len(r.entries) != 7 {
		t.Errorf("%d outbox entries, want 2 changes, 3 receipts and 2 dead letters", len(r.entries))
	}
	if rs := r.receipts[a.ID]; len(rs) != 3 || rs[2].Outcome != events.OutcomeInvalid {
		t.Errorf("receipts of id %s: %d, want applied, applied, invalid", a.ID, len(rs))
	}
}
