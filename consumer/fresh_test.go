package consumer

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// TestReplica_FreshStartCommitsNothing: attaching a fresh replica and
// syncing it with a stream that holds nothing in its scope writes nothing
// to its file: neither follower's start has anything to store (no reset,
// no receipts to republish, nothing quarantined), so the only commits of a
// catch-up are its batches. A commit at start costs two fdatasyncs and
// holds the log's write lock the first batch waits for.
func TestReplica_FreshStartCommitsNothing(t *testing.T) {
	_, nc, js := mustServer(t)
	publishChange(t, js, testChange("other", "c", "d1", 1, 1)) // not in scope
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	opened := r.Log().Stats().Commits
	if err := r.Attach(t.Context(), nc); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the receipts follower started", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.following != ""
	})
	if got := r.Log().Stats().Commits - opened; got != 0 {
		t.Errorf("attach and sync of a fresh replica with nothing to pull committed %d times, want 0", got)
	}
}

// TestReplica_SyncReadsChangesOnce: a Sync of an attached replica reads
// CHANGES' state once (stream info) for both of its uses: whether the
// stream was reset against the cursor, and the last change in scope, its
// target (one direct get); the JetStream API requests it makes are counted
// on the server's side.
func TestReplica_SyncReadsChangesOnce(t *testing.T) {
	s, nc, js := mustServer(t)
	publishChange(t, js, testChange("t1", "c", "d1", 1, 1))
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Conn: nc, GapCheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the receipts follower started", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.following != ""
	})
	mon := embeddedtest.MustConnect(t, s)
	var mu sync.Mutex
	var reqs []string
	if _, err := mon.Subscribe("$JS.API.>", func(m *nats.Msg) {
		if !strings.Contains(m.Subject, ".MSG.NEXT.") { // the followers' own pulls
			mu.Lock()
			reqs = append(reqs, m.Subject)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := mon.Flush(); err != nil {
		t.Fatal(err)
	}
	publishChange(t, js, testChange("t1", "c", "d2", 1, 2))
	if _, err := r.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := r.Status().Changes.Seq; got != 2 {
		t.Fatalf("after Sync the view is at %d, want 2", got)
	}
	if err := mon.Flush(); err != nil { // the copies of Sync's requests were queued before its PONG
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	infos := 0
	for _, s := range reqs {
		if s == "$JS.API.STREAM.INFO."+events.StreamChanges {
			infos++
		}
	}
	if infos != 1 || len(reqs) != 2 {
		t.Errorf("a Sync made the JetStream requests %q, want one stream info of %s and one read of its last change in scope", reqs, events.StreamChanges)
	}
}

// TestReplica_FreshOpenCommitsOnce: opening a fresh replica commits its
// file once: the view's buckets and scope are written in the transaction
// that opens the producer's log (whose own commit Log.Stats does not
// count), not in a second one. Reopening it, with the same scope or
// another, commits no more either, and a changed scope still resyncs.
func TestReplica_FreshOpenCommitsOnce(t *testing.T) {
	dir := t.TempDir()
	for i, cols := range [][]string{nil, nil, {"c"}} {
		r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: dir, Tenant: "t1", Collections: cols})
		if err != nil {
			t.Fatal(err)
		}
		got, st := r.Log().Stats().Commits, r.Status()
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if got != 0 {
			t.Errorf("open %d: %d commits after the log's own, want 0", i, got)
		}
		if wantResync := i == 2; (st.Resyncs == 1) != wantResync || (st.LastResync != nil) != wantResync {
			t.Errorf("open %d (collections %q): status %+v, want a resync only when the scope changed", i, cols, st)
		}
	}
}
