package auth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// TestHostile_ConsumerTakeoverByUpdate: JetStream's consumer create is
// "create or update", and the responder made the asker the owner of
// whatever it updated, so the fetch responder's owner check admitted a
// stranger: eve (tenant evil) updated alice's CHANGES durable to her own
// filter, parked a pull on it, and got acme's changes once alice's client
// re-created it; bob did the same to alice's RECEIPTS consumer, and
// alice's own fetches were refused meanwhile. Found by review. An update
// of a consumer another user made is now refused, and the consumer keeps
// its owner and filter; its owner still updates and reads it.
func TestHostile_ConsumerTakeoverByUpdate(t *testing.T) {
	srv, js := nextServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := connectAs(t, srv, "alice")
	ajs := embeddedtest.MustJetStream(t, alice)
	cases := []struct {
		name, stream, thief string
		own, theirs         string // the owner's filter and the thief's
	}{
		{"another tenant's durable", events.StreamChanges, "eve", events.TenantChanges("acme"), events.TenantChanges("evil")},
		{"another user's receipts", events.StreamReceipts, "bob", events.ReceiptSubject("acme", "alice"), events.ReceiptSubject("acme", "bob")},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := []string{"acme-search", "alice-rcpt"}[i]
			cfg := jetstream.ConsumerConfig{Durable: name, FilterSubject: tc.own, AckPolicy: jetstream.AckExplicitPolicy}
			if _, err := ajs.CreateOrUpdateConsumer(ctx, tc.stream, cfg); err != nil {
				t.Fatal(err)
			}
			tjs := embeddedtest.MustJetStream(t, connectAs(t, srv, tc.thief))
			_, err := tjs.CreateOrUpdateConsumer(ctx, tc.stream, jetstream.ConsumerConfig{Durable: name, FilterSubject: tc.theirs, AckPolicy: jetstream.AckExplicitPolicy})
			if err == nil || !strings.Contains(err.Error(), "belongs to another user") {
				t.Fatalf("%s's update of alice's consumer %s: %v, want refused as another user's", tc.thief, name, err)
			}
			c, err := js.Consumer(ctx, tc.stream, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.CachedInfo().Config; got.Metadata[auth.OwnerMetadata] != "alice" || got.FilterSubject != tc.own {
				t.Fatalf("after the refused update: owner %q filter %q, want alice and %s", got.Metadata[auth.OwnerMetadata], got.FilterSubject, tc.own)
			}
			if _, err := ajs.CreateOrUpdateConsumer(ctx, tc.stream, cfg); err != nil {
				t.Fatalf("alice updates her own consumer: %v", err)
			}
			subject := tc.own // a receipt subject
			if strings.HasSuffix(tc.own, ".>") {
				subject = strings.TrimSuffix(tc.own, ".>") + ".notes.n1" // a change
			}
			if _, err := js.Publish(ctx, subject, []byte(`{"secret":"alice's"}`)); err != nil {
				t.Fatal(err)
			}
			m, err := rawNext(t, alice, "alice", tc.stream, name)
			if err != nil || !strings.Contains(string(m.Data), "alice's") {
				t.Fatalf("alice's fetch from her consumer: %v %v", m, err)
			}
		})
	}
}
