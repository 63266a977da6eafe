package jwtlogin_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin/jwtlogintest"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

type natsEnv struct {
	srv  *embedded.Server
	idp  *jwtlogintest.IdP
	logs *embeddedtest.Buffer
}

// startNATS starts an embedded server with a users file holding bob of
// tenant globex and token logins verified against idp; CHANGES holds one
// change of each tenant.
func startNATS(t *testing.T, keys ...jwtlogintest.Key) natsEnv {
	t.Helper()
	users, err := auth.Parse([]byte("users: [{name: bob, password: pw, tenant: globex, role: client}]"))
	if err != nil {
		t.Fatal(err)
	}
	idp := jwtlogintest.Start(t, keys...)
	v := mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL, MinRefresh: 20 * time.Millisecond})
	logs := &embeddedtest.Buffer{}
	login := jwtlogin.NewNATSLogin(v, users, slog.New(slog.NewTextHandler(logs, nil)))
	srv := embeddedtest.MustStart(t, func(c *embedded.Config) {
		c.Users = users.NATSUsers()
		c.TokenLogin = login
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, srv))
	for name, subj := range map[string]string{"EVENTS": "ebb.evt.>", "CHANGES": "ebb.chg.>"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, AllowDirect: true}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tenant := range []string{"acme", "globex"} {
		if _, err := js.Publish(ctx, "ebb.chg."+tenant+".todos.t1", []byte(`{"tenant":"`+tenant+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	return natsEnv{srv: srv, idp: idp, logs: logs}
}

func (e natsEnv) connect(name, token string) (*nats.Conn, error) {
	return nats.Connect(e.srv.ClientURL(), nats.Token(token), nats.CustomInboxPrefix(auth.InboxPrefix(name)),
		nats.Timeout(5*time.Second), nats.MaxReconnects(0))
}

// TestNATSLogin_TenantConfined: a valid token's client writes its tenant
// and reads its changes, and reaches nothing of another tenant.
func TestNATSLogin_TenantConfined(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	env := startNATS(t, k)
	nc, err := env.connect("alice", jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "alice", Tenant: "acme"}))
	if err != nil {
		t.Fatalf("connect with a valid token: %v", err)
	}
	defer nc.Close()
	js := embeddedtest.MustJetStream(t, nc)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	if _, err := js.Publish(ctx, "ebb.evt.acme.alice.todos.t1", []byte("{}")); err != nil {
		t.Fatalf("write to its tenant: %v", err)
	}
	c, err := js.OrderedConsumer(ctx, events.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"ebb.chg.acme.>"}})
	if err != nil {
		t.Fatalf("read its tenant's changes: %v", err)
	}
	msg, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil || !strings.Contains(string(msg.Data()), "acme") {
		t.Fatalf("its tenant's change: %v", err)
	}
	// Two collections: the filters travel in the body, through the
	// consumer create responder (issue 18 item 3).
	two, err := js.OrderedConsumer(ctx, events.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"ebb.chg.acme.todos.*", "ebb.chg.acme.lists.*"}})
	if err != nil {
		t.Fatalf("read two collections of its tenant: %v", err)
	}
	if msg, err := two.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil || !strings.Contains(string(msg.Data()), "acme") {
		t.Fatalf("its tenant's change through two filters: %v", err)
	}
	if _, err := js.OrderedConsumer(ctx, events.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"ebb.chg.acme.todos.*", "ebb.chg.globex.todos.*"}}); err == nil || !strings.Contains(err.Error(), "ebb.chg.globex.todos.*") {
		t.Fatalf("two filters, one of another tenant: %v, want refused naming it", err)
	}

	refused := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: allowed", what)
		}
	}
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, time.Second) }
	c1, cancel1 := short()
	_, err = js.Publish(c1, "ebb.evt.globex.alice.todos.t1", []byte("{}"))
	cancel1()
	refused("write to another tenant", err)
	c2, cancel2 := short()
	_, err = js.Publish(c2, "ebb.evt.acme.bob.todos.t1", []byte("{}"))
	cancel2()
	refused("write as another client", err)
	c3, cancel3 := short()
	_, err = js.OrderedConsumer(c3, events.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"ebb.chg.globex.>"}})
	cancel3()
	refused("read another tenant's changes", err)
	c4, cancel4 := short()
	_, err = nc.RequestWithContext(c4, "$JS.API.DIRECT.GET.CHANGES.ebb.chg.globex.todos.t1", nil)
	cancel4()
	refused("direct get of another tenant's change", err)
	c5, cancel5 := short()
	_, err = js.CreateStream(c5, jetstream.StreamConfig{Name: "MINE", Subjects: []string{"mine"}})
	cancel5()
	refused("create a stream", err)
}

// TestNATSLogin_BadTokens: every bad token is refused at connect, with
// its reason in the server's log.
func TestNATSLogin_BadTokens(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	env := startNATS(t, k)
	alice := jwtlogintest.Claims{Subject: "alice", Tenant: "acme"}
	with := func(f func(*jwtlogintest.Claims)) jwtlogintest.Claims { c := alice; f(&c); return c }
	tests := []struct {
		name, token string
		want        error
	}{
		{"expired", jwtlogintest.Token(t, k, with(func(c *jwtlogintest.Claims) { c.Expiry = time.Now().Add(-time.Hour) })), jwtlogin.ErrExpired},
		{"wrong issuer", jwtlogintest.Token(t, k, with(func(c *jwtlogintest.Claims) { c.Issuer = "https://evil.test" })), jwtlogin.ErrIssuer},
		{"wrong audience", jwtlogintest.Token(t, k, with(func(c *jwtlogintest.Claims) { c.Audience = []string{"x"} })), jwtlogin.ErrAudience},
		{"wrong key", jwtlogintest.Token(t, jwtlogintest.NewKey(t, "k1"), alice), jwtlogin.ErrSignature},
		{"unknown kid", jwtlogintest.Token(t, jwtlogintest.NewKey(t, "k2"), alice), jwtlogin.ErrUnknownKey},
		{"a users-file name", jwtlogintest.Token(t, k, with(func(c *jwtlogintest.Claims) { c.Subject = "bob" })), jwtlogin.ErrNameTaken},
		{"not a token", "garbage", jwtlogin.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := env.connect("alice", tt.token)
			if err == nil {
				nc.Close()
				t.Fatal("connect with a bad token succeeded")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("connect: %v, want an authorization violation", err)
			}
			want := tt.want.Error()
			embeddedtest.WaitFor(t, 5*time.Second, "the refusal's reason logged", func() bool { return strings.Contains(env.logs.String(), want) })
		})
	}
}

// TestNATSLogin_SameNameOtherTenant: a second identity cannot take over
// the account another token's user was given.
func TestNATSLogin_SameNameOtherTenant(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	env := startNATS(t, k)
	nc, err := env.connect("carol", jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "carol", Tenant: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if nc, err := env.connect("carol", jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "carol", Tenant: "acme"})); err != nil {
		t.Fatalf("second login of the same identity: %v", err)
	} else {
		nc.Close()
	}
	if nc, err := env.connect("carol", jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "carol", Tenant: "globex"})); err == nil {
		nc.Close()
		t.Fatal("carol of globex got carol of acme's account")
	}
}

// TestNATSLogin_KeyRotation: over NATS, a new key is picked up and the
// old one dropped without a restart.
func TestNATSLogin_KeyRotation(t *testing.T) {
	old, next := jwtlogintest.NewKey(t, "old"), jwtlogintest.NewKey(t, "new")
	env := startNATS(t, old)
	c := jwtlogintest.Claims{Subject: "alice", Tenant: "acme"}
	oldTok, newTok := jwtlogintest.Token(t, old, c), jwtlogintest.Token(t, next, c)
	try := func(tok string) error {
		nc, err := env.connect("alice", tok)
		if err == nil {
			nc.Close()
		}
		return err
	}
	if err := try(oldTok); err != nil {
		t.Fatalf("old token: %v", err)
	}
	env.idp.Publish(next)
	embeddedtest.WaitFor(t, 10*time.Second, "new token accepted after rotation", func() bool { return try(newTok) == nil })
	if err := try(oldTok); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("old token after its key left the set: %v, want an authorization violation", err)
	}
}

// TestNATSLogin_ExpiryDisconnects: the server closes a token's
// connection when the token expires.
func TestNATSLogin_ExpiryDisconnects(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	env := startNATS(t, k)
	nc, err := env.connect("alice", jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "alice", Tenant: "acme", Expiry: time.Now().Add(2 * time.Second)}))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	embeddedtest.WaitFor(t, 10*time.Second, "connection closed at the token's expiry", nc.IsClosed)
}

// TestNATSLogin_MaxConnections: a token's user holds at most the users
// file's max_connections at once.
func TestNATSLogin_MaxConnections(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	users, err := auth.Parse([]byte("limits: {max_connections: 2}\nusers: [{name: bob, password: pw, tenant: globex, role: client}]"))
	if err != nil {
		t.Fatal(err)
	}
	idp := jwtlogintest.Start(t, k)
	v := mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL})
	logs := &embeddedtest.Buffer{}
	srv := embeddedtest.MustStart(t, func(c *embedded.Config) {
		c.Users = users.NATSUsers()
		c.TokenLogin = jwtlogin.NewNATSLogin(v, users, slog.New(slog.NewTextHandler(logs, nil)))
	})
	env := natsEnv{srv: srv, idp: idp, logs: logs}
	tok := jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "alice", Tenant: "acme"})
	for i := range 2 {
		nc, err := env.connect("alice", tok)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		defer nc.Close()
	}
	if nc, err := env.connect("alice", tok); err == nil {
		nc.Close()
		t.Fatal("third connection accepted over max_connections 2")
	}
	if !strings.Contains(logs.String(), jwtlogin.ErrTooManyConnections.Error()) {
		t.Fatalf("refusal not logged: %s", logs.String())
	}
}

// TestNATSLogin_IdentityGroups: NATSLogin is the auth.Directory of a
// server with token logins: a users-file user as the file says, a token
// user with the groups of its newest accepted login, nobody else.
func TestNATSLogin_IdentityGroups(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	users, err := auth.Parse([]byte("users: [{name: bob, password: pw, tenant: globex, role: client, groups: [blue]}]"))
	if err != nil {
		t.Fatal(err)
	}
	idp := jwtlogintest.Start(t, k)
	login := jwtlogin.NewNATSLogin(mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL}), users, nil)
	srv := embeddedtest.MustStart(t, func(c *embedded.Config) {
		c.Users = users.NATSUsers()
		c.TokenLogin = login
		c.Identities = login
	})
	env := natsEnv{srv: srv, idp: idp}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	ajs := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, srv))
	events0, err := ajs.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"ebb.evt.>"}})
	if err != nil {
		t.Fatal(err)
	}
	var dir auth.Directory = login
	if bob, ok := dir.Identity("bob"); !ok || bob.Tenant != "globex" || len(bob.Groups) != 1 || bob.Groups[0] != "blue" {
		t.Fatalf("Identity(bob) = %+v, %v", bob, ok)
	}
	if _, ok := dir.Identity("alice"); ok {
		t.Fatal("Identity of a token user before any login")
	}
	for _, groups := range [][]any{{"red", "green"}, {"yellow"}} {
		nc, err := env.connect("alice", jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "alice", Tenant: "acme", Extra: map[string]any{"groups": groups}}))
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer nc.Close()
		alice, ok := dir.Identity("alice")
		if !ok || alice.Tenant != "acme" || alice.Role != auth.RoleClient || strings.Join(alice.Groups, ",") != strings.Join(sortedStrings(groups), ",") {
			t.Fatalf("Identity(alice) after a login with groups %v = %+v, %v", groups, alice, ok)
		}
		// The publish responder stamps the token's groups on her events.
		ack, err := embeddedtest.MustJetStream(t, nc).Publish(ctx, "ebb.evt.acme.alice.todos.t1", []byte("{}"))
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		m, err := events0.GetMsg(ctx, ack.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := m.Header.Get(events.HeaderWriterGroups), strings.Join(sortedStrings(groups), " "); got != want {
			t.Fatalf("writer groups %q, want %q", got, want)
		}
	}
	// A refused login (expired) changes nothing.
	if nc, err := env.connect("alice", jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "alice", Tenant: "acme",
		Expiry: time.Now().Add(-time.Hour), Extra: map[string]any{"groups": []any{"admins"}}})); err == nil {
		nc.Close()
		t.Fatal("an expired token logged in")
	}
	if alice, _ := dir.Identity("alice"); strings.Join(alice.Groups, ",") != "yellow" {
		t.Fatalf("groups after a refused login: %v", alice.Groups)
	}
}

func sortedStrings(in []any) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		out = append(out, s.(string))
	}
	slices.Sort(out)
	return out
}

// TestNATSLogin_FilteredReads: with users in filtered reads mode, a token
// client's account is made in that mode too: its CHANGES consumer is
// refused ("sync rules") and its request on auth.ChangesSubject arrives
// routed with its own name and tenant.
func TestNATSLogin_FilteredReads(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	users, err := auth.Parse([]byte("users: [{name: bob, password: pw, tenant: globex, role: client}]"))
	if err != nil {
		t.Fatal(err)
	}
	users = users.WithFilteredReads(true)
	idp := jwtlogintest.Start(t, k)
	login := jwtlogin.NewNATSLogin(mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL}), users, nil)
	srv := embeddedtest.MustStart(t, func(c *embedded.Config) {
		c.Users = users.NATSUsers()
		c.TokenLogin = login
		c.Identities = login
	})
	env := natsEnv{srv: srv, idp: idp}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	admin := embeddedtest.MustConnect(t, srv)
	if _, err := embeddedtest.MustJetStream(t, admin).CreateStream(ctx, jetstream.StreamConfig{Name: "CHANGES", Subjects: []string{"ebb.chg.>"}}); err != nil {
		t.Fatal(err)
	}
	sub, err := admin.Subscribe(auth.ChangesSubject+".>", func(m *nats.Msg) {
		user, tenant, err := auth.ChangesAsker(m.Subject)
		if err != nil {
			_ = m.Respond([]byte(err.Error()))
			return
		}
		id, _ := login.Identity(user)
		_ = m.Respond([]byte(user + "|" + tenant + "|" + strings.Join(id.Groups, ",")))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := admin.Flush(); err != nil {
		t.Fatal(err)
	}
	nc, err := env.connect("alice", jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "alice", Tenant: "acme", Extra: map[string]any{"groups": "red"}}))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	resp, err := nc.Request(auth.ChangesSubject, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("token client's changes request: %v", err)
	}
	if string(resp.Data) != "alice|acme|red" {
		t.Fatalf("token client's changes request answered %q, want it routed as alice of acme (groups red)", resp.Data)
	}
	_, err = embeddedtest.MustJetStream(t, nc).OrderedConsumer(ctx, "CHANGES", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"ebb.chg.acme.>"}})
	if err == nil || !strings.Contains(err.Error(), "sync rules") {
		t.Fatalf("token client's CHANGES consumer in filtered mode: %v, want refused by sync rules", err)
	}
}
