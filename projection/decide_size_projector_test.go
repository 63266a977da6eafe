package projection_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// Issue 11 item 10: one document patched past the NATS message size
// stopped the projector for every tenant (its change could never be
// published). The crossing patch is rejected and everything else goes on.
func TestProjector_DocumentPastMessageSizeRejected(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	w := newWriter("acme", "A", 0)
	big := strings.Repeat("x", 200<<10)
	publish(t, e.js, eventMsg(t, w.event("notes", "big", events.OpPut, 0, map[string]any{"f0": big})), "")
	var patches []*events.Event
	for i := range 6 {
		p := w.event("notes", "big", events.OpPatch, uint64(i+1), map[string]any{"f" + string(rune('1'+i)): big})
		patches = append(patches, p)
		publish(t, e.js, eventMsg(t, p), "")
	}
	other := newWriter("globex", "B", 0).event("notes", "small", events.OpPut, 0, map[string]any{"ok": true})
	last := publish(t, e.js, eventMsg(t, other), "")

	p := startProjector(t, e.js, store, projection.Config{Policies: testPolicies()})
	waitCheckpoint(t, p, last)
	ctx := context.Background()
	chg, err := e.js.Stream(ctx, events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the other tenant's change", func() bool {
		select {
		case <-p.Done():
			t.Fatalf("projector stopped: %v", p.Err())
		default:
		}
		_, err := chg.GetLastMsgForSubject(ctx, events.ChangeSubject("globex", "notes", "small"))
		return err == nil
	})
	outcomes := map[string]*events.Receipt{}
	waitFor(t, 20*time.Second, "every receipt", func() bool {
		for _, m := range readAll(t, e.js, events.StreamReceipts) {
			r, err := events.DecodeReceipt(m.Data())
			if err != nil {
				t.Fatal(err)
			}
			outcomes[r.Event] = r
		}
		return len(outcomes) == 8
	})
	rejected := 0
	for _, pe := range patches {
		if r := outcomes[pe.ID]; r.Outcome == events.OutcomeRejected {
			// The first names the limit; the later ones, built on it, are stale.
			if rejected == 0 && !strings.Contains(r.Reason, "MaxDocBytes") {
				t.Errorf("rejection reason %q does not name the limit", r.Reason)
			}
			rejected++
		}
	}
	if rejected == 0 {
		t.Fatal("no patch rejected: the document grew past the limit")
	}
	d, err := store.Get(ctx, events.DocAddress{Tenant: "acme", Collection: "notes", Doc: "big"})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := events.EncodeChange(d.Change(nil))
	if len(data) > projection.DefaultMaxDocBytes {
		t.Errorf("stored document encodes to %d bytes", len(data))
	}
}

// Issue 13 item 3: a near-1 MiB garbage event made a dead letter (a base64
// copy) larger than the message limit, which stopped the projector for
// every tenant. The dead letter refers to EVENTS instead.
func TestProjector_HugeGarbageDeadLettered(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	garbage := nats.NewMsg(events.EventSubject("acme", "A", "notes", "x"))
	garbage.Data = []byte(strings.Repeat("\xff", 1<<20-4<<10))
	gseq := publish(t, e.js, garbage, "")
	good := newWriter("acme", "A", 0).event("notes", "n1", events.OpPut, 0, map[string]any{"ok": true})
	last := publish(t, e.js, eventMsg(t, good), "")

	p := startProjector(t, e.js, store, projection.Config{Policies: testPolicies()})
	waitCheckpoint(t, p, last)
	ctx := context.Background()
	chg, err := e.js.Stream(ctx, events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the good event's change and the dead letter", func() bool {
		select {
		case <-p.Done():
			t.Fatalf("projector stopped: %v", p.Err())
		default:
		}
		_, err := chg.GetLastMsgForSubject(ctx, events.ChangeSubject("acme", "notes", "n1"))
		return err == nil && msgCount(t, e.js, events.StreamDead) == 1
	})
	dl, err := events.DecodeDeadLetter(readAll(t, e.js, events.StreamDead)[0].Data())
	if err != nil {
		t.Fatal(err)
	}
	if dl.Stream != gseq || dl.Size != len(garbage.Data) || dl.Subject != garbage.Subject {
		t.Errorf("dead letter refers to %s seq %d size %d, want %s seq %d size %d", dl.Subject, dl.Stream, dl.Size, garbage.Subject, gseq, len(garbage.Data))
	}
}
