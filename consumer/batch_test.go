package consumer

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/ebbsync/ebb/events"
)

func offlineReplica(t *testing.T, mod ...func(*ReplicaConfig)) *Replica {
	t.Helper()
	cfg := ReplicaConfig{Dir: t.TempDir(), Tenant: "acme"}
	for _, m := range mod {
		m(&cfg)
	}
	r, err := OpenReplica(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func num(i int) events.Fields { return events.Fields{"n": json.RawMessage(fmt.Sprint(i))} }

// TestReplica_Batch: a batch stores every write as its own event, each
// building on the one before it, or stores none.
func TestReplica_Batch(t *testing.T) {
	r := offlineReplica(t, func(c *ReplicaConfig) { c.Collections = []string{"c"} })
	ctx := t.Context()

	// An invalid write fails the whole batch.
	_, err := r.Batch(ctx, func(b *WriteBatch) error {
		_ = b.Put("c", "a", num(1))
		return b.Put("c", "", num(2))
	})
	if !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("batch with an invalid write: %v, want events.ErrInvalid", err)
	}
	// So does a write out of scope, and fn's own error.
	if _, err := r.Batch(ctx, func(b *WriteBatch) error { _ = b.Put("c", "a", num(1)); _ = b.Put("x", "a", num(1)); return nil }); !errors.Is(err, ErrOutOfScope) {
		t.Fatalf("batch out of scope: %v, want ErrOutOfScope", err)
	}
	boom := errors.New("boom")
	if _, err := r.Batch(ctx, func(b *WriteBatch) error { _ = b.Put("c", "a", num(1)); return boom }); !errors.Is(err, boom) {
		t.Fatalf("batch whose fn fails: %v, want boom", err)
	}
	if s := r.Status(); s.Pending != 0 {
		t.Fatalf("failed batches left %d pending writes", s.Pending)
	}
	if _, err := r.Get(ctx, "c", "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after failed batches: %v, want ErrNotFound", err)
	}

	n, err := r.Batch(ctx, func(b *WriteBatch) error {
		for i := range 50 {
			if err := b.Put("c", fmt.Sprint("d", i%10), num(i)); err != nil {
				return err
			}
		}
		return b.Delete("c", "d9")
	})
	if err != nil || n != 51 {
		t.Fatalf("batch: %d, %v", n, err)
	}
	d, err := r.Get(ctx, "c", "d3")
	if err != nil || d.Pending != 5 || string(d.Fields["n"]) != "43" {
		t.Fatalf("d3 after the batch: %+v, %v; want 5 pending, n 43", d, err)
	}
	if _, err := r.Get(ctx, "c", "d9"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("d9 deleted in the batch: %v", err)
	}
	checkChains(t, r, 51)
}

// checkChains checks that the log holds n entries and each one's After is
// the previous entry of its document.
func checkChains(t *testing.T, r *Replica, n int) {
	t.Helper()
	es, err := r.Log().Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != n {
		t.Fatalf("log holds %d entries, want %d", len(es), n)
	}
	last := map[string]string{}
	for _, e := range es {
		k := e.Event.Collection + "/" + e.Event.Doc
		if e.Event.After != last[k] {
			t.Errorf("event %d of %s: After %q, want %q", e.Event.Seq, k, e.Event.After, last[k])
		}
		last[k] = e.Event.ID
	}
}

// TestReplica_ConcurrentPuts: Puts from many goroutines (group-committed)
// of one document each build on the write stored before them.
func TestReplica_ConcurrentPuts(t *testing.T) {
	r := offlineReplica(t)
	const writers, each = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := r.Put(t.Context(), "c", fmt.Sprint("doc", i%2), num(g*100+i)); err != nil {
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
	checkChains(t, r, writers*each)
	d, err := r.Get(t.Context(), "c", "doc0")
	if err != nil || d.Pending != writers*((each+1)/2) {
		t.Fatalf("doc0: %+v, %v", d, err)
	}
}
