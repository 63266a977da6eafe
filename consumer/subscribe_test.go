package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

// TestSubscribe_ExactlyOnceAcrossRestart proves that a durable subscriber
// sees every change exactly once even when it is drained and started again
// in the middle of the stream, and that a failing handler gets the change
// again (Nak with backoff) without it being seen twice as handled.
func TestSubscribe_ExactlyOnceAcrossRestart(t *testing.T) {
	_, _, js := mustServer(t)
	const n = 300
	var mu sync.Mutex
	seen := map[string]int{}
	failed := false
	handler := func(_ context.Context, ch *events.Change) error {
		mu.Lock()
		defer mu.Unlock()
		if ch.Doc == "d7" && !failed {
			failed = true
			return errors.New("transient")
		}
		seen[fmt.Sprintf("%s@%d", ch.Doc, ch.Version)]++
		return nil
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	cfg := SubscribeConfig{Tenant: "t1", Collections: []string{"todos"}, Durable: "svc", Handler: handler,
		Backoff: []time.Duration{10 * time.Millisecond}}

	for i := range n / 2 {
		publishChange(t, js, testChange("t1", "todos", fmt.Sprintf("d%d", i), 1, i))
	}
	publishChange(t, js, testChange("t1", "other", "x", 1, 0)) // out of scope
	publishChange(t, js, testChange("t2", "todos", "x", 1, 0)) // other tenant
	sub, err := Subscribe(t.Context(), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for count() < n/4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if count() < n/4 {
		c, _ := js.Consumer(t.Context(), events.StreamChanges, "svc")
		ci, _ := c.Info(t.Context())
		t.Fatalf("count %d info %+v delivered %+v ackfloor %+v", count(), ci.NumAckPending, ci.Delivered, ci.AckFloor)
	}
	t.Log("count", count())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := sub.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	for i := n / 2; i < n; i++ {
		publishChange(t, js, testChange("t1", "todos", fmt.Sprintf("d%d", i), 1, i))
	}
	sub, err = Subscribe(t.Context(), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()
	waitFor(t, 20*time.Second, "all changes", func() bool { return count() >= n })
	sub.Stop()
	sub.Stop() // safe twice
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != n {
		t.Fatalf("saw %d distinct changes, want %d", len(seen), n)
	}
	for k, c := range seen {
		if c != 1 {
			t.Errorf("change %s handled %d times", k, c)
		}
	}
	if !failed {
		t.Error("the failing handler was never exercised")
	}
}

func TestSubscribe_Config(t *testing.T) {
	tests := []struct {
		name    string
		cfg     SubscribeConfig
		wantErr error
	}{
		{"empty", SubscribeConfig{}, ErrInvalidConfig},
		{"bad durable", SubscribeConfig{Tenant: "t", Durable: "a.b", Handler: func(context.Context, *events.Change) error { return nil }}, ErrInvalidConfig},
		{"ok", SubscribeConfig{Tenant: "t", Durable: "a", Handler: func(context.Context, *events.Change) error { return nil }}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.validate(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("validate() = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestWatch_ResumesAcrossServerRestart proves the ordered watcher survives a
// server restart without gaps or repeats.
func TestWatch_ResumesAcrossServerRestart(t *testing.T) {
	s, _, js := mustServer(t)
	var mu sync.Mutex
	var got []uint64
	w, err := Watch(t.Context(), js, WatchConfig{Tenant: "t1", Handler: func(_ context.Context, ch *events.Change) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ch.Version)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for v := uint64(1); v <= 50; v++ {
		publishChange(t, js, testChange("t1", "c", fmt.Sprintf("d%d", v), v, 0))
	}
	waitFor(t, 10*time.Second, "50 changes", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 50 })
	s = restartServer(t, s)
	for v := uint64(51); v <= 100; v++ {
		publishChangeRetry(t, js, testChange("t1", "c", fmt.Sprintf("d%d", v), v, 0))
	}
	waitFor(t, 20*time.Second, "100 changes", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 100 })
	w.Stop()
	if w.Err() != nil {
		t.Fatal(w.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	for i, v := range got {
		if v != uint64(i+1) {
			t.Fatalf("change %d has version %d: gap or repeat in %v", i, v, got)
		}
	}
	if p := w.Progress(); p.Applied != 100 || !p.Done() {
		t.Errorf("progress %+v", p)
	}
}
