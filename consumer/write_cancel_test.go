package consumer

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// lateCancel is a context that reports itself cancelled from its second
// Err on: a caller that gives up while its write is being committed.
type lateCancel struct {
	context.Context
	n atomic.Int32
}

func (c *lateCancel) Err() error {
	if c.n.Add(1) > 1 {
		return context.Canceled
	}
	return nil
}

// TestReplica_PutDurableDespiteLateCancel: once a write is committed to
// the local log it will be published, so Put must say it succeeded even if
// its context ends before Put reads the document back. It returned the
// context's error, so an app (and the cluster test's writers) took a
// durable write for a failed one.
func TestReplica_PutDurableDespiteLateCancel(t *testing.T) {
	r := offlineReplica(t)
	ctx := &lateCancel{Context: t.Context()}
	if _, err := r.Put(ctx, "todos", "t1", events.Fields{"n": []byte("1")}); err != nil {
		d, gerr := r.Get(t.Context(), "todos", "t1")
		t.Fatalf("Put: %v, though the write is in the log (Get: %+v, %v)", err, d, gerr)
	}
	if st := r.Status(); st.Pending != 1 {
		t.Fatalf("pending %d, want the one write", st.Pending)
	}
}
