package consumer

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
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
