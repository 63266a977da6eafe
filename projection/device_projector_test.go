package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// Issue 12 section 1 end to end: a user's phone and laptop (two devices of
// one client, each numbering from 1) write their own documents and the
// same one under every policy, a copy of the phone's store writes at a
// sequence the phone used, the phone's first event is republished beyond
// JetStream's dedupe window, and the laptop, restored from a backup,
// writes again from sequence 1. Nothing is answered duplicate but the
// republish, the copy and the restored writes are answered reused, every
// receipt reaches its own device's subject, and a rebuild decides the
// same.
func TestProjector_TwoDevicesCopiedAndRestoredStores(t *testing.T) {
	const phoneDev, laptopDev = "01JPHONE00000000000000000A", "01JLAPTOP0000000000000000B"
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	phone, laptop := newWriter("acme", "alice", 0), newWriter("acme", "alice", 0)
	on := func(dev string, ev *events.Event) *events.Event { ev.Device = dev; return ev }

	want := map[string]events.Outcome{} // event id -> the outcome of its (first) receipt
	devOf := map[string]string{}
	var firstPhone *events.Event
	var last uint64
	pub := func(ev *events.Event, outcome events.Outcome) {
		last = publish(t, e.js, eventMsg(t, ev), "")
		if outcome != "" {
			want[ev.ID], devOf[ev.ID] = outcome, ev.Device
		}
	}
	for _, coll := range []string{"notes", "profiles", "orders", "contracts"} {
		p := on(phoneDev, phone.event(coll, "p-"+coll, events.OpPut, 0, map[string]any{"by": "phone"}))
		if firstPhone == nil {
			firstPhone = p
		}
		pub(p, events.OutcomeApplied)
		pub(on(laptopDev, laptop.event(coll, "l-"+coll, events.OpPut, 0, map[string]any{"by": "laptop"})), events.OutcomeApplied)
		pub(on(phoneDev, phone.event(coll, "shared", events.OpPut, 0, map[string]any{"p": 1})), events.OutcomeApplied)
		laptop.offset = time.Second // the laptop's write is the later one
		// The policy decides the second create; the outcome is checked below.
		pub(on(laptopDev, laptop.event(coll, "shared", events.OpPut, 0, map[string]any{"l": 1})), "-")
		laptop.offset = 0
	}
	// A copy of the phone's store writes at the phone's last sequence.
	cp := on(phoneDev, phone.event("notes", "copy", events.OpPut, 0, map[string]any{"c": 1}))
	cp.Seq = phone.seq - 1
	phone.seq--
	pub(cp, events.OutcomeReused)
	// The phone's first event again, after JetStream's window (no msg id).
	pub(firstPhone, "")
	// The laptop restored from a backup numbers from 1 again.
	restored := newWriter("acme", "alice", 0)
	for range 2 {
		pub(on(laptopDev, restored.event("notes", "restored", events.OpPut, 0, map[string]any{"r": 1})), events.OutcomeReused)
	}

	cfg := projection.Config{Policies: testPolicies()}
	p := startProjector(t, e.js, store, cfg)
	waitCheckpoint(t, p, last)
	n := uint64(len(want))
	waitFor(t, 30*time.Second, "receipts", func() bool { return msgCount(t, e.js, events.StreamReceipts) >= n })

	got := map[string]*events.Receipt{}
	for _, m := range readAll(t, e.js, events.StreamReceipts) {
		r, err := events.DecodeReceipt(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject() != events.DeviceReceiptSubject("acme", "alice", devOf[r.Event]) || r.Device != devOf[r.Event] {
			t.Errorf("receipt of %s (device %q) on %s, want its device's subject", r.Event, r.Device, m.Subject())
		}
		if got[r.Event] == nil {
			got[r.Event] = r
		}
	}
	for id, o := range want {
		r := got[id]
		switch {
		case r == nil:
			t.Errorf("no receipt for %s", id)
		case o == "-":
			if r.Outcome == events.OutcomeDuplicate || r.Outcome == events.OutcomeReused || r.Outcome == events.OutcomeInvalid {
				t.Errorf("laptop's create of a shared document: %s (%s)", r.Outcome, r.Reason)
			}
		case r.Outcome != o:
			t.Errorf("event %s seq %d of device %s: %s (%s), want %s", id, r.Seq, r.Device, r.Outcome, r.Reason, o)
		}
	}
	if st := p.Stats(); st.Duplicates != 4 || st.Dead != 0 {
		t.Errorf("stats: %d duplicates (a republish, a copy, two restored), %d dead; want 4 and 0", st.Duplicates, st.Dead)
	}
	for _, coll := range []string{"notes", "profiles", "orders", "contracts"} {
		for _, doc := range []string{"p-" + coll, "l-" + coll} {
			d, err := store.Get(context.Background(), events.DocAddress{Tenant: "acme", Collection: coll, Doc: doc})
			if err != nil {
				t.Fatal(err)
			}
			if d.Version != 1 {
				t.Errorf("%s/%s: v%d, want 1", coll, doc, d.Version)
			}
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := projection.Verify(context.Background(), e.js, store, cfg); err != nil {
		t.Fatal(err)
	}
}
