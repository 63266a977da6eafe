package gateway

import (
	"net"
	"net/http"

	"github.com/ebbsync/ebb/deploy/feed"
)

// errTooManyLongPolls is answered 429: a long-poll cap is reached.
var errTooManyLongPolls = feed.ErrTooManyLongPolls

// ActiveLongPolls returns how many long-polls are being served now.
func (g *Gateway) ActiveLongPolls() int { return g.longPolls.Active() }

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
