package consumer

import (
	"testing"
	"time"
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
