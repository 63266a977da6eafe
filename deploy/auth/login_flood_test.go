package auth

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestGuard_FloodKeepsAVictimsLock: a user locked after failed logins stays
// locked when someone fills the Guard with locked entries of their own
// (one made-up user per IPv6 source): evict used to forget every entry,
// the victim's lock with them.
func TestGuard_FloodKeepsAVictimsLock(t *testing.T) {
	g := NewGuard(LoginLimit{Burst: 1, Backoff: time.Hour, MaxBackoff: time.Hour, Checks: 1})
	bad := func() error { return errors.New("wrong password") }
	ctx := context.Background()
	for range 2 {
		_ = g.Check(ctx, "victim", "198.51.100.7", bad)
	}
	if err := g.Check(ctx, "victim", "203.0.113.9", bad); !errors.Is(err, ErrTooManyAttempts) {
		t.Fatalf("victim not locked: %v", err)
	}
	for i := 0; i < maxTracked/2+1; i++ {
		src := fmt.Sprintf("2001:db8::%x", i)
		for range 2 { // Burst+1 failures: both u:x<i> and s:<src> locked
			_ = g.Check(ctx, fmt.Sprintf("x%d", i), src, bad)
		}
	}
	if err := g.Check(ctx, "victim", "203.0.113.9", bad); errors.Is(err, ErrTooManyAttempts) {
		return // still locked: fine
	}
	t.Fatalf("victim's 1h lock was forgotten after %d failed logins of made-up users from an IPv6 range", maxTracked+2)
}
