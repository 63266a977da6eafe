package projection

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

// receiptEntries returns the outbox entries of receipts for event id, with
// each decoded receipt.
func (r *applierRun) receiptEntries(id string) (out []OutboxEntry, rs []*events.Receipt) {
	r.t.Helper()
	for _, e := range r.entries {
		if len(e.Subject) < 9 || e.Subject[:9] != "ebb.rcpt." {
			continue
		}
		rc, err := events.DecodeReceipt(e.Data)
		if err != nil {
			r.t.Fatal(err)
		}
		if rc.Event == id {
			out, rs = append(out, e), append(rs, rc)
		}
	}
	return out, rs
}

// A device's receipts carry its device and travel on its own receipt
// subject, whatever the outcome: a device learns the fate of its writes
// and of no other device's.
func TestApplier_DeviceReceiptsOnDeviceSubject(t *testing.T) {
	const dev = "01JPHONE00000000000000000A"
	r := newApplierRun(t, Config{Policies: only(Reject)})
	applied := deviceEvent("alice", dev, 1, "d1")
	stale := deviceEvent("alice", dev, 2, "d1") // base 0 against v1: rejected
	reused := deviceEvent("alice", dev, 1, "d2")
	for _, ev := range []*events.Event{applied, stale, reused} {
		r.event(ev)
	}
	r.event(applied) // a true duplicate
	want := map[string][]events.Outcome{
		applied.ID: {events.OutcomeApplied, events.OutcomeDuplicate},
		stale.ID:   {events.OutcomeRejected},
		reused.ID:  {events.OutcomeReused},
	}
	for id, outcomes := range want {
		es, rs := r.receiptEntries(id)
		if len(rs) != len(outcomes) {
			t.Fatalf("event %s: %d receipts, want %d", id, len(rs), len(outcomes))
		}
		for i, rc := range rs {
			if rc.Outcome != outcomes[i] || rc.Device != dev || es[i].Subject != applied.ReceiptSubject() {
				t.Errorf("event %s receipt %d: %s, device %q, on %s; want %s, device %q, on %s",
					id, i, rc.Outcome, rc.Device, es[i].Subject, outcomes[i], dev, applied.ReceiptSubject())
			}
		}
	}
}

// Two devices of one client may pick the same event id at the same
// sequence (two copies of one id source, or a client that numbers its
// ids): both writes apply, and both receipts keep distinct message ids,
// so JetStream drops neither as the other's repeat.
func TestApplier_DeviceReceiptMessageIDsDistinct(t *testing.T) {
	p := deviceEvent("alice", "01JPHONE00000000000000000A", 1, "d1")
	l := deviceEvent("alice", "01JLAPTOP0000000000000000B", 1, "d2")
	l.ID = p.ID
	r := newApplierRun(t, Config{})
	r.event(p)
	r.event(l)
	es, rs := r.receiptEntries(p.ID)
	if len(rs) != 2 || rs[0].Outcome != events.OutcomeApplied || rs[1].Outcome != events.OutcomeApplied {
		t.Fatalf("receipts: %+v, want two applied", rs)
	}
	if es[0].MsgID == es[1].MsgID {
		t.Fatalf("both receipts have message id %q", es[0].MsgID)
	}
	// A legacy log's message id is what it was before devices.
	legacy := seqEvent("bob", 3, "d3")
	r.event(legacy)
	es, _ = r.receiptEntries(legacy.ID)
	if want := "rcpt:t/bob/" + legacy.ID + ":3"; len(es) != 1 || es[0].MsgID != want {
		t.Errorf("legacy receipt message id %q, want %q", es[0].MsgID, want)
	}
}

// An invalid receipt goes to the client the subject vouched for; it
// carries the payload's device only when the payload's client is that
// client, so a forged payload can address no other client's device.
func TestApplier_InvalidReceiptDevice(t *testing.T) {
	const dev = "01JPHONE00000000000000000A"
	future := func(ev *events.Event) { ev.HLC = events.HLC{Wall: time.Now().Add(24 * time.Hour).UnixMilli()} }
	for _, tc := range []struct {
		name       string
		build      func(r *applierRun) (id, subject string, data []byte)
		wantClient string
		wantDevice string
	}{
		{"decoded, own client", func(r *applierRun) (string, string, []byte) {
			ev := deviceEvent("alice", dev, 1, "d")
			future(ev)
			data, _ := events.EncodeEvent(ev)
			return ev.ID, ev.Subject(), data
		}, "alice", dev},
		{"decoded, another client's payload", func(r *applierRun) (string, string, []byte) {
			ev := deviceEvent("mallory", dev, 1, "d")
			data, _ := events.EncodeEvent(ev)
			return ev.ID, events.EventSubject("t", "alice", ev.Collection, ev.Doc), data
		}, "alice", ""},
		{"undecodable, own client", func(r *applierRun) (string, string, []byte) {
			ev := deviceEvent("alice", dev, 1, "d")
			raw, _ := json.Marshal(map[string]any{"schema": 1, "id": ev.ID, "tenant": "t", "client": "alice", "device": dev, "seq": 1, "op": "bogus"})
			return ev.ID, ev.Subject(), raw
		}, "alice", dev},
		{"undecodable, another client's payload", func(r *applierRun) (string, string, []byte) {
			ev := deviceEvent("alice", dev, 1, "d")
			raw, _ := json.Marshal(map[string]any{"schema": 1, "id": ev.ID, "tenant": "t", "client": "mallory", "device": dev, "seq": 1, "op": "bogus"})
			return ev.ID, ev.Subject(), raw
		}, "alice", ""},
		{"undecodable, device not a string", func(r *applierRun) (string, string, []byte) {
			ev := deviceEvent("alice", dev, 1, "d")
			raw, _ := json.Marshal(map[string]any{"schema": 1, "id": ev.ID, "tenant": "t", "client": "alice", "device": 7, "seq": 1, "op": "put"})
			return ev.ID, ev.Subject(), raw
		}, "alice", ""},
		{"undecodable, device not a name", func(r *applierRun) (string, string, []byte) {
			ev := deviceEvent("alice", dev, 1, "d")
			raw, _ := json.Marshal(map[string]any{"schema": 1, "id": ev.ID, "tenant": "t", "client": "alice", "device": "a\x01b", "seq": 1, "op": "bogus"})
			return ev.ID, ev.Subject(), raw
		}, "alice", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newApplierRun(t, Config{})
			id, subject, data := tc.build(r)
			r.add(subject, data)
			es, rs := r.receiptEntries(id)
			if len(rs) != 1 || rs[0].Outcome != events.OutcomeInvalid {
				t.Fatalf("receipts: %+v, want one invalid", rs)
			}
			want := events.DeviceReceiptSubject("t", tc.wantClient, tc.wantDevice)
			if rs[0].Client != tc.wantClient || rs[0].Device != tc.wantDevice || es[0].Subject != want {
				t.Errorf("invalid receipt to %q device %q on %s, want %q device %q on %s",
					rs[0].Client, rs[0].Device, es[0].Subject, tc.wantClient, tc.wantDevice, want)
			}
		})
	}
}

// The change an event causes names its device.
func TestApplier_ChangeNamesDevice(t *testing.T) {
	const dev = "01JPHONE00000000000000000A"
	r := newApplierRun(t, Config{})
	ev := deviceEvent("alice", dev, 1, "d")
	r.event(ev)
	for _, e := range r.entries {
		if e.Subject != events.ChangeSubject("t", ev.Collection, ev.Doc) {
			continue
		}
		c, err := events.DecodeChange(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		if c.Device != dev || c.Client != "alice" || c.Seq != 1 {
			t.Fatalf("change caused by %s/%s seq %d, want alice/%s seq 1", c.Client, c.Device, c.Seq, dev)
		}
		return
	}
	t.Fatal("no change published")
}
