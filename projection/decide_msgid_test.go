package projection_test

import (
	"context"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// Issue 11 item 12: an event id reused by another client (a bug, a copy,
// on purpose) must not drop a change from CHANGES or a receipt from
// RECEIPTS: the message ids the projector derives name what they identify.
func TestProjector_ReusedEventIDKeepsEveryChangeAndReceipt(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	a := newWriter("acme", "A", 0)
	b := newWriter("acme", "B", 0)
	first := a.event("notes", "n1", events.OpPut, 0, map[string]any{"by": "A"})
	publish(t, e.js, eventMsg(t, first), "")
	reused := b.event("notes", "n2", events.OpPut, 0, map[string]any{"by": "B"})
	reused.ID = first.ID
	last := publish(t, e.js, eventMsg(t, reused), "")

	cfg := projection.Config{Policies: testPolicies()}
	p := startProjector(t, e.js, store, cfg)
	waitCheckpoint(t, p, last)
	waitFor(t, 10e9, "receipts", func() bool { return msgCount(t, e.js, events.StreamReceipts) >= 2 })

	ctx := context.Background()
	chg, err := e.js.Stream(ctx, events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []*events.Event{first, reused} {
		subj := events.ChangeSubject(ev.Tenant, ev.Collection, ev.Doc)
		waitFor(t, 10e9, "change of "+ev.Doc, func() bool {
			_, err := chg.GetLastMsgForSubject(ctx, subj)
			return err == nil
		})
	}
	byClient := map[string]events.Outcome{}
	for _, m := range readAll(t, e.js, events.StreamReceipts) {
		r, err := events.DecodeReceipt(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		byClient[r.Client] = r.Outcome
	}
	if byClient["A"] != events.OutcomeApplied || byClient["B"] != events.OutcomeApplied {
		t.Fatalf("receipts by client %v: want one applied receipt for each of A and B", byClient)
	}
}
