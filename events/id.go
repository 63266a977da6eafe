package events

import (
	"crypto/rand"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

// IDSource hands out ULIDs that strictly increase for one client, even when
// its physical clock goes backwards or many ids fall in one millisecond. It
// is safe for concurrent use.
type IDSource struct {
	mu      sync.Mutex
	now     func() time.Time
	entropy io.Reader
	last    ulid.ULID
}

// NewIDSource returns an IDSource reading time from now (time.Now if nil).
func NewIDSource(now func() time.Time) *IDSource {
	if now == nil {
		now = time.Now
	}
	return &IDSource{now: now, entropy: ulid.Monotonic(rand.Reader, 0)}
}

// Restore makes every later id greater than last; use it after a restart with
// the last id the client persisted.
func (s *IDSource) Restore(last ulid.ULID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if last.Compare(s.last) > 0 {
		s.last = last
	}
}

// New returns the next id.
func (s *IDSource) New() ulid.ULID {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := max(ulid.Timestamp(s.now()), s.last.Time())
	for {
		id, err := ulid.New(ms, s.entropy)
		if err == nil && id.Compare(s.last) > 0 {
			s.last = id
			return id
		}
		// Entropy overflowed within ms, or the clock went backwards past an
		// id we restored: move to the next millisecond.
		ms++
	}
}

// ParseID parses a canonical (26 character, upper-case Crockford base32) ULID.
func ParseID(s string) (ulid.ULID, error) {
	id, err := ulid.ParseStrict(s)
	if err != nil {
		return ulid.ULID{}, fmt.Errorf("parse id %q: %w", s, err)
	}
	if id.String() != s {
		return ulid.ULID{}, fmt.Errorf("parse id %q: not canonical upper-case form", s)
	}
	return id, nil
}
