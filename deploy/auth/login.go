package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrTooManyAttempts means a login was refused without looking at the
// password, because its user name or its source failed too often; see
// LoginLimit. A *LockedError carries how long to wait.
var ErrTooManyAttempts = errors.New("too many failed logins")

// LockedError is the error of a login refused by a Guard.
type LockedError struct {
	RetryAfter time.Duration // how long the lock still holds
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("%v: retry in %s", ErrTooManyAttempts, e.RetryAfter.Round(time.Second))
}

// Unwrap returns ErrTooManyAttempts.
func (e *LockedError) Unwrap() error { return ErrTooManyAttempts }

// maxTracked bounds the names and sources a Guard remembers; past it, the
// entries that are not locked are forgotten first.
const maxTracked = 1 << 16

// Guard applies a LoginLimit. It is safe for concurrent use. Its state is
// in memory: a restart forgets it.
type Guard struct {
	limit LoginLimit
	now   func() time.Time
	sem   chan struct{}

	mu      sync.Mutex
	entries map[string]*strikes // "u:<name>" and "s:<source>"
}

type strikes struct {
	fails int
	until time.Time
}

// NewGuard returns a Guard for limit (zero fields take their defaults).
func NewGuard(limit LoginLimit) *Guard {
	limit = limit.WithDefaults()
	return &Guard{limit: limit, now: time.Now, sem: make(chan struct{}, limit.Checks), entries: map[string]*strikes{}}
}

// Source returns the part of a remote address a Guard counts by: its IP
// (an address without a port is used as it is).
func Source(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// Check runs check (a password check) for user from source, unless either
// is locked; check's error is counted as a failure and returned, a locked
// refusal returns a *LockedError without running check. It waits for a
// free check slot (see LoginLimit.Checks) and gives up with ctx's error.
func (g *Guard) Check(ctx context.Context, user, source string, check func() error) error {
	return g.CheckCached(ctx, user, source, nil, check)
}

// CheckCached is Check with a fast path: if cached (a lookup of passwords
// already verified, which costs no bcrypt) reports true, the login
// succeeds without waiting for a check slot, so a flood of guesses does
// not delay users whose password is known. Locks apply first either way.
func (g *Guard) CheckCached(ctx context.Context, user, source string, cached func() bool, check func() error) error {
	if wait := g.locked(user, source); wait > 0 {
		return &LockedError{RetryAfter: wait}
	}
	if cached != nil && cached() {
		g.record(user, source, true)
		return nil
	}
	select {
	case g.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("login %q: %w", user, ctx.Err())
	}
	err := check()
	<-g.sem
	g.record(user, source, err == nil)
	return err
}

func (g *Guard) locked(user, source string) time.Duration {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	var wait time.Duration
	for _, k := range []string{"u:" + user, "s:" + source} {
		if e := g.entries[k]; e != nil && e.until.After(now) {
			wait = max(wait, e.until.Sub(now))
		}
	}
	return wait
}

func (g *Guard) record(user, source string, ok bool) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, k := range []string{"u:" + user, "s:" + source} {
		if ok {
			delete(g.entries, k)
			continue
		}
		e := g.entries[k]
		if e == nil {
			if len(g.entries) >= maxTracked {
				g.evict(now)
			}
			e = &strikes{}
			g.entries[k] = e
		}
		e.fails++
		if over := e.fails - g.limit.Burst; over > 0 {
			d := g.limit.Backoff << min(over-1, 30)
			if d <= 0 || d > g.limit.MaxBackoff {
				d = g.limit.MaxBackoff
			}
			e.until = now.Add(d)
		}
	}
}

// evict forgets every entry that is not locked; if all are, it forgets
// them all rather than grow without bound.
func (g *Guard) evict(now time.Time) {
	for k, e := range g.entries {
		if !e.until.After(now) {
			delete(g.entries, k)
		}
	}
	if len(g.entries) >= maxTracked {
		clear(g.entries)
	}
}
