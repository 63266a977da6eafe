package producer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

// queued returns how many requests wait in l's group-commit queue.
func queued(l *Log) int {
	l.groupMu.Lock()
	defer l.groupMu.Unlock()
	return len(l.queue)
}

// TestLog_GroupCommit: appends that arrive while a commit runs are
// committed together, in one transaction, each with its own events and
// consecutive sequences.
func TestLog_GroupCommit(t *testing.T) {
	l := tempLog(t)
	mustAppend(t, l, put("c", "first", 0))
	before := l.commits.Load()

	// Hold the log's append lock as a running commit would: the first
	// caller leads and waits for it, the others queue behind.
	const n = 8
	l.appendMu.Lock()
	unlock := sync.OnceFunc(l.appendMu.Unlock)
	defer unlock()
	var wg sync.WaitGroup
	evs := make([][]*events.Event, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs[i], errs[i] = l.AppendBatch(t.Context(), []Write{put("c", fmt.Sprint("d", i), i), put("c", fmt.Sprint("d", i), i)})
		}()
	}
	waitFor(t, 10*time.Second, "requests queued", func() bool { return queued(l) == n })
	unlock()
	wg.Wait()
	if got := l.commits.Load() - before; got != 1 {
		t.Errorf("%d appends made %d commits, want 1", n, got)
	}
	seen := map[uint64]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("append %d: %v", i, errs[i])
		}
		if len(evs[i]) != 2 || evs[i][1].Seq != evs[i][0].Seq+1 {
			t.Fatalf("append %d: events %+v, want 2 with consecutive sequences", i, evs[i])
		}
		for _, e := range evs[i] {
			seen[e.Seq] = true
		}
	}
	for s := uint64(2); s <= 2*n+1; s++ {
		if !seen[s] {
			t.Errorf("sequence %d missing: %v", s, seen)
		}
	}
	if got := l.LastSeq(); got != 2*n+1 {
		t.Errorf("LastSeq %d, want %d", got, 2*n+1)
	}
}

// TestLog_GroupCommitFailureIsItsOwn: an invalid request grouped with
// valid ones fails alone and stores nothing; the others commit.
func TestLog_GroupCommitFailureIsItsOwn(t *testing.T) {
	l := tempLog(t)
	l.appendMu.Lock()
	unlock := sync.OnceFunc(l.appendMu.Unlock)
	defer unlock()
	var wg sync.WaitGroup
	ws := [][]Write{
		{put("c", "a", 1)},
		{put("c", "b", 1), put("c", "b2", 1)}, // its Prepare makes the second invalid, inside the commit
		{put("c", "d", 1)},
	}
	// A write invalid by itself is refused before it joins a group
	// (precheck); one that Prepare makes invalid fails in the commit.
	invalidBase := func(_ *Tx, w *Write) error {
		if w.Doc == "b2" {
			w.BaseVersion = events.MaxSafeInteger + 1
		}
		return nil
	}
	errs := make([]error, len(ws))
	for i := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = l.AppendWith(t.Context(), ws[i], invalidBase)
		}()
	}
	waitFor(t, 10*time.Second, "requests queued", func() bool { return queued(l) == len(ws) })
	unlock()
	wg.Wait()
	if errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], events.ErrInvalid) {
		t.Fatalf("errors %v, want only the second, wrapping events.ErrInvalid", errs)
	}
	es, err := l.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for _, e := range es {
		docs = append(docs, e.Event.Doc)
		if e.Event.Seq > 2 {
			t.Errorf("event %s has sequence %d: the failed request left a hole", e.Event.ID, e.Event.Seq)
		}
	}
	if len(docs) != 2 || slices.Contains(docs, "b") || slices.Contains(docs, "b2") {
		t.Errorf("stored docs %v, want a and d", docs)
	}
}

// TestLog_AppendWithPrepare: Prepare sees, inside the transaction, every
// write stored before it, of its own call and of calls grouped with it.
func TestLog_AppendWithPrepare(t *testing.T) {
	l := tempLog(t)
	after := func(tx *Tx, w *Write) error {
		es, err := tx.UnsettledFor(w.Collection, w.Doc)
		if err != nil {
			return err
		}
		if len(es) > 0 {
			w.After = es[len(es)-1].Event.ID
		}
		return nil
	}
	l.appendMu.Lock()
	unlock := sync.OnceFunc(l.appendMu.Unlock)
	defer unlock()
	var wg sync.WaitGroup
	const n = 6
	evs := make([][]*events.Event, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs[i], errs[i] = l.AppendWith(t.Context(), []Write{put("c", "same", i), put("c", "same", i)}, after)
		}()
	}
	waitFor(t, 10*time.Second, "requests queued", func() bool { return queued(l) == n })
	unlock()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	es, err := l.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		want := ""
		if i > 0 {
			want = es[i-1].Event.ID
		}
		if e.Event.After != want {
			t.Errorf("entry %d After %q, want %q (the write before it)", i, e.Event.After, want)
		}
	}
	// A Prepare error fails its call alone.
	boom := errors.New("boom")
	_, err = l.AppendWith(t.Context(), []Write{put("c", "x", 1)}, func(*Tx, *Write) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("AppendWith with a failing Prepare: %v, want boom", err)
	}
}

// TestLog_AppendWithdrawnOnCancel: a call whose ctx ends while it waits
// for its turn stores nothing.
func TestLog_AppendWithdrawnOnCancel(t *testing.T) {
	l := tempLog(t)
	l.appendMu.Lock()
	unlock := sync.OnceFunc(l.appendMu.Unlock)
	defer unlock()
	leaderDone := make(chan error, 1)
	go func() { _, err := l.Append(t.Context(), put("c", "lead", 1)); leaderDone <- err }()
	waitFor(t, 10*time.Second, "requests queued", func() bool { return queued(l) == 1 })
	ctx, cancel := context.WithCancel(t.Context())
	followerDone := make(chan error, 1)
	go func() { _, err := l.Append(ctx, put("c", "follow", 1)); followerDone <- err }()
	waitFor(t, 10*time.Second, "requests queued", func() bool { return queued(l) == 2 })
	cancel()
	err := <-followerDone
	unlock()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled append: %v, want context.Canceled", err)
	}
	if err := <-leaderDone; err != nil {
		t.Fatal(err)
	}
	es, err := l.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || es[0].Event.Doc != "lead" {
		t.Fatalf("entries %d, want only the leader's", len(es))
	}
}
