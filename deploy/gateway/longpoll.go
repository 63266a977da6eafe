package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
)

// errTooManyLongPolls is answered 429: a long-poll cap is reached.
var errTooManyLongPolls = errors.New("too many long-polls")

// slots counts long-polls in flight, in total and per user, under caps.
type slots struct {
	mu      sync.Mutex
	max     int
	perUser int
	total   int
	users   map[string]int
}

func newSlots(max, perUser int) *slots {
	return &slots{max: max, perUser: perUser, users: map[string]int{}}
}

// acquire takes a slot for user, or fails with errTooManyLongPolls. The
// returned release must be called once the long-poll ends.
func (s *slots) acquire(user string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.users[user] >= s.perUser:
		return nil, fmt.Errorf("%w: %d at once for %s; retry when one ends, or pull without wait", errTooManyLongPolls, s.perUser, user)
	case s.total >= s.max:
		return nil, fmt.Errorf("%w: the server serves %d at once; retry shortly", errTooManyLongPolls, s.max)
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

func (s *slots) active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// ActiveLongPolls returns how many long-polls are being served now.
func (g *Gateway) ActiveLongPolls() int { return g.longPolls.active() }

// longPollUser is who a long-poll counts against: the authenticated user,
// or without authentication the remote address.
func longPollUser(r *http.Request) string {
	if u, ok := userOf(r.Context()); ok {
		return "user " + u.Name
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "address " + host
}
