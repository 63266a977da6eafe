package auth_test

import (
	"context"
	"log/slog"
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

// TestHostile_FetchFromATokenUsersDurable: a token user (which lists no
// durables) makes a durable; eve, a users-file client of another tenant,
// and a token user of another tenant cannot fetch from it; its maker can,
// on an account linked while the server runs.
func TestHostile_FetchFromATokenUsersDurable(t *testing.T) {
	users, err := auth.Parse([]byte(nextUsers))
	if err != nil {
		t.Fatal(err)
	}
	k := jwtlogintest.NewKey(t, "k1")
	idp := jwtlogintest.Start(t, k)
	v, err := jwtlogin.New(context.Background(), jwtlogin.Config{JWKSURL: idp.URL, Issuer: jwtlogintest.Issuer, Audience: jwtlogintest.Audience})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	srv := embeddedtest.MustStart(t, func(c *embedded.Config) {
		c.Users = users.NATSUsers()
		c.TokenLogin = jwtlogin.NewNATSLogin(v, users, slog.New(slog.DiscardHandler))
	})
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, events.ChangeSubject("acme", "notes", "n1"), []byte(`{"secret":"acme's"}`)); err != nil {
		t.Fatal(err)
	}
	token := func(name, tenant string) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(srv.ClientURL(), nats.Token(jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: name, Tenant: tenant})),
			nats.CustomInboxPrefix(auth.InboxPrefix(name)), nats.MaxReconnects(0))
		if err != nil {
			t.Fatalf("token login of %s: %v", name, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	carol := token("carol", "acme")
	c, err := embeddedtest.MustJetStream(t, carol).CreateOrUpdateConsumer(ctx, events.StreamChanges, jetstream.ConsumerConfig{
		Durable: "carol-search", FilterSubject: events.TenantChanges("acme"), AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		t.Fatalf("carol (token) makes a durable: %v", err)
	}
	for name, nc := range map[string]*nats.Conn{"eve": connectAs(t, srv, "eve"), "mallory": token("mallory", "evil")} {
		m, err := rawNext(t, nc, name, events.StreamChanges, "carol-search")
		if err != nil || strings.Contains(string(m.Data), "acme's") || m.Header.Get("Status") != "403" {
			t.Fatalf("%s's fetch from carol's durable: %v %v, want a 403", name, m, err)
		}
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for msg := range batch.Messages() {
		got = append(got, string(msg.Data()))
	}
	if batch.Error() != nil || len(got) != 1 || !strings.Contains(got[0], "acme's") {
		t.Fatalf("carol's fetch from her durable: %q, %v", got, batch.Error())
	}
}
