package jwtlogin_test

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin/jwtlogintest"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
)

// The limits of TestNATSLogin_TokenAccountLimits' users file.
const (
	testMaxSubs    = 8
	testMaxPayload = 4096
)

// TestNATSLogin_TokenAccountLimits: a token user's account, made at run
// time, has the users file's max_subscriptions and max_payload, as the
// account of a users-file user (bob) has from the generated
// configuration: one subscription more than the limit is refused with
// nats.ErrMaxSubscriptionsExceeded, and a message over max_payload is
// refused ("maximum payload violation") and closes the connection, for
// both; and both accounts have the same service imports.
func TestNATSLogin_TokenAccountLimits(t *testing.T) {
	users, err := auth.Parse([]byte(`limits: {max_subscriptions: 8, max_payload: 4096}
users: [{name: bob, password: pw, tenant: globex, role: client}]`))
	if err != nil {
		t.Fatal(err)
	}
	k := jwtlogintest.NewKey(t, "k1")
	idp := jwtlogintest.Start(t, k)
	v := mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL, MinRefresh: 20 * time.Millisecond})
	login := jwtlogin.NewNATSLogin(v, users, slog.New(slog.DiscardHandler))
	srv := embeddedtest.MustStart(t, func(c *embedded.Config) {
		c.Users = users.NATSUsers()
		c.TokenLogin = login
	})
	token := jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "alice", Tenant: "acme"})

	for _, who := range []struct {
		name, user string
		login      nats.Option
	}{
		{"users-file user", "bob", nats.UserInfo("bob", "pw")},
		{"token user", "alice", nats.Token(token)},
	} {
		inbox := auth.InboxPrefix(who.user)
		// connect returns a connection of who, the errors the server sent
		// it, and a channel closed when the connection is.
		connect := func(t *testing.T) (*nats.Conn, <-chan error, <-chan struct{}) {
			t.Helper()
			errs := make(chan error, 16)
			closed := make(chan struct{})
			nc, err := nats.Connect(srv.ClientURL(), who.login, nats.CustomInboxPrefix(inbox), nats.Timeout(5*time.Second), nats.MaxReconnects(0),
				nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
					select {
					case errs <- err:
					default:
					}
				}),
				nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			t.Cleanup(nc.Close)
			return nc, errs, closed
		}
		t.Run(who.name+"/max_subscriptions", func(t *testing.T) {
			nc, errs, _ := connect(t)
			for i := range testMaxSubs {
				if _, err := nc.SubscribeSync(fmt.Sprintf("%s.s%d", inbox, i)); err != nil {
					t.Fatalf("subscription %d of %d: %v", i+1, testMaxSubs, err)
				}
			}
			if err := nc.Flush(); err != nil {
				t.Fatalf("flush %d subscriptions: %v", testMaxSubs, err)
			}
			select {
			case err := <-errs:
				t.Fatalf("%d subscriptions, within the limit: %v", testMaxSubs, err)
			default:
			}
			if _, err := nc.SubscribeSync(inbox + ".over"); err != nil {
				t.Fatalf("subscribe once more: %v", err)
			}
			_ = nc.Flush()
			select {
			case err := <-errs:
				if !errors.Is(err, nats.ErrMaxSubscriptionsExceeded) {
					t.Fatalf("subscription %d: %v, want nats.ErrMaxSubscriptionsExceeded", testMaxSubs+1, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("subscription %d of a limit of %d: not refused", testMaxSubs+1, testMaxSubs)
			}
		})
		t.Run(who.name+"/max_payload", func(t *testing.T) {
			nc, _, closed := connect(t)
			if err := nc.Publish(inbox+".fits", make([]byte, testMaxPayload)); err != nil {
				t.Fatalf("publish max_payload bytes: %v", err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatalf("flush a message of max_payload bytes: %v", err)
			}
			err := nc.Publish(inbox+".big", make([]byte, testMaxPayload+1))
			if errors.Is(err, nats.ErrMaxPayload) {
				return // refused by the client, from the server's INFO
			}
			if err != nil {
				t.Fatalf("publish over max_payload: %v", err)
			}
			_ = nc.Flush()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatalf("a message of %d bytes, over max_payload %d: connection not closed", testMaxPayload+1, testMaxPayload)
			}
			if le := nc.LastError(); le == nil || !strings.Contains(strings.ToLower(le.Error()), "maximum payload") {
				t.Fatalf("closed after a message over max_payload with %v, want maximum payload violation", le)
			}
		})
	}
	// The claims that carry the limits carry the same imports as the
	// configured account's: none more (such as nats-server's own
	// JetStream API import, which an account without $JS.API.INFO gets).
	var n [2]int
	for i, name := range []string{"bob", "alice"} {
		acc, err := srv.NATS().LookupAccount(auth.AccountOf(auth.User{Name: name, Role: auth.RoleClient}))
		if err != nil {
			t.Fatal(err)
		}
		n[i] = acc.NumServiceImports()
	}
	if n[0] != n[1] {
		t.Fatalf("service imports: users-file account %d, token account %d", n[0], n[1])
	}
}
