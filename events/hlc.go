package events

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// HLC is a hybrid logical clock timestamp: a physical wall time in Unix
// milliseconds (which fits a JSON number exactly in every language) and a
// logical counter that orders events within one millisecond. The zero HLC is
// "no timestamp".
type HLC struct {
	Wall    int64  `json:"wall"`    // Unix milliseconds
	Logical uint32 `json:"logical"` // counter within Wall
}

// Compare returns -1, 0 or +1 as h is before, equal to or after o.
func (h HLC) Compare(o HLC) int {
	switch {
	case h.Wall < o.Wall:
		return -1
	case h.Wall > o.Wall:
		return 1
	case h.Logical < o.Logical:
		return -1
	case h.Logical > o.Logical:
		return 1
	}
	return 0
}

// IsZero reports whether h is the zero timestamp.
func (h HLC) IsZero() bool { return h == HLC{} }

// Time returns the physical part of h.
func (h HLC) Time() time.Time { return time.UnixMilli(h.Wall).UTC() }

// String formats h as "<wall ms>.<logical>".
func (h HLC) String() string { return fmt.Sprintf("%d.%d", h.Wall, h.Logical) }

// CompareWrites is the total order that last-writer-wins uses: by HLC, and
// for equal HLCs by client id, so two clients can never tie.
func CompareWrites(a HLC, aClient string, b HLC, bClient string) int {
	if c := a.Compare(b); c != 0 {
		return c
	}
	return strings.Compare(aClient, bClient)
}

// CheckDrift returns an error wrapping ErrClockDrift when h is more than
// maxDrift ahead of now. A maxDrift of zero or less disables the check.
func CheckDrift(h HLC, now time.Time, maxDrift time.Duration) error {
	if maxDrift <= 0 {
		return nil
	}
	limit := now.Add(maxDrift).UnixMilli()
	if h.Wall > limit {
		return fmt.Errorf("%w: timestamp %s is %s ahead of %s (limit %s)", ErrClockDrift,
			h, time.Duration(h.Wall-now.UnixMilli())*time.Millisecond, now.UTC().Format(time.RFC3339Nano), maxDrift)
	}
	return nil
}

// DefaultMaxDrift is how far in the future a timestamp may be before it is
// refused (the server's projector) or reported (Clock.Update), when no other
// bound is configured.
const DefaultMaxDrift = 5 * time.Minute

// Clock is a hybrid logical clock. Its readings never go backwards, even when
// the physical clock does, and after Update they are after every timestamp it
// has seen. It is safe for concurrent use.
type Clock struct {
	mu       sync.Mutex
	now      func() time.Time
	maxDrift time.Duration
	last     HLC
}

// NewClock returns a clock reading physical time from now (time.Now if nil)
// whose Update reports received timestamps more than maxDrift ahead of it
// (never, if maxDrift <= 0).
func NewClock(now func() time.Time, maxDrift time.Duration) *Clock {
	if now == nil {
		now = time.Now
	}
	return &Clock{now: now, maxDrift: maxDrift}
}

// Now returns a timestamp after every one this clock has returned or seen.
func (c *Clock) Now() HLC {
	c.mu.Lock()
	defer c.mu.Unlock()
	pt := c.now().UnixMilli()
	if pt > c.last.Wall {
		c.last = HLC{Wall: pt}
	} else {
		c.tick()
	}
	return c.last
}

// Update merges a timestamp received from elsewhere and returns a reading
// after both it and every earlier reading; every later reading is after it
// too. It always advances: a clock that is behind its peers must still
// stamp what it writes next after what it received, or a write built on a
// change would be ordered before that change. Bounding timestamps is the
// job of whoever accepts them as authority (the server's projector refuses
// events too far ahead, see CheckDrift). So when remote is more than the
// clock's maxDrift ahead of physical time, Update still advances and
// returns, with that reading, an error wrapping ErrClockDrift: a signal
// that this clock is slow (or the sender's fast), not a refusal.
func (c *Clock) Update(remote HLC) (HLC, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	drift := CheckDrift(remote, now, c.maxDrift)
	pt := now.UnixMilli()
	switch {
	case pt > c.last.Wall && pt > remote.Wall:
		c.last = HLC{Wall: pt}
	case remote.Compare(c.last) > 0:
		c.last = remote
		c.tick()
	default:
		c.tick()
	}
	return c.last, drift
}

// Observe raises the clock to at least h without a drift check; use it to
// restore a clock from persisted state.
func (c *Clock) Observe(h HLC) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.Compare(c.last) > 0 {
		c.last = h
	}
}

// Last returns the latest reading without advancing the clock.
func (c *Clock) Last() HLC {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// tick advances the logical counter, carrying into the wall time on overflow.
func (c *Clock) tick() {
	if c.last.Logical == ^uint32(0) {
		c.last = HLC{Wall: c.last.Wall + 1}
		return
	}
	c.last.Logical++
}
