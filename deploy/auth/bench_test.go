package auth_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// BenchmarkAuthenticate is the price of the HTTP gateway's credential check
// per request.
func BenchmarkAuthenticate(b *testing.B) {
	u, err := auth.Parse([]byte(`users:
  - {name: plain, password: pw, tenant: acme, role: client}
  - {name: hashed, password_hash: "$2a$10$EvPDW2uN0tGENNJD5Ck4kOheLa7Ss69JhzWwiV8SC.roIY2adOoMa", tenant: acme, role: client}
`))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, user, pw string }{
		{"plain", "plain", "pw"},
		{"bcrypt-cached", "hashed", "alice-secret"},
		{"bcrypt-wrong", "hashed", "nope"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				_, _ = u.Authenticate(bc.user, bc.pw)
			}
		})
	}
}

// BenchmarkFetch is the price of one fetch (MSG.NEXT, answered "no
// messages" at once) from a user's own durable: "direct" is an admin
// fetching from JetStream in its own account, "responder" a client
// through its account's fetch route and the fetch responder's owner
// check (one CONSUMER.INFO per fetch).
func BenchmarkFetch(b *testing.B) {
	srv, _ := nextServer(b)
	ctx := context.Background()
	alice := connectAs(b, srv, "alice")
	if _, err := embeddedtest.MustJetStream(b, alice).CreateOrUpdateConsumer(ctx, events.StreamChanges, jetstream.ConsumerConfig{
		Durable: "alice-bench", FilterSubject: events.TenantChanges("acme"), AckPolicy: jetstream.AckNonePolicy}); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		nc   *nats.Conn
		user string
	}{
		{"direct", embeddedtest.MustConnect(b, srv), ""},
		{"responder", alice, "alice"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			inbox := nats.NewInbox()
			if bc.user != "" {
				inbox = auth.InboxPrefix(bc.user) + "." + nats.NewInbox()[len("_INBOX."):]
			}
			sub, err := bc.nc.SubscribeSync(inbox)
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Unsubscribe()
			for b.Loop() {
				if err := bc.nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.CHANGES.alice-bench", inbox, []byte(`{"batch":1,"no_wait":true}`)); err != nil {
					b.Fatal(err)
				}
				m, err := sub.NextMsg(5 * time.Second)
				if err != nil || m.Header.Get("Status") != "404" {
					b.Fatalf("fetch: %v %v", m, err)
				}
			}
		})
	}
}
