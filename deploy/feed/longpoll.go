package feed

import (
	"errors"
	"fmt"
	"sync"
)

// ErrTooManyLongPolls is returned when a long-poll cap is reached (HTTP
// 429, status 429 from the responder).
var ErrTooManyLongPolls = errors.New("too many long-polls")

// LongPolls counts long-polls in flight, in total and per user, under caps.
// The gateway and the responder each bound theirs with one.
type LongPolls struct {
	mu      sync.Mutex
	max     int
	perUser int
	total   int
	users   map[string]int
}

// NewLongPolls returns caps of max long-polls in all and perUser for one
// user.
func NewLongPolls(max, perUser int) *LongPolls {
	return &LongPolls{max: max, perUser: perUser, users: map[string]int{}}
}

// Acquire takes a slot for user, or fails with ErrTooManyLongPolls. The
// returned release must be called once the long-poll ends; calling it
// again does nothing.
func (s *LongPolls) Acquire(user string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.users[user] >= s.perUser:
		return nil, fmt.Errorf("%w: %d at once for %s; retry when one ends, or pull without wait", ErrTooManyLongPolls, s.perUser, user)
	case s.total >= s.max:
		return nil, fmt.Errorf("%w: the server serves %d at once; retry shortly", ErrTooManyLongPolls, s.max)
	}
	s.total++
	s.users[user]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.total--
			if s.users[user]--; s.users[user] == 0 {
				delete(s.users, user)
			}
		})
	}, nil
}

// Active returns how many long-polls are in flight.
func (s *LongPolls) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}
