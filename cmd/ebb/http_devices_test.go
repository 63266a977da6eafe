package main

import (
	"testing"

	"github.com/ebbsync/ebb/events"
)

// TestHTTP_TwoDevicesOfOneUser: a user's phone and laptop, each a device
// log numbering from 1, write over plain HTTP, to different documents and
// to the same one, under each policy: nothing is answered duplicate and
// every write is applied, merged, conflicted or rejected with a reason.
// Then the phone is restored from a backup (its sequence rolled back) and
// writes again: the server answers reused, not duplicate, and the write
// sent again as a new device applies.
func TestHTTP_TwoDevicesOfOneUser(t *testing.T) {
	srv := serveInProcess(t, "", "--policy", "m=merge", "--policy", "r=reject", "--policy", "x=manual")
	ids := events.NewIDSource(nil)
	mobile, laptop := newPhone(t, srv.http, "alice"), newPhone(t, srv.http, "alice")
	mobile.device, laptop.device = ids.New().String(), ids.New().String()
	for _, coll := range []string{"l", "m", "r", "x"} {
		a := mobile.event(events.OpPut, coll, "own-phone", 0, `{"v":1}`)
		b := laptop.event(events.OpPut, coll, "own-laptop", 0, `{"v":2}`)
		if st := mobile.push(a); st[0] != "accepted" {
			t.Fatalf("%s: phone push %v", coll, st)
		}
		if st := laptop.push(b); st[0] != "accepted" {
			t.Fatalf("%s: laptop push %v", coll, st)
		}
		for _, c := range []struct {
			p  *phone
			id string
		}{{mobile, a.ID}, {laptop, b.ID}} {
			if r := c.p.receipt(c.id); r.Outcome != events.OutcomeApplied || r.Device != c.p.device {
				t.Fatalf("%s: receipt %+v, want applied for device %s", coll, r, c.p.device)
			}
		}
		// Both write the same document from version 0.
		s1 := mobile.event(events.OpPut, coll, "shared", 0, `{"p":1}`)
		s2 := laptop.event(events.OpPut, coll, "shared", 0, `{"l":1}`)
		mobile.push(s1)
		laptop.push(s2)
		r1, r2 := mobile.receipt(s1.ID), laptop.receipt(s2.ID)
		for _, r := range []*events.Receipt{r1, r2} {
			switch r.Outcome {
			case events.OutcomeApplied, events.OutcomeMerged, events.OutcomeConflict:
			case events.OutcomeRejected:
				if r.Reason == "" {
					t.Fatalf("%s: rejected without a reason: %+v", coll, r)
				}
			default:
				t.Fatalf("%s: shared write answered %s (%s): a device's write taken for another's", coll, r.Outcome, r.Reason)
			}
		}
		if d := mobile.doc(coll, "own-laptop"); d.Version != 1 {
			t.Fatalf("%s: the laptop's document at version %d", coll, d.Version)
		}
	}

	// A restored backup: the phone's log rolls back two sequences and writes
	// a new event under a sequence the server already applied.
	mobile.seq -= 2
	again := mobile.event(events.OpPut, "l", "after-restore", 0, `{"v":3}`)
	mobile.push(again)
	if r := mobile.receipt(again.ID); r.Outcome != events.OutcomeReused || r.Reason == "" {
		t.Fatalf("restored phone's write: %+v, want reused with a reason", r)
	}
	// The client writes it again as a new device; it applies.
	mobile.device, mobile.seq = ids.New().String(), 0
	fresh := mobile.event(events.OpPut, "l", "after-restore", 0, `{"v":3}`)
	mobile.push(fresh)
	if r := mobile.receipt(fresh.ID); r.Outcome != events.OutcomeApplied {
		t.Fatalf("rewritten as a new device: %+v", r)
	}
}
