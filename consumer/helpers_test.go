package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// fastSync relaxes fsync for tests; durability of the server is not what
// these tests check.
func fastSync(c *embedded.Config) { c.Sync.Interval = time.Minute }

// mustServer starts an embedded server with the ebb streams and returns it
// with a connection and a JetStream context.
func mustServer(tb testing.TB) (*embedded.Server, *nats.Conn, jetstream.JetStream) {
	tb.Helper()
	s := embeddedtest.MustStart(tb, fastSync)
	nc := embeddedtest.MustConnect(tb, s, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	js := embeddedtest.MustJetStream(tb, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		tb.Fatalf("ensure streams: %v", err)
	}
	return s, nc, js
}

// waitFor waits on a condition with a deadline.
var waitFor = embeddedtest.WaitFor

// testChange builds a change of doc at version v with one field n.
func testChange(tenant, collection, doc string, v uint64, n int) *events.Change {
	return &events.Change{
		Schema: events.SchemaVersion, Tenant: tenant, Collection: collection, Doc: doc,
		Version: v, Fields: events.Fields{"n": json.RawMessage(fmt.Sprint(n))},
		HLC: events.HLC{Wall: 1_700_000_000_000 + int64(v), Logical: 0}, Event: "", Client: "server", Seq: v,
	}
}

// publishChange publishes ch to CHANGES as the projector would.
func publishChange(tb testing.TB, js jetstream.Publisher, ch *events.Change) uint64 {
	tb.Helper()
	b, err := events.EncodeChange(ch)
	if err != nil {
		tb.Fatal(err)
	}
	ack, err := js.Publish(tb.Context(), events.ChangeSubject(ch.Tenant, ch.Collection, ch.Doc), b)
	if err != nil {
		tb.Fatalf("publish change: %v", err)
	}
	return ack.Sequence
}

// restartServer shuts s down and starts it again on the same storage and port.
func restartServer(tb testing.TB, s *embedded.Server) *embedded.Server {
	tb.Helper()
	return embeddedtest.MustRestart(tb, s)
}

// publishChangeRetry publishes ch, retrying while the connection recovers.
func publishChangeRetry(tb testing.TB, js jetstream.Publisher, ch *events.Change) {
	tb.Helper()
	b, err := events.EncodeChange(ch)
	if err != nil {
		tb.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(tb.Context(), time.Second)
		_, err := js.Publish(ctx, events.ChangeSubject(ch.Tenant, ch.Collection, ch.Doc), b)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("publish change: %v", err)
		}
	}
}
