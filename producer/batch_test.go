package producer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var testBucket = []byte("test.batch")

// putKey is a Batch fn that stores key in testBucket and counts its runs.
func putKey(key string, runs *atomic.Int32) func(tx *Tx) error {
	return func(tx *Tx) error {
		runs.Add(1)
		b, err := tx.CreateBucketIfNotExists(testBucket)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), []byte("v"))
	}
}

// storedKeys returns the keys of testBucket.
func storedKeys(t *testing.T, l *Log) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	err := l.View(t.Context(), func(tx *Tx) error {
		b := tx.Bucket(testBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error { got[string(k)] = true; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestLog_BatchSharesAppendsCommit: Batches queued beside appends are
// committed in the appends' transaction: one commit for all of them.
func TestLog_BatchSharesAppendsCommit(t *testing.T) {
	l := tempLog(t)
	mustAppend(t, l, put("c", "first", 0))
	before := l.Stats()
	l.appendMu.Lock() // as a running commit holds it
	unlock := sync.OnceFunc(l.appendMu.Unlock)
	defer unlock()
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	var runs atomic.Int32
	for i := range n {
		wg.Add(2)
		go func() { defer wg.Done(); _, errs[i] = l.Append(t.Context(), put("c", fmt.Sprint("d", i), i)) }()
		go func() { defer wg.Done(); errs[n+i] = l.Batch(t.Context(), putKey(fmt.Sprint("k", i), &runs)) }()
	}
	waitFor(t, 10*time.Second, "requests queued", func() bool { return queued(l) == 2*n })
	unlock()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	st := l.Stats()
	if got := st.Commits - before.Commits; got != 1 {
		t.Errorf("%d appends and %d batches made %d commits, want 1", n, n, got)
	}
	if got := st.Requests - before.Requests; got != 2*n {
		t.Errorf("Stats counted %d requests, want %d", got, 2*n)
	}
	if keys := storedKeys(t, l); len(keys) != n {
		t.Errorf("stored keys %v, want %d", keys, n)
	}
	if got := l.LastSeq(); got != n+1 {
		t.Errorf("LastSeq %d, want %d", got, n+1)
	}
}

// TestLog_BatchFailureIsItsOwn: a Batch fn that fails, grouped with other
// Batches and an append, fails alone and stores nothing; the others are
// committed (their fns run again, in the group retried without it).
func TestLog_BatchFailureIsItsOwn(t *testing.T) {
	l := tempLog(t)
	l.appendMu.Lock()
	unlock := sync.OnceFunc(l.appendMu.Unlock)
	defer unlock()
	boom := errors.New("boom")
	var runsA, runsB, runsBad atomic.Int32
	failing := func(tx *Tx) error {
		if err := putKey("bad", &runsBad)(tx); err != nil {
			return err
		}
		return boom
	}
	fns := []func(tx *Tx) error{putKey("a", &runsA), failing, putKey("b", &runsB)}
	errs := make([]error, len(fns)+1)
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = l.Batch(t.Context(), fn) }()
		waitFor(t, 10*time.Second, "request queued", func() bool { return queued(l) == i+1 })
	}
	wg.Add(1)
	go func() { defer wg.Done(); _, errs[len(fns)] = l.Append(t.Context(), put("c", "d", 1)) }()
	waitFor(t, 10*time.Second, "requests queued", func() bool { return queued(l) == len(fns)+1 })
	unlock()
	wg.Wait()
	if errs[0] != nil || errs[2] != nil || errs[3] != nil || !errors.Is(errs[1], boom) {
		t.Fatalf("errors %v, want only the second, boom", errs)
	}
	keys := storedKeys(t, l)
	if !keys["a"] || !keys["b"] || keys["bad"] || len(keys) != 2 {
		t.Errorf("stored keys %v, want a and b", keys)
	}
	if runsA.Load() != 2 || runsBad.Load() != 1 {
		t.Errorf("fn runs: a %d, failing %d; want 2 (the group, then without the failing one) and 1", runsA.Load(), runsBad.Load())
	}
	es, err := l.Entries(t.Context())
	if err != nil || len(es) != 1 || es[0].Event.Seq != 1 {
		t.Fatalf("entries %v (%v), want the append at sequence 1", es, err)
	}
}

// TestLog_BatchWithdrawnOnCancel: a Batch whose ctx ends while it waits for
// its turn returns ctx's error, and its fn never runs.
func TestLog_BatchWithdrawnOnCancel(t *testing.T) {
	l := tempLog(t)
	l.appendMu.Lock()
	unlock := sync.OnceFunc(l.appendMu.Unlock)
	defer unlock()
	var runsLead, runsFollow atomic.Int32
	leaderDone := make(chan error, 1)
	go func() { leaderDone <- l.Batch(t.Context(), putKey("lead", &runsLead)) }()
	waitFor(t, 10*time.Second, "request queued", func() bool { return queued(l) == 1 })
	ctx, cancel := context.WithCancel(t.Context())
	followerDone := make(chan error, 1)
	go func() { followerDone <- l.Batch(ctx, putKey("follow", &runsFollow)) }()
	waitFor(t, 10*time.Second, "requests queued", func() bool { return queued(l) == 2 })
	cancel()
	err := <-followerDone
	unlock()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled batch: %v, want context.Canceled", err)
	}
	if err := <-leaderDone; err != nil {
		t.Fatal(err)
	}
	if keys := storedKeys(t, l); !keys["lead"] || keys["follow"] || runsFollow.Load() != 0 {
		t.Errorf("stored %v, follower ran %d times; want only the leader's, and no run", keys, runsFollow.Load())
	}
}

// TestLog_CloseWhileBatchesQueued: Close with Batches and appends queued
// behind a running commit waits for them: each is committed (durable in
// the file once reopened) and returns nil, none is left waiting, and after
// Close both fail with ErrClosed.
func TestLog_CloseWhileBatchesQueued(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := mustOpen(t, path)
	l.appendMu.Lock()
	unlock := sync.OnceFunc(l.appendMu.Unlock)
	defer unlock()
	const n = 5
	var runs atomic.Int32
	var wg sync.WaitGroup
	errs := make([]error, n+1)
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = l.Batch(t.Context(), putKey(fmt.Sprint("k", i), &runs)) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); _, errs[n] = l.Append(t.Context(), put("c", "d", 1)) }()
	waitFor(t, 10*time.Second, "requests queued", func() bool { return queued(l) == n+1 })
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	// Close is waiting once a new reader would have to wait for it.
	waitFor(t, 10*time.Second, "Close waiting for the queued requests", func() bool {
		if l.closeMu.TryRLock() {
			l.closeMu.RUnlock()
			return false
		}
		return true
	})
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with requests still queued", err)
	default:
	}
	unlock()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d queued before Close: %v, want committed", i, err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := l.Batch(t.Context(), putKey("late", &runs)); !errors.Is(err, ErrClosed) {
		t.Errorf("Batch after Close: %v, want ErrClosed", err)
	}
	if _, err := l.Append(t.Context(), put("c", "late", 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	l2 := mustOpen(t, path)
	if keys := storedKeys(t, l2); len(keys) != n {
		t.Errorf("after reopening: keys %v, want %d", keys, n)
	}
	if got := l2.LastSeq(); got != 1 {
		t.Errorf("after reopening: LastSeq %d, want 1", got)
	}
}
