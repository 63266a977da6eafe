package consumer

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestReplica_OnlinePutsShareCommits: N Puts from 8 goroutines on an online
// replica, then a Sync, so that every write has been appended, published
// (its ack stored), answered by a receipt and echoed by its change. All
// that bookkeeping shares the appends' transactions (the log's group
// commit), so the replica's file commits at most once per write, amortised:
// not once for the append, once for the ack, once for the receipt and once
// for the change.
func TestReplica_OnlinePutsShareCommits(t *testing.T) {
	s, nc, js := mustServer(t)
	mustProjector(t, js, testPolicies())
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "alice", Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_ = s
	if err := r.Attach(t.Context(), nc); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 40
	before := r.Log().Stats()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := r.Put(t.Context(), "lww", fmt.Sprintf("d%d-%d", g, i%4), num(i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, err := r.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	const n = writers * each
	waitFor(t, 20*time.Second, "every write settled and its change applied", func() bool {
		st := r.Status()
		return st.Pending == 0 && st.Changes.Seq >= n
	})
	after := r.Log().Stats()
	commits := after.Commits - before.Commits
	fsyncs := 2 * commits
	t.Logf("%d writes: %d commits, %d fsyncs (%.2f per write), %d requests", n, commits, fsyncs, float64(fsyncs)/n, after.Requests-before.Requests)
	if fsyncs > n {
		t.Errorf("%d writes with their acks, receipts and changes made %d commits (%d fsyncs), want at most %d fsyncs (one per write, amortised)", n, commits, fsyncs, n)
	}
}
