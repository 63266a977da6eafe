package auth

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGuard_BurstBackoffAndReset(t *testing.T) {
	g := NewGuard(LoginLimit{Burst: 3, Backoff: time.Second, MaxBackoff: 4 * time.Second})
	now := time.Unix(1000, 0)
	g.now = func() time.Time { return now }
	wrong := func() error { return ErrBadCredentials }
	ran := 0
	counted := func() error { ran++; return nil }
	ctx := context.Background()
	for i := range 3 {
		if err := g.Check(ctx, "alice", "10.0.0.1", wrong); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("failure %d: %v, want bad credentials", i+1, err)
		}
	}
	// The burst is spent: the 4th failure locks for Backoff.
	if err := g.Check(ctx, "alice", "10.0.0.1", wrong); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("4th failure: %v", err)
	}
	var locked *LockedError
	if err := g.Check(ctx, "alice", "10.0.0.1", counted); !errors.As(err, &locked) || !errors.Is(err, ErrTooManyAttempts) || locked.RetryAfter != time.Second {
		t.Fatalf("while locked: %v, want a LockedError of 1s", err)
	}
	if ran != 0 {
		t.Fatal("the password was checked while locked")
	}
	// Locked by user from another source, and by source for another user.
	if err := g.Check(ctx, "alice", "10.0.0.2", counted); !errors.Is(err, ErrTooManyAttempts) {
		t.Fatalf("same user, other source: %v, want locked", err)
	}
	if err := g.Check(ctx, "bob", "10.0.0.1", counted); !errors.Is(err, ErrTooManyAttempts) {
		t.Fatalf("same source, other user: %v, want locked", err)
	}
	if err := g.Check(ctx, "bob", "10.0.0.2", counted); err != nil || ran != 1 {
		t.Fatalf("other user, other source: %v, want checked", err)
	}
	// Each further failure doubles the lock, up to MaxBackoff.
	for _, want := range []time.Duration{2 * time.Second, 4 * time.Second, 4 * time.Second} {
		now = now.Add(time.Hour)
		_ = g.Check(ctx, "alice", "10.0.0.1", wrong)
		if err := g.Check(ctx, "alice", "10.0.0.1", counted); !errors.As(err, &locked) || locked.RetryAfter != want {
			t.Fatalf("lock %v, want %s", err, want)
		}
	}
	// A success clears the count.
	now = now.Add(time.Hour)
	if err := g.Check(ctx, "alice", "10.0.0.1", counted); err != nil {
		t.Fatal(err)
	}
	if err := g.Check(ctx, "alice", "10.0.0.1", wrong); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("first failure after a success: %v, want checked", err)
	}
}

// TestGuard_BoundsConcurrentChecks: at most Checks password checks run at
// once, however many logins arrive together.
func TestGuard_BoundsConcurrentChecks(t *testing.T) {
	g := NewGuard(LoginLimit{Burst: 1000, Checks: 2})
	var running, peak atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = g.Check(context.Background(), "u", "s"+string(rune('a'+i)), func() error {
				n := running.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				time.Sleep(5 * time.Millisecond) // the work being bounded, not a synchronisation
				running.Add(-1)
				return nil
			})
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > 2 || p < 1 {
		t.Fatalf("%d checks ran at once, want at most 2", p)
	}
}

// TestGuard_CachedSkipsTheQueue: with every check slot taken by slow
// guesses, a login whose password is already verified does not wait.
func TestGuard_CachedSkipsTheQueue(t *testing.T) {
	g := NewGuard(LoginLimit{Burst: 1000, Checks: 2})
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = g.Check(context.Background(), "mallory", "s"+string(rune('a'+i)), func() error {
				started <- struct{}{}
				<-release
				return ErrBadCredentials
			})
		}()
	}
	<-started
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := g.CheckCached(ctx, "alice", "10.0.0.9", func() bool { return true }, func() error { t.Error("checked a cached password"); return nil })
	close(release)
	wg.Wait()
	if err != nil {
		t.Fatalf("cached login behind a full queue: %v, want at once", err)
	}
	if err := g.Check(ctx, "alice", "10.0.0.9", func() error { return nil }); err != nil {
		t.Fatal(err)
	}
}
