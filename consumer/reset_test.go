package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// TestReplica_ResyncsAfterChangesReset: a CHANGES stream deleted and
// recreated behind the replica's back is detected when the replica attaches
// again; the view is rebuilt from the new stream (no stale documents), and
// the resync is reported, not silent.
func TestReplica_ResyncsAfterChangesReset(t *testing.T) {
	_, nc, js := mustServer(t)
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	old := publishChanges(t, js, 20, 40)
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	checkView(t, r, old)

	r.Detach()
	if err := js.DeleteStream(ctx, events.StreamChanges); err != nil {
		t.Fatal(err)
	}
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	want := serverView{}
	for i := range 5 {
		ch := testChange("t1", "c", fmt.Sprintf("new-%d", i), 1, i)
		publishChange(t, js, ch)
		want[ch.Doc] = ch
	}
	if err := r.Attach(ctx, nc); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	checkView(t, r, want)
	st := r.Status()
	if st.Resyncs != 1 || !errors.Is(st.LastResync, ErrResync) {
		t.Fatalf("status %+v: want one resync reported", st)
	}
}

// publishReceipt publishes a receipt for e to its writer's RECEIPTS subject,
// as the projector would.
func publishReceipt(tb testing.TB, js jetstream.Publisher, e *events.Event, o events.Outcome, version uint64) {
	tb.Helper()
	b, err := events.EncodeReceipt(&events.Receipt{Schema: events.SchemaVersion, Event: e.ID, Tenant: e.Tenant, Client: e.Client,
		Seq: e.Seq, Collection: e.Collection, Doc: e.Doc, Outcome: o, Version: version, Reason: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := js.Publish(tb.Context(), events.ReceiptSubject(e.Tenant, e.Client), b); err != nil {
		tb.Fatalf("publish receipt: %v", err)
	}
}

// waitPublished waits until r's log has published every entry, and returns
// them.
func waitPublished(tb testing.TB, r *Replica, n int) []producer.Entry {
	tb.Helper()
	var es []producer.Entry
	waitFor(tb, 10*time.Second, "the writes to be published", func() bool {
		var err error
		es, err = r.Log().Entries(tb.Context(), producer.StatePublished)
		return err == nil && len(es) == n
	})
	return es
}

// TestReplica_ScopeChangeSettlesAwaitingReceipts: an applied receipt that
// waits for its change when the replica is reopened with another scope is
// not dropped with the view: the write is settled by it, so it does not
// stay pending forever (Sync completes) while the resync replays the view.
func TestReplica_ScopeChangeSettlesAwaitingReceipts(t *testing.T) {
	_, nc, js := mustServer(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: dir, Tenant: "t1", Client: "c1", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Put(ctx, "c", "d", events.Fields{"n": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	e := waitPublished(t, r, 1)[0].Event
	publishReceipt(t, js, e, events.OutcomeApplied, 1) // its change has not arrived
	waitFor(t, 10*time.Second, "the receipt to be read", func() bool { return r.Status().Receipts.Seq >= 1 })
	if st := r.Status(); st.Pending != 1 {
		t.Fatalf("pending %d before the scope change, want 1 (the receipt waits for its change)", st.Pending)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r, err = OpenReplica(ctx, ReplicaConfig{Dir: dir, Tenant: "t1", Client: "c1", Collections: []string{"c", "other"}, Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	if _, err := r.Sync(sctx); err != nil {
		t.Fatalf("sync after the scope change: %v (the write stayed pending)", err)
	}
	st := r.Status()
	if st.Pending != 0 || st.Resyncs != 1 {
		t.Fatalf("status %+v: want no pending write and one resync", st)
	}
	es, err := r.Log().Entries(ctx, producer.StateSettled)
	if err != nil || len(es) != 1 || es[0].Outcome != events.OutcomeApplied {
		t.Fatalf("settled entries %+v, %v: want the write settled as applied", es, err)
	}
}

// TestReplica_ResyncsAfterChangesResetWhileAttached: the same reset while
// the replica stays attached. nats.go's ordered consumer remakes its
// consumer on the new stream after the old cursor, so it would read nothing
// the new stream holds below it; Sync finds the reset and waits for the
// resync instead of reporting the old view as caught up.
func TestReplica_ResyncsAfterChangesResetWhileAttached(t *testing.T) {
	_, nc, js := mustServer(t)
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	old := publishChanges(t, js, 20, 40)
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	checkView(t, r, old)

	if err := js.DeleteStream(ctx, events.StreamChanges); err != nil {
		t.Fatal(err)
	}
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	want := serverView{}
	for i := range 5 {
		ch := testChange("t1", "c", fmt.Sprintf("new-%d", i), 1, i)
		publishChange(t, js, ch)
		want[ch.Doc] = ch
	}
	rep, err := r.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkView(t, r, want)
	if st := r.Status(); st.Resyncs != 1 || !errors.Is(st.LastResync, ErrResync) || !rep.Resynced {
		t.Fatalf("status %+v, report %+v: want one resync reported", st, rep)
	}
}
