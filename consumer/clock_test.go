package consumer

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

// TestReplica_SlowClockWritesAfterReceivedChange: a client whose wall clock
// is an hour behind the server's (here: a change stamped an hour ahead of
// the client's clock, past events.DefaultMaxDrift) applies the change, then
// writes the document: the write's HLC is after the change's, so under lww
// the write built on the change is never ordered before it.
func TestReplica_SlowClockWritesAfterReceivedChange(t *testing.T) {
	_, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ch := testChange("t1", "c", "d", 1, 1)
	ch.HLC = events.HLC{Wall: time.Now().Add(time.Hour).UnixMilli(), Logical: 7}
	publishChange(t, js, ch)

	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if d, err := r.Get(ctx, "c", "d"); err != nil || d.Version != 1 {
		t.Fatalf("change not applied: %+v, %v", d, err)
	}
	r.Detach() // keep the write in the log, unpublished
	if _, err := r.Patch(ctx, "c", "d", events.Fields{"n": json.RawMessage(`2`)}); err != nil {
		t.Fatal(err)
	}
	es, err := r.Log().Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 {
		t.Fatalf("%d log entries, want 1", len(es))
	}
	if got := es[0].Event.HLC; got.Compare(ch.HLC) <= 0 {
		t.Fatalf("write stamped %s, not after the change %s it was built on", got, ch.HLC)
	}
}
