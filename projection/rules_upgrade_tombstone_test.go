package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestRules_PreAudienceTombstoneRefusesItsOwner: a view written before
// Doc.Audience was kept (same rules, so checkRules does not run) holds
// ann's tombstone of l1 with no Audience. judgeWrite's create-over-a-
// tombstone guard reads nil as nobody: ann, its owner and only reader,
// may never create l1 again, and is told only "you may not write this
// document".
func TestRules_PreAudienceTombstoneRefusesItsOwner(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	ctx := context.Background()
	rs := mustRules(t, testRules)
	ann := newWriter("acme", "ann", 0)
	tomb := projection.Doc{Tenant: "acme", Collection: "lists", ID: "l1", Version: 2, Deleted: true,
		HLC: events.HLC{Wall: time.Now().Add(-time.Hour).UnixMilli()}, Event: ann.ids.New().String(), Client: "ann", Seq: 2}
	b := &projection.Batch{Docs: []projection.Doc{tomb}, Streams: &projection.StreamMarks{Rules: rs.Fingerprint()}}
	for name, m := range map[string]*projection.StreamMark{events.StreamEvents: &b.Streams.Events, events.StreamChanges: &b.Streams.Changes} {
		s, err := e.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		m.Created = s.CachedInfo().Created
	}
	if err := store.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	p := startProjector(t, e.js, store, projection.Config{Rules: rs})
	ann.seq = 2
	ev := ann.event("lists", "l1", events.OpPut, 0, map[string]any{"owner": "ann"})
	waitCheckpoint(t, p, publish(t, e.js, ruledMsg(t, ev), ev.ID))
	if r := receiptOf(t, e.js, ev); r.Outcome != events.OutcomeApplied {
		t.Fatalf("ann re-creating her own list deleted before the upgrade: %s %q", r.Outcome, r.Reason)
	}
}
