package auth_test

// Hostile clients against the quotas and the consumer create responder
// (review rev-s2, issue 13).

import (
	"context"
	"fmt"
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

const hostileUsers = `users:
  - {name: eve, password: eve-pw, tenant: evil, role: client}
  - {name: alice, password: alice-pw, tenant: acme, role: client}
`

// hostileServer starts an embedded server with hostileUsers, the
// responders under m, and the streams; it returns an admin JetStream.
func hostileServer(t *testing.T, m *auth.Meter) (*embedded.Server, jetstream.JetStream) {
	t.Helper()
	u, err := auth.Parse([]byte(hostileUsers))
	if err != nil {
		t.Fatal(err)
	}
	srv := embeddedtest.MustStart(t, embeddedtest.InProcess(), func(c *embedded.Config) {
		c.Users = u.NATSUsers()
		c.Meter = m
	})
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return srv, js
}

func connectEve(t *testing.T, srv *embedded.Server) *nats.Conn {
	t.Helper()
	return embeddedtest.MustConnect(t, srv, nats.UserInfo("eve", "eve-pw"), nats.CustomInboxPrefix(auth.InboxPrefix("eve")))
}

// TestHostile_ForgedMsgSizeHeaderDoesNotFoolStorageQuota: a client sets
// its own Nats-Msg-Size on an event (JetStream would store it, and a
// headers-only read appends the real one after it). The publish responder
// drops it, the measure trusts only the server's value, and the tenant
// cannot write past its quota with one forged event.
func TestHostile_ForgedMsgSizeHeaderDoesNotFoolStorageQuota(t *testing.T) {
	const limit = 20000
	m := auth.NewMeter(auth.Quotas{Storage: auth.StorageLimit{TenantBytes: limit, Rescan: 200 * time.Millisecond}})
	srv, js := hostileServer(t, m)
	ejs := embeddedtest.MustJetStream(t, connectEve(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	msg := nats.NewMsg(events.EventSubject("evil", "eve", "todos", "neg"))
	msg.Data = []byte("{}")
	msg.Header.Set(nats.MsgSize, "-1000000000")
	if _, err := ejs.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("eve's event with a forged Nats-Msg-Size: %v", err)
	}
	// One stored with the header as it came (an admin's publish passes no
	// responder; so did events before the responder dropped the header):
	// the measure takes the size JetStream appends, the last one.
	stored := nats.NewMsg(events.EventSubject("evil", "eve", "todos", "old"))
	stored.Data = []byte("{}")
	stored.Header.Set(nats.MsgSize, "-1000000000")
	if _, err := js.PublishMsg(ctx, stored); err != nil {
		t.Fatal(err)
	}
	if err := m.Measure(ctx, js); err != nil {
		t.Fatal(err)
	}
	if u := m.Usage("evil"); u < int64(len(msg.Subject)+len(stored.Subject)+4) {
		t.Fatalf("evil's measured usage after one forged event: %d bytes, want at least its subject and payload", u)
	}
	payload := []byte(strings.Repeat("x", 1000))
	accepted := 0
	for i := range 200 { // 200 KB, ten times the quota
		if _, err := ejs.Publish(ctx, events.EventSubject("evil", "eve", "todos", fmt.Sprint(i)), payload); err != nil {
			break
		}
		accepted++
	}
	if accepted*1000 > 2*limit {
		t.Fatalf("tenant storage quota bypassed: %d events of 1 KB (%d bytes) accepted under a %d-byte quota; measured usage %d",
			accepted, accepted*1000, limit, m.Usage("evil"))
	}
}

// TestHostile_PublishResponderDropsServerHeaders: of the Nats-* headers a
// client sets, only the ones a client legitimately sends (Nats-Msg-Id and
// the Nats-Expected-* checks on its own subject) reach EVENTS; the rest,
// in any letter case, are dropped, and the client's other headers (trace
// context) are kept.
func TestHostile_PublishResponderDropsServerHeaders(t *testing.T) {
	srv, js := hostileServer(t, auth.NewMeter(auth.Quotas{}))
	ejs := embeddedtest.MustJetStream(t, connectEve(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	msg := nats.NewMsg(events.EventSubject("evil", "eve", "todos", "h"))
	msg.Data = []byte("{}")
	msg.Header.Set(jetstream.MsgIDHeader, "id-1")
	msg.Header.Set(jetstream.ExpectedStreamHeader, events.StreamEvents)
	msg.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	forged := []string{nats.MsgSize, "nats-msg-size", "NATS-MSG-SIZE", "Nats-Rollup", "Nats-TTL", "Nats-Stream", "Nats-Sequence",
		"Nats-Subject", "Nats-Time-Stamp", "Nats-Expected-Last-Subject-Sequence-Subject", "Nats-Incr", "Nats-Marker-Reason"}
	for _, k := range forged {
		msg.Header[k] = []string{"-5"}
	}
	ack, err := ejs.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	st, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range forged {
		if v, ok := got.Header[k]; ok {
			t.Errorf("client-set header %s: %v stored in EVENTS", k, v)
		}
	}
	if got.Header.Get(jetstream.MsgIDHeader) != "id-1" || got.Header.Get("traceparent") == "" {
		t.Errorf("legitimate headers lost: %v", got.Header)
	}
	// Nats-Msg-Id still deduplicates.
	again := nats.NewMsg(msg.Subject)
	again.Data = msg.Data
	again.Header.Set(jetstream.MsgIDHeader, "id-1")
	if ack2, err := ejs.PublishMsg(ctx, again); err != nil || !ack2.Duplicate {
		t.Fatalf("a retry with the same Nats-Msg-Id: %+v %v, want a duplicate", ack2, err)
	}
}
