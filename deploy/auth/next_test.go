package auth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

const nextUsers = `users:
  - {name: eve, password: eve-pw, tenant: evil, role: client}
  - {name: alice, password: alice-pw, tenant: acme, role: client}
  - {name: bob, password: bob-pw, tenant: acme, role: client}
  - {name: search, password: search-pw, tenant: acme, role: service, durables: [search-two]}
`

func nextServer(t testing.TB) (*embedded.Server, jetstream.JetStream) {
	t.Helper()
	u, err := auth.Parse([]byte(nextUsers))
	if err != nil {
		t.Fatal(err)
	}
	srv := embeddedtest.MustStart(t, embeddedtest.InProcess(), func(c *embedded.Config) { c.Users = u.NATSUsers() })
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return srv, js
}

func connectAs(t testing.TB, srv *embedded.Server, name string) *nats.Conn {
	t.Helper()
	return embeddedtest.MustConnect(t, srv, nats.UserInfo(name, name+"-pw"), nats.CustomInboxPrefix(auth.InboxPrefix(name)))
}

// rawNext sends one MSG.NEXT request on nc for consumer name of stream and
// returns the first answer (a message or a status message).
func rawNext(t *testing.T, nc *nats.Conn, user, stream, name string) (*nats.Msg, error) {
	t.Helper()
	inbox := auth.InboxPrefix(user) + "." + nats.NewInbox()[len("_INBOX."):]
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+stream+"."+name, inbox, []byte(`{"batch":1,"expires":2000000000}`)); err != nil {
		t.Fatal(err)
	}
	return sub.NextMsg(5 * time.Second)
}

// TestHostile_FetchFromAnotherTenantsDurable (the reviewer's proof of issue
// 13, rev-s2 TestRevS2_FetchFromAnotherTenantsDurable): a durable of acme
// that the users file does not list (one alice made; token users list
// none) must not be readable by eve of tenant evil, who knows its name.
// The refusal is a status message eve can see, not silence.
func TestHostile_FetchFromAnotherTenantsDurable(t *testing.T) {
	srv, js := nextServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, events.ChangeSubject("acme", "notes", "n1"), []byte(`{"secret":"acme's"}`)); err != nil {
		t.Fatal(err)
	}
	ajs := embeddedtest.MustJetStream(t, connectAs(t, srv, "alice"))
	c, err := ajs.CreateOrUpdateConsumer(ctx, events.StreamChanges, jetstream.ConsumerConfig{
		Durable: "acme-search", FilterSubject: events.TenantChanges("acme"), AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		t.Fatalf("alice makes a durable of her tenant: %v", err)
	}
	m, err := rawNext(t, connectAs(t, srv, "eve"), "eve", events.StreamChanges, "acme-search")
	if err != nil {
		t.Fatalf("eve's fetch from acme's durable: no answer (%v), want a refusal she can see", err)
	}
	if strings.Contains(string(m.Data), "acme's") {
		t.Fatalf("eve (tenant evil) fetched acme's change %s from acme's durable: %s", m.Subject, m.Data)
	}
	if m.Header.Get("Status") != "403" || !strings.Contains(m.Header.Get("Description"), "acme-search") {
		t.Fatalf("eve's fetch answered with status %q %q, data %q; want a 403 naming the consumer",
			m.Header.Get("Status"), m.Header.Get("Description"), m.Data)
	}
	// bob, of alice's tenant, may read acme's changes but not take alice's
	// durable's messages.
	if m, err := rawNext(t, connectAs(t, srv, "bob"), "bob", events.StreamChanges, "acme-search"); err != nil || m.Header.Get("Status") != "403" {
		t.Fatalf("bob's fetch from alice's durable: %v %v, want a 403", m, err)
	}
	// alice herself still fetches through the responder, with the
	// streamed answer and the jetstream client unchanged.
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for msg := range batch.Messages() {
		got = append(got, string(msg.Data()))
	}
	if batch.Error() != nil || len(got) != 1 || !strings.Contains(got[0], "acme's") {
		t.Fatalf("alice's fetch from her durable: %q, %v", got, batch.Error())
	}
}

// TestHostile_FetchForeignReceiptsAndUnknownConsumers: eve cannot fetch
// from alice's receipt consumer either; a name nobody has is answered as
// a deleted consumer (so an owner's client resets), never forwarded; an
// ordered consumer of one's own scope still works.
func TestHostile_FetchForeignReceiptsAndUnknownConsumers(t *testing.T) {
	srv, js := nextServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, events.ReceiptSubject("acme", "alice"), []byte(`{"secret":"alice's receipt"}`)); err != nil {
		t.Fatal(err)
	}
	ajs := embeddedtest.MustJetStream(t, connectAs(t, srv, "alice"))
	if _, err := ajs.CreateOrUpdateConsumer(ctx, events.StreamReceipts, jetstream.ConsumerConfig{
		Durable: "alice-rcpt", FilterSubject: events.ReceiptSubject("acme", "alice"), AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatalf("alice makes a receipts durable: %v", err)
	}
	eve := connectAs(t, srv, "eve")
	m, err := rawNext(t, eve, "eve", events.StreamReceipts, "alice-rcpt")
	if err != nil || strings.Contains(string(m.Data), "alice's") || m.Header.Get("Status") != "403" {
		t.Fatalf("eve's fetch from alice's receipts consumer: %v %v, want a 403", m, err)
	}
	// An admin's consumer (no owner) whose filter is outside eve's scope.
	if _, err := js.CreateOrUpdateConsumer(ctx, events.StreamChanges, jetstream.ConsumerConfig{
		Durable: "ops-all", AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatal(err)
	}
	if m, err := rawNext(t, eve, "eve", events.StreamChanges, "ops-all"); err != nil || m.Header.Get("Status") != "403" {
		t.Fatalf("eve's fetch from an admin's whole-stream consumer: %v %v, want a 403", m, err)
	}
	ejs := embeddedtest.MustJetStream(t, eve)
	for _, name := range []string{"acme-search", "alice-rcpt", "ops-all"} {
		stream := events.StreamChanges
		if name == "alice-rcpt" {
			stream = events.StreamReceipts
		}
		short, stop := context.WithTimeout(ctx, time.Second)
		_, err := ejs.Consumer(short, stream, name)
		stop()
		if err == nil {
			t.Fatalf("eve reads the info of %s", name)
		}
	}
	m, err = rawNext(t, eve, "eve", events.StreamChanges, "no-such-consumer")
	if err != nil || m.Header.Get("Status") != "409" || !strings.Contains(strings.ToLower(m.Header.Get("Description")), "consumer deleted") {
		t.Fatalf("fetch from an unknown consumer: %v %v, want 409 Consumer Deleted", m, err)
	}
	// eve's own ordered consumer (ephemeral, made through the consumer
	// create responder) still reads her tenant's changes.
	pc, err := ejs.OrderedConsumer(ctx, events.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.TenantChanges("evil")}})
	if err != nil {
		t.Fatalf("eve's ordered consumer on her own tenant: %v", err)
	}
	if _, err := js.Publish(ctx, events.ChangeSubject("evil", "notes", "e1"), []byte(`{"own":"eve's"}`)); err != nil {
		t.Fatal(err)
	}
	msg, err := pc.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil || !strings.Contains(string(msg.Data()), "eve's") {
		t.Fatalf("eve's ordered consumer on her own tenant: %v", err)
	}
}
