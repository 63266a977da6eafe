package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"
)

// natsLoginTimeout bounds how long a NATS login waits for a free password
// check slot.
const natsLoginTimeout = 2 * time.Second

// NATSAuthenticator checks nats-server logins by user name and password
// behind a Guard: it is what the embedded server uses instead of
// nats-server's own user list, which answers an unknown user at once and
// a wrong password without limit. Install it as
// server.Options.CustomClientAuthentication, then call Bind with the
// server before it accepts connections.
type NATSAuthenticator struct {
	users map[string]*server.User
	dummy []byte // see Users.dummy

	mu     sync.Mutex
	known  map[string][32]byte // user -> sha256 of a password bcrypt accepted
	guard  *Guard
	lookup func(name string) (*server.Account, error)
}

var _ server.Authentication = (*NATSAuthenticator)(nil)

// NewNATSAuthenticator returns an authenticator for users (a password
// starting with "$2" is a bcrypt hash, any other a plain password) with
// limit. It fails only if a random key or a dummy hash cannot be made.
func NewNATSAuthenticator(users []*server.User, limit LoginLimit) (*NATSAuthenticator, error) {
	a := &NATSAuthenticator{users: map[string]*server.User{}, guard: NewGuard(limit), known: map[string][32]byte{}}
	var hashes []string
	for _, u := range users {
		a.users[u.Username] = u
		if isBcrypt(u.Password) {
			hashes = append(hashes, u.Password)
		}
	}
	var err error
	if a.dummy, err = dummyHash(hashes); err != nil {
		return nil, fmt.Errorf("nats authenticator: %w", err)
	}
	return a, nil
}

// Bind makes a put each user into the account of that name on ns (the
// server's own account objects, not the ones the users were built with).
func (a *NATSAuthenticator) Bind(ns *server.Server) { a.lookup = ns.LookupAccount }

func isBcrypt(pw string) bool { return strings.HasPrefix(pw, "$2") }

// Check implements server.Authentication: it accepts a client whose user
// name and password match, unless the Guard refuses the attempt.
func (a *NATSAuthenticator) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	opts := c.GetOpts()
	source := ""
	if addr := c.RemoteAddress(); addr != nil {
		source = Source(addr.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), natsLoginTimeout)
	defer cancel()
	usr := a.users[opts.Username]
	cached := func() bool { return usr != nil && isBcrypt(usr.Password) && a.cached(opts.Username, opts.Password) }
	err := a.guard.CheckCached(ctx, opts.Username, source, cached, func() error {
		usr = a.match(opts.Username, opts.Password)
		if usr == nil {
			return ErrBadCredentials
		}
		return nil
	})
	if err != nil {
		return false
	}
	reg := *usr
	if usr.Account != nil && a.lookup != nil {
		acc, err := a.lookup(usr.Account.Name)
		if err != nil {
			return false
		}
		reg.Account = acc
	}
	c.RegisterUser(&reg)
	return true
}

// match returns the user name if password is its own; a failure costs
// what Users.Authenticate's does.
func (a *NATSAuthenticator) match(name, password string) *server.User {
	u := a.users[name]
	if u == nil {
		a.payFailure(password)
		return nil
	}
	if isBcrypt(u.Password) {
		// A reconnect after a restart need not pay bcrypt again: the
		// accepted password is remembered by its SHA-256, as over HTTP.
		if a.cached(name, password) {
			return u
		}
		sum := sha256.Sum256([]byte(password))
		if bcrypt.CompareHashAndPassword([]byte(u.Password), []byte(password)) != nil {
			return nil
		}
		a.mu.Lock()
		a.known[name] = sum
		a.mu.Unlock()
		return u
	}
	if subtle.ConstantTimeCompare([]byte(u.Password), []byte(password)) != 1 {
		a.payFailure(password)
		return nil
	}
	return u
}

// cached reports whether password is the one bcrypt last accepted for name.
func (a *NATSAuthenticator) cached(name, password string) bool {
	sum := sha256.Sum256([]byte(password))
	a.mu.Lock()
	have, hit := a.known[name]
	a.mu.Unlock()
	return hit && subtle.ConstantTimeCompare(have[:], sum[:]) == 1
}

func (a *NATSAuthenticator) payFailure(password string) {
	if a.dummy != nil {
		_ = bcrypt.CompareHashAndPassword(a.dummy, []byte(password))
	}
}

// dummyHash returns a bcrypt hash of nothing at the highest cost among
// hashes (bcrypt hashes; others are skipped), or nil if there is none.
func dummyHash(hashes []string) ([]byte, error) {
	top := 0
	for _, h := range hashes {
		if c, err := bcrypt.Cost([]byte(h)); err == nil && c > top {
			top = c
		}
	}
	if top == 0 {
		return nil, nil
	}
	h, err := bcrypt.GenerateFromPassword([]byte("ebb-dummy"), top)
	if err != nil {
		return nil, fmt.Errorf("dummy hash at cost %d: %w", top, err)
	}
	return h, nil
}
