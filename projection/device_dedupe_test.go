package projection

import (
	"fmt"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/events"
)

// deviceEvent is a put by device dev of client c at sequence seq on doc.
func deviceEvent(client, dev string, seq uint64, doc string, kv ...string) *events.Event {
	ev := seqEvent(client, seq, doc, kv...)
	ev.Device = dev
	return ev
}

// Issue 12 section 1: a user's phone and laptop are two logs of one client,
// each numbering from 1. Under every policy, writing different documents
// and the same one, neither device's write is answered duplicate and
// nothing is lost: each event has a receipt with a real outcome, and what
// did not become the document's state is in a receipt (rejected,
// conflict) or a conflict record.
func TestApplier_TwoDevicesOfOneClientNeverDuplicates(t *testing.T) {
	const phone, laptop = "01JPHONE00000000000000000A", "01JLAPTOP0000000000000000B"
	for _, tc := range []struct {
		name   string
		policy Resolver
	}{{"lww", LWW}, {"merge", Merge}, {"reject", Reject}, {"manual", Manual}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newApplierRun(t, Config{Policies: only(tc.policy)})
			var all []*events.Event
			for seq := uint64(1); seq <= 3; seq++ {
				for _, dev := range []string{phone, laptop} {
					own := deviceEvent("alice", dev, seq, fmt.Sprintf("%s-%d", dev, seq), "v", `"`+dev+`"`)
					r.event(own)
					all = append(all, own)
				}
			}
			// Both create the same document at their next sequence, base 0.
			p := deviceEvent("alice", phone, 4, "shared", "p", "1")
			l := deviceEvent("alice", laptop, 4, "shared", "l", "1")
			r.event(p)
			r.event(l)
			all = append(all, p, l)
			for _, ev := range all {
				rs := r.receipts[ev.ID]
				if len(rs) != 1 {
					t.Fatalf("event seq %d of device %s: %d receipts, want 1", ev.Seq, ev.Device, len(rs))
				}
				switch rs[0].Outcome {
				case events.OutcomeDuplicate, events.OutcomeReused, events.OutcomeInvalid:
					t.Errorf("event seq %d of device %s: %s (%s)", ev.Seq, ev.Device, rs[0].Outcome, rs[0].Reason)
				}
			}
			for _, ev := range all[:6] {
				d, err := r.store.Get(t.Context(), ev.Address())
				if err != nil {
					t.Fatal(err)
				}
				if d.Version != 1 || d.Event != ev.ID || d.Device != ev.Device {
					t.Errorf("document %s: v%d by %s/%s, want v1 by %s/%s", ev.Doc, d.Version, d.Event, d.Device, ev.ID, ev.Device)
				}
			}
			// The second create of "shared" is stale: the policy decided,
			// and what it did not keep is told or recorded.
			d, err := r.store.Get(t.Context(), p.Address())
			if err != nil {
				t.Fatal(err)
			}
			confs, err := r.store.Conflicts(t.Context(), p.Address())
			if err != nil {
				t.Fatal(err)
			}
			o := r.outcome(l.ID)
			switch {
			case d.Event == l.ID && len(confs) == 1: // lww: the laptop won, the phone's state recorded
			case d.Event == l.ID && o == events.OutcomeMerged: // merge: both fields kept
				if len(d.Fields) != 2 {
					t.Errorf("merged state %v, want both devices' fields", d.Fields)
				}
			case d.Event == p.ID && (o == events.OutcomeRejected || len(confs) == 1): // reject, or lww lost and recorded
			case o == events.OutcomeConflict && len(d.Conflicts) == 1: // manual
			default:
				t.Errorf("same document: state by %s, laptop's outcome %s, %d conflict records: something was lost", d.Event, o, len(confs))
			}
			for _, dev := range []string{phone, laptop} {
				hw, err := r.store.WriterHighWater(t.Context(), ClientKey{Tenant: "t", Client: "alice", Device: dev})
				if err != nil {
					t.Fatal(err)
				}
				if hw.Seq != 4 || hw.Holes != nil {
					t.Errorf("mark of device %s: %+v, want 4 with no holes", dev, hw)
				}
			}
		})
	}
}

// A local store copied to a second place writes under the same device and
// sequence with another event: the first applies, the second is reused
// (not a duplicate, so its writer learns it must start a new log), in the
// same batch or a later one, and the view keeps the first.
func TestApplier_CopiedStoreSameSequenceReused(t *testing.T) {
	const dev = "01JCOPY000000000000000000A"
	for _, sameBatch := range []bool{false, true} {
		t.Run(fmt.Sprintf("same batch %v", sameBatch), func(t *testing.T) {
			r := newApplierRun(t, Config{})
			orig := deviceEvent("alice", dev, 1, "d1", "v", `"orig"`)
			copied := deviceEvent("alice", dev, 1, "d2", "v", `"copy"`)
			if sameBatch {
				r.batch([]*events.Event{orig, copied})
			} else {
				r.event(orig)
				r.event(copied)
			}
			if o := r.outcome(orig.ID); o != events.OutcomeApplied {
				t.Fatalf("original: %q", o)
			}
			rc := r.receipts[copied.ID]
			if len(rc) != 1 || rc[0].Outcome != events.OutcomeReused || !strings.Contains(rc[0].Reason, orig.ID) {
				t.Fatalf("copy at the same sequence: %+v, want one reused receipt naming %s", rc, orig.ID)
			}
			if len(r.dead) != 0 {
				t.Errorf("%d dead letters, want none", len(r.dead))
			}
			d, err := r.store.Get(t.Context(), copied.Address())
			if err != nil {
				t.Fatal(err)
			}
			if d.Version != 0 {
				t.Errorf("the copy's document exists at v%d", d.Version)
			}
		})
	}
}

// JetStream drops a republished event inside its dedupe window only; the
// same event (same id, device and sequence) republished after it is a
// true duplicate.
func TestApplier_TrueRepublishIsDuplicate(t *testing.T) {
	const dev = "01JREPUB00000000000000000A"
	r := newApplierRun(t, Config{})
	ev := deviceEvent("alice", dev, 1, "d1")
	r.event(ev)
	r.event(deviceEvent("alice", dev, 2, "d2"))
	r.event(ev)
	rs := r.receipts[ev.ID]
	if len(rs) != 2 || rs[1].Outcome != events.OutcomeDuplicate {
		t.Fatalf("republish: %+v, want applied then duplicate", rs)
	}
}

// A device restored from an older backup writes again from a sequence the
// server already applied: each such event is reused, the view unchanged;
// a legacy log (no device) gets the same answer.
func TestApplier_RestoredStoreBelowMarkReused(t *testing.T) {
	for _, dev := range []string{"01JRESTORE000000000000000A", ""} {
		t.Run("device "+dev, func(t *testing.T) {
			r := newApplierRun(t, Config{})
			var before []*events.Event
			for seq := uint64(1); seq <= 10; seq++ {
				ev := deviceEvent("alice", dev, seq, fmt.Sprintf("d%d", seq))
				before = append(before, ev)
			}
			r.batch(before)
			for seq := uint64(7); seq <= 12; seq++ {
				ev := deviceEvent("alice", dev, seq, fmt.Sprintf("n%d", seq))
				r.event(ev)
				want := events.OutcomeReused
				if seq > 10 {
					want = events.OutcomeApplied
				}
				if o := r.outcome(ev.ID); o != want {
					t.Errorf("restored log's seq %d: %q (%s), want %s", seq, o, r.receipts[ev.ID][0].Reason, want)
				}
				if want == events.OutcomeReused && !strings.Contains(r.receipts[ev.ID][0].Reason, before[seq-1].ID) {
					t.Errorf("reason %q does not name %s", r.receipts[ev.ID][0].Reason, before[seq-1].ID)
				}
			}
		})
	}
}

// Below the dedupe window the projector no longer knows which event held a
// sequence: a new event there is taken for a duplicate, "too far behind to
// tell" (the client detects it: a receipt for a write it never made).
func TestApplier_ReusedBelowWindowIsDuplicate(t *testing.T) {
	const dev = "01JFAR0000000000000000000A"
	r := newApplierRun(t, Config{HoleWindow: 100})
	var evs []*events.Event
	for seq := uint64(1); seq <= 150; seq++ {
		evs = append(evs, deviceEvent("alice", dev, seq, "d"))
	}
	r.batch(evs)
	old := deviceEvent("alice", dev, 10, "x")
	r.event(old)
	rs := r.receipts[old.ID]
	if len(rs) != 1 || rs[0].Outcome != events.OutcomeDuplicate || !strings.Contains(rs[0].Reason, "too far behind") {
		t.Fatalf("new event at seq 10, mark 150, window 100: %+v, want duplicate too far behind", rs)
	}
	inside := deviceEvent("alice", dev, 51, "x")
	r.event(inside)
	if o := r.outcome(inside.ID); o != events.OutcomeReused {
		t.Fatalf("new event at seq 51, inside the window: %q, want reused", o)
	}
}

// The ids of sequences that left the dedupe window are forgotten as the
// mark moves on, so a writer holds about a window of them, never all;
// every id inside the window stays.
func TestApplier_SeqEventsForgottenBelowWindow(t *testing.T) {
	const dev = "01JPRUNE00000000000000000A"
	const window = 160
	r := newApplierRun(t, Config{HoleWindow: window})
	var evs []*events.Event
	for seq := uint64(1); seq <= 1000; seq++ {
		evs = append(evs, deviceEvent("alice", dev, seq, fmt.Sprintf("d%d", seq%7)))
	}
	for i := 0; i < len(evs); i += 50 { // batches of 50, so pruning happens across many commits
		r.batch(evs[i : i+50])
	}
	k := ClientKey{Tenant: "t", Client: "alice", Device: dev}
	held := 0
	err := r.store.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSeqEvents).Bucket(writerKey(k))
		if b == nil {
			return fmt.Errorf("no ids held for %v", k)
		}
		return b.ForEach(func(_, _ []byte) error { held++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	if held < window || held > window+int(forgetStep(window)) {
		t.Errorf("%d ids held after 1000 sequences, want between %d and %d", held, window, window+int(forgetStep(window)))
	}
	for seq := uint64(1000 - window + 1); seq <= 1000; seq++ {
		id, err := r.store.SeqEvent(t.Context(), k, seq)
		if err != nil {
			t.Fatal(err)
		}
		if id != evs[seq-1].ID {
			t.Fatalf("id at seq %d, inside the window: %q, want %s", seq, id, evs[seq-1].ID)
		}
	}
	if id, _ := r.store.SeqEvent(t.Context(), k, 1); id != "" {
		t.Errorf("id at seq 1, far below the window, still held: %s", id)
	}
}

// A store written before devices holds a client's mark under
// tenant\x00client: it reads as that client's legacy log (device ""), and
// a device of the client is a writer of its own, starting from nothing.
func TestBoltStore_LegacyMarkIsDeviceless(t *testing.T) {
	r := newApplierRun(t, Config{})
	err := r.store.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHWM).Put([]byte("t\x00alice"), encodeHighWater(HighWater{Seq: 5}))
	})
	if err != nil {
		t.Fatal(err)
	}
	legacy := seqEvent("alice", 5, "d")
	r.event(legacy)
	if o := r.outcome(legacy.ID); o != events.OutcomeDuplicate {
		t.Errorf("legacy log's seq 5 under an old mark of 5: %q, want duplicate (no id was kept then)", o)
	}
	dev := deviceEvent("alice", "01JNEWDEVICE00000000000000", 1, "d")
	r.event(dev)
	if o := r.outcome(dev.ID); o != events.OutcomeApplied {
		t.Errorf("a device's seq 1: %q, want applied", o)
	}
	next := seqEvent("alice", 6, "e")
	r.event(next)
	hw, err := r.store.HighWater(t.Context(), "t", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if o := r.outcome(next.ID); o != events.OutcomeApplied || hw.Seq != 6 {
		t.Errorf("legacy log's seq 6: %q, mark %+v; want applied, 6", o, hw)
	}
}
