package producer

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestAppend_InvalidWriteRefusedBeforeItsGroup: an invalid write is
// refused at once, before it joins a group commit, so it neither waits for
// the commit under way nor makes the group it would have joined run again
// without it: a catch-up-sized Batch queued with k invalid appends of
// other callers runs once, not k+1 times under the append lock.
func TestAppend_InvalidWriteRefusedBeforeItsGroup(t *testing.T) {
	l := tempLog(t)
	l.appendMu.Lock() // a commit under way
	unlock := sync.OnceFunc(l.appendMu.Unlock)
	defer unlock()
	var runs atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = l.Batch(t.Context(), func(tx *Tx) error {
			runs.Add(1)
			b, err := tx.CreateBucketIfNotExists(testBucket)
			if err != nil {
				return err
			}
			for i := range 1000 {
				if err := b.Put([]byte(fmt.Sprintf("k%05d", i)), []byte("v")); err != nil {
					return err
				}
			}
			return nil
		})
	}()
	waitFor(t, 10*time.Second, "batch queued", func() bool { return queued(l) == 1 })
	const k = 8
	var refused atomic.Int32
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := put("c", "d", 1)
			w.Collection = "" // invalid
			if _, err := l.Append(t.Context(), w); err != nil && strings.Contains(err.Error(), "collection") {
				refused.Add(1)
			}
		}()
	}
	waitFor(t, 10*time.Second, "every invalid append refused while the commit under way holds the lock", func() bool { return refused.Load() == k })
	if n := queued(l); n != 1 {
		t.Errorf("%d requests queued, want only the Batch: invalid appends joined the group", n)
	}
	unlock()
	wg.Wait()
	if runs.Load() != 1 {
		t.Errorf("bookkeeping fn ran %d times, want 1: invalid appends of other callers re-ran it", runs.Load())
	}
}
