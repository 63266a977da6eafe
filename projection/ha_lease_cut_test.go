package projection

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// TestLeasedJS_NoPublishBufferedWhileCutOff: a holder cut off from NATS
// (a connection that reconnects forever buffers publishes meanwhile)
// passed leasedJS's clock check while its lease was valid; the publish
// sat in the reconnect buffer, the lease ran out, a new holder published
// the document's next version, and when the old holder's link came back
// its buffered older version was stored last: CHANGES (one message per
// subject) kept the older state. Found by review; a publish is now refused
// while the connection is down.
func TestLeasedJS_NoPublishBufferedWhileCutOff(t *testing.T) {
	srv := embeddedtest.MustStart(t)
	cfg := srv.Config()
	ncA := embeddedtest.MustConnect(t, srv, nats.MaxReconnects(-1), nats.ReconnectWait(2*time.Second))
	jsA := embeddedtest.MustJetStream(t, ncA)
	if err := events.EnsureStreams(t.Context(), jsA, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	ch := func(v uint64) *nats.Msg {
		c := &events.Change{Schema: events.SchemaVersion, Tenant: "acme", Collection: "c", Doc: "d", Version: v,
			Fields: events.Fields{"n": []byte("1")}, Client: "x", Seq: v}
		b, err := events.EncodeChange(c)
		if err != nil {
			t.Fatal(err)
		}
		return &nats.Msg{Subject: events.ChangeSubject("acme", "c", "d"), Data: b}
	}
	lease := &leasedJS{GroupJetStream: jsA}
	valid := time.Now().Add(500 * time.Millisecond)
	lease.until(valid)

	// The old holder's link is cut.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	embeddedtest.WaitFor(t, 5*time.Second, "A disconnected", func() bool { return !ncA.IsConnected() })
	// A round of the projector: the lease is valid, the publish is let through.
	// A round of the projector while the lease is valid but the link is
	// down: nothing may wait in nats.go's reconnect buffer.
	if _, err := lease.PublishMsgAsync(ch(5), jetstream.WithMsgID("chg-v5")); err == nil {
		t.Fatal("publish while cut off was let through: it waits in the reconnect buffer")
	}
	lease.until(time.Now()) // the lease runs out
	if _, err := lease.PublishMsgAsync(ch(5), jetstream.WithMsgID("chg-v5")); !errors.Is(err, ErrFenced) {
		t.Fatalf("publish after the lease ran out: %v, want ErrFenced", err)
	}
	// The server is back; the new holder (its own link) publishes version 6.
	srv2, err := embedded.Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv2.Shutdown(context.Background()) })
	ncB := embeddedtest.MustConnect(t, srv2)
	jsB := embeddedtest.MustJetStream(t, ncB)
	if _, err := jsB.PublishMsg(t.Context(), ch(6), jetstream.WithMsgID("chg-v6")); err != nil {
		t.Fatal(err)
	}
	embeddedtest.WaitFor(t, 10*time.Second, "A reconnected", func() bool { return ncA.IsConnected() })
	if err := ncA.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	s, err := jsB.Stream(t.Context(), events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(t.Context(), events.ChangeSubject("acme", "c", "d"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := events.DecodeChange(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CHANGES' last message for acme/c/d: version %d, stored %s after the lease ran out", c.Version, m.Time.Sub(valid).Round(time.Millisecond))
	if c.Version != 6 {
		t.Fatalf("the fenced holder's version %d was stored after the lease ran out and after the new holder's version 6: CHANGES keeps the older state", c.Version)
	}
}
