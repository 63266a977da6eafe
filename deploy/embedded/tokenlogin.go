package embedded

import (
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ebbsync/ebb/deploy/auth"
)

// TokenLogin checks the logins that present a token; see Config.TokenLogin.
type TokenLogin interface {
	server.Authentication
	// Bind hands it the server, before the server accepts connections.
	Bind(*server.Server)
}

// tokenFirst sends a login with a token to token, any other to rest. A
// token login that made a new account (auth.Link) makes the fetch
// responder subscribe again (auth.API.Resubscribe) before the connection
// is accepted: nats-server routes the account's fetch requests only to
// subscriptions made after its stream import. Such a login is refused
// while the responders are not running yet.
type tokenFirst struct {
	token server.Authentication
	rest  server.Authentication
	ns    atomic.Pointer[server.Server]
	api   atomic.Pointer[auth.API]
	// added counts the accounts token logins created; covered is the
	// count the last successful Resubscribe started after. A login waits
	// for a Resubscribe while covered < added, so an account whose first
	// login's Resubscribe failed is covered by a later login, not left
	// with its fetches unheard.
	added, covered atomic.Uint64
}

func (t *tokenFirst) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o == nil || o.Token == "" || o.Username != "" {
		return t.rest.Check(c)
	}
	ns := t.ns.Load()
	before := 0
	if ns != nil {
		before = ns.NumLoadedAccounts()
	}
	if !t.token.Check(c) {
		return false
	}
	if ns != nil && ns.NumLoadedAccounts() != before {
		t.added.Add(1)
	}
	want := t.added.Load()
	if t.covered.Load() >= want {
		return true
	}
	// Without it, the user's fetches would reach no responder; before
	// the responders run (the server is starting), the login is refused.
	api := t.api.Load()
	if api == nil || api.Resubscribe() != nil {
		return false
	}
	for {
		c := t.covered.Load()
		if c >= want || t.covered.CompareAndSwap(c, want) {
			return true
		}
	}
}
