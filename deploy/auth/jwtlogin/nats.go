package jwtlogin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ebbsync/ebb/deploy/auth"
)

// ErrNameTaken means a token names a user the users file lists, or one a
// token of another tenant or role already logged in as on this server:
// the account of that name is not this identity's.
var ErrNameTaken = errors.New("user name taken")

// CheckName refuses a token's user name that users (nil: none) lists: a
// token never acts as a users-file user. Every path that accepts tokens
// (NATS, HTTP) calls it.
func CheckName(users *auth.Users, name string) error {
	if users == nil {
		return nil
	}
	if _, listed := users.Lookup(name); listed {
		return fmt.Errorf("%w: %q is in the users file", ErrNameTaken, name)
	}
	return nil
}

// ErrTooManyConnections means a token's user already holds the users
// file's max_connections NATS connections.
var ErrTooManyConnections = errors.New("too many connections")

// natsVerifyTimeout bounds a NATS login's token check (a JWKS refresh at
// most).
const natsVerifyTimeout = 5 * time.Second

// NATSLogin checks NATS logins that present a login token (nats.Token)
// on the embedded server (embedded.Config.TokenLogin). It gives the
// token's user exactly what a users-file user of that name, tenant and
// role gets: an account of its own, auth.AccountOf, importing from
// auth.StreamAccount the subjects auth.Imports lists (with the fetch
// routes: auth.Link), and the permissions
// auth.Users.PermissionsOf returns. The account is made on the server at
// the user's first login and kept until the server stops. The connection
// is closed by the server when the token expires. The account has the
// users file's limits (auth.Limits: max_connections, max_subscriptions,
// max_payload; their defaults without a users file), set by auth.Link as
// a users-file user's account has them from the configuration;
// max_connections is also counted at login (a login over it is refused,
// ErrTooManyConnections in the log).
//
// A refused token is answered with nats-server's "Authorization
// Violation" (the protocol has no other error for a failed login); the
// reason (expired, wrong issuer, ...) is logged.
type NATSLogin struct {
	v     *Verifier
	users *auth.Users
	log   *slog.Logger
	ns    atomic.Pointer[server.Server]

	mu     sync.Mutex
	placed map[string]auth.User // account name -> the identity it was made for
	latest map[string]auth.User // user name -> the identity of its last accepted login
}

var _ auth.Directory = (*NATSLogin)(nil)

// NewNATSLogin returns a NATSLogin verifying with v; users are the users
// file's (their names are refused to tokens, their durables denied to
// token users); log receives refusals (nil discards them).
func NewNATSLogin(v *Verifier, users *auth.Users, log *slog.Logger) *NATSLogin {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &NATSLogin{v: v, users: users, log: log, placed: map[string]auth.User{}, latest: map[string]auth.User{}}
}

// FilteredReads reports whether n links token users' accounts and sets
// their permissions in filtered reads mode: true only when n was made from
// Users in that mode (auth.Users.WithFilteredReads(true)); from other
// Users, or none, token users read CHANGES directly. Sync rules need true
// (deploy/server refuses Rules with a TokenLogin reporting false).
func (n *NATSLogin) FilteredReads() bool { return n.users != nil && n.users.FilteredReads() }

// Bind gives n the server whose accounts it makes; before it, every
// token is refused.
func (n *NATSLogin) Bind(ns *server.Server) { n.ns.Store(ns) }

// Check implements server.Authentication for a client presenting a token.
func (n *NATSLogin) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	source := ""
	if a := c.RemoteAddress(); a != nil {
		source = a.String()
	}
	usr, id, err := n.login(c.GetOpts().Token)
	if err != nil {
		n.log.Warn("nats token login refused", "source", source, "err", err)
		return false
	}
	// The users file's max_connections, counted here: the account was made
	// at run time, without the limits a configured account carries.
	n.mu.Lock()
	defer n.mu.Unlock()
	if limit := n.maxConnections(); limit > 0 && usr.Account.NumLocalConnections() >= limit {
		n.log.Warn("nats token login refused", "source", source, "user", usr.Username,
			"err", fmt.Errorf("%w: %d connections", ErrTooManyConnections, limit))
		return false
	}
	c.RegisterUser(usr)
	n.latest[id.Name] = id
	return true
}

// Identity implements auth.Directory: the users file's user called name
// if it lists one, else the identity (tenant, role, groups) of the last
// login this NATSLogin accepted for a token of name, false if there was
// none since the server started. So a token user's groups are those of
// its newest login: a connection still open with an older token acts
// with the newer token's groups, and a token whose groups were cut acts
// with its old ones until a newer login or its expiry.
func (n *NATSLogin) Identity(name string) (auth.User, bool) {
	if n.users != nil {
		if usr, ok := n.users.Lookup(name); ok {
			return usr, true
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	usr, ok := n.latest[name]
	usr.Groups = slices.Clone(usr.Groups)
	return usr, ok
}

func (n *NATSLogin) maxConnections() int {
	if n.users == nil {
		return auth.DefaultMaxConnections
	}
	return n.users.Limits().MaxConnections
}

// Login verifies token and returns the nats-server user to register: in
// its account (made now if it is the first login of that user) with its
// permissions, until the token's expiry.
func (n *NATSLogin) Login(token string) (*server.User, error) {
	u, _, err := n.login(token)
	return u, err
}

func (n *NATSLogin) login(token string) (*server.User, auth.User, error) {
	ns := n.ns.Load()
	if ns == nil {
		return nil, auth.User{}, errors.New("token login: not bound to a server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), natsVerifyTimeout)
	defer cancel()
	id, err := n.v.Verify(ctx, token)
	if err != nil {
		return nil, auth.User{}, err
	}
	usr := id.User
	if err := CheckName(n.users, usr.Name); err != nil {
		return nil, auth.User{}, err
	}
	acc, err := n.account(ns, usr)
	if err != nil {
		return nil, auth.User{}, err
	}
	var p auth.Permissions
	if n.users != nil {
		p = n.users.PermissionsOf(usr)
	} else {
		p = usr.Permissions()
	}
	return &server.User{
		Username:           usr.Name,
		Account:            acc,
		Permissions:        natsPermissions(p),
		ConnectionDeadline: id.Expiry,
	}, usr, nil
}

// account returns usr's account on ns, made with its imports the first
// time.
func (n *NATSLogin) account(ns *server.Server, usr auth.User) (*server.Account, error) {
	name := auth.AccountOf(usr)
	n.mu.Lock()
	defer n.mu.Unlock()
	if had, ok := n.placed[name]; ok {
		if had.Tenant != usr.Tenant || had.Role != usr.Role {
			return nil, fmt.Errorf("%w: %q logged in before as %s of tenant %q", ErrNameTaken, usr.Name, had.Role, had.Tenant)
		}
		return ns.LookupAccount(name)
	}
	stream, err := ns.LookupAccount(auth.StreamAccount)
	if err != nil {
		return nil, fmt.Errorf("token login %q: stream account: %w", usr.Name, err)
	}
	acc, isNew := ns.LookupOrRegisterAccount(name)
	if !isNew {
		// Not one this login made: the users file's, or the server's.
		return nil, fmt.Errorf("%w: account %s exists", ErrNameTaken, name)
	}
	link := func(stream, acc *server.Account, usr auth.User) error {
		return auth.Link(ns, stream, acc, usr, auth.Limits{})
	}
	if n.users != nil {
		link = func(stream, acc *server.Account, usr auth.User) error {
			return n.users.Link(ns, stream, acc, usr) // in the users' filtered reads mode, with their limits
		}
	}
	if err := link(stream, acc, usr); err != nil {
		return nil, fmt.Errorf("token login %q: %w", usr.Name, err)
	}
	n.placed[name] = usr
	return acc, nil
}

func natsPermissions(p auth.Permissions) *server.Permissions {
	if p.All() {
		return nil
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: p.Publish, Deny: p.DenyPublish},
		Subscribe: &server.SubjectPermission{Allow: p.Subscribe},
	}
}
