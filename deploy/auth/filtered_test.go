package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

const filteredUsers = `users:
  - {name: alice, password: alice-pw, tenant: acme, role: client, groups: [team-a]}
  - {name: a.b, password: a.b-pw, tenant: acme corp, role: client}
  - {name: eve, password: eve-pw, tenant: evil, role: client}
  - {name: search, password: search-pw, tenant: acme, role: service, durables: [search-feed]}
`

// filteredServer starts an embedded server whose users are in filtered
// reads mode, with the streams; it returns an admin connection.
func filteredServer(t *testing.T) (*embedded.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	u, err := auth.Parse([]byte(filteredUsers))
	if err != nil {
		t.Fatal(err)
	}
	fu := u.WithFilteredReads(true)
	if !fu.FilteredReads() || u.FilteredReads() {
		t.Fatal("WithFilteredReads changed the original or not the copy")
	}
	srv := embeddedtest.MustStart(t, embeddedtest.InProcess(), func(c *embedded.Config) {
		c.Users = fu.NATSUsers()
		c.Identities = fu
	})
	nc := embeddedtest.MustConnect(t, srv)
	js := embeddedtest.MustJetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return srv, nc, js
}

func apiErrorOf(t *testing.T, data []byte) (int, string) {
	t.Helper()
	var answer struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(data, &answer); err != nil || answer.Error == nil {
		return 0, ""
	}
	return answer.Error.Code, answer.Error.Description
}

// TestFilteredReads_ClientCannotReadChanges (issue 18 contract item 3):
// in filtered reads mode a client may not read CHANGES directly: a
// consumer create (one filter or several) is refused with a 403 saying
// "sync rules", so is a fetch from a consumer it did not make, and a
// direct get is no longer imported. Its receipts work as before, and a
// service keeps its tenant-wide reads.
func TestFilteredReads_ClientCannotReadChanges(t *testing.T) {
	srv, _, js := filteredServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	publishChange(t, js, "acme", "lists", "l1")
	alice := connectAs(t, srv, "alice")
	ajs := embeddedtest.MustJetStream(t, alice)

	_, err := ajs.OrderedConsumer(ctx, events.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.TenantChanges("acme")}})
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != 403 || !strings.Contains(apiErr.Description, "sync rules") {
		t.Fatalf("client's CHANGES consumer: %v, want a 403 saying sync rules", err)
	}
	for _, subj := range []string{"$JS.API.CONSUMER.CREATE.CHANGES.multi", "$JS.API.CONSUMER.CREATE.CHANGES.one." + events.CollectionChanges("acme", "lists")} {
		name := strings.Split(subj, ".")[5]
		filters := `"filter_subjects":["` + events.CollectionChanges("acme", "lists") + `","` + events.CollectionChanges("acme", "todos") + `"]`
		if name == "one" {
			filters = `"filter_subject":"` + events.CollectionChanges("acme", "lists") + `"`
		}
		resp, err := alice.Request(subj, []byte(`{"stream_name":"CHANGES","config":{"name":"`+name+`",`+filters+`,"ack_policy":"none"}}`), 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
		if code, desc := apiErrorOf(t, resp.Data); code != 403 || !strings.Contains(desc, "sync rules") {
			t.Fatalf("%s: %s, want a 403 saying sync rules", subj, resp.Data)
		}
	}
	// A consumer of her tenant with no owner (an admin's): the fetch is
	// refused all the same.
	if _, err := js.CreateOrUpdateConsumer(ctx, events.StreamChanges, jetstream.ConsumerConfig{
		Durable: "ops-acme", FilterSubject: events.TenantChanges("acme"), AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatal(err)
	}
	m, err := rawNext(t, alice, "alice", events.StreamChanges, "ops-acme")
	if err != nil || m.Header.Get("Status") != "403" || !strings.Contains(m.Header.Get("Description"), "sync rules") || len(m.Data) != 0 {
		t.Fatalf("client's fetch from CHANGES: %v %v, want a 403 saying sync rules", m, err)
	}
	short, stop := context.WithTimeout(ctx, 2*time.Second)
	st, err := ajs.Stream(short, events.StreamChanges)
	if err != nil {
		stop()
		t.Fatalf("stream info (reset detection) in filtered mode: %v", err)
	}
	if _, err := st.GetLastMsgForSubject(short, events.ChangeSubject("acme", "lists", "l1")); err == nil {
		t.Fatal("client's direct get of a change answered in filtered mode")
	}
	stop()
	// Receipts as before.
	if _, err := js.Publish(ctx, events.ReceiptSubject("acme", "alice"), []byte(`{"r":1}`)); err != nil {
		t.Fatal(err)
	}
	rc, err := ajs.OrderedConsumer(ctx, events.StreamReceipts, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.ReceiptSubject("acme", "alice")}})
	if err != nil {
		t.Fatalf("client's receipts consumer in filtered mode: %v", err)
	}
	if _, err := rc.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
		t.Fatalf("client's receipts fetch in filtered mode: %v", err)
	}
	// A service reads its tenant's changes as before.
	sjs := embeddedtest.MustJetStream(t, connectAs(t, srv, "search"))
	sc, err := sjs.OrderedConsumer(ctx, events.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.TenantChanges("acme")}})
	if err != nil {
		t.Fatalf("service's CHANGES consumer in filtered mode: %v", err)
	}
	if msg, err := sc.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil || !strings.Contains(string(msg.Data()), "l1") {
		t.Fatalf("service's CHANGES fetch in filtered mode: %v", err)
	}
	if _, err := sjs.CreateOrUpdateConsumer(ctx, events.StreamChanges, jetstream.ConsumerConfig{Durable: "search-feed",
		FilterSubjects: []string{events.CollectionChanges("acme", "lists"), events.CollectionChanges("acme", "todos")}, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatalf("service's multi-collection durable in filtered mode: %v", err)
	}
}

// TestFilteredReads_ChangesRequestRouted: a client's request on
// _ebb.api.changes arrives in StreamAccount on
// _ebb.api.changes.<user>.<tenant> (EncodeToken), written by the import
// mapping, and the answer reaches the asker; a client that names another
// user or tenant in the subject reaches nothing.
func TestFilteredReads_ChangesRequestRouted(t *testing.T) {
	srv, admin, _ := filteredServer(t)
	var mu sync.Mutex
	var seen []string
	sub, err := admin.QueueSubscribe(auth.ChangesSubject+".>", "ebb-api", func(m *nats.Msg) {
		user, tenant, err := auth.ChangesAsker(m.Subject)
		mu.Lock()
		seen = append(seen, m.Subject)
		mu.Unlock()
		if err != nil {
			_ = m.Respond([]byte("error: " + err.Error()))
			return
		}
		_ = m.Respond([]byte(user + "|" + tenant + "|" + string(m.Data)))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := admin.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ user, tenant string }{{"alice", "acme"}, {"a.b", "acme corp"}, {"eve", "evil"}} {
		nc := connectAs(t, srv, tc.user)
		resp, err := nc.Request(auth.ChangesSubject, []byte(`{"after":0}`), 5*time.Second)
		if err != nil {
			t.Fatalf("%s asks for changes: %v", tc.user, err)
		}
		if want := tc.user + "|" + tc.tenant + `|{"after":0}`; string(resp.Data) != want {
			t.Fatalf("%s's answer %q, want %q", tc.user, resp.Data, want)
		}
	}
	mu.Lock()
	want := []string{"_ebb.api.changes.alice.acme", "_ebb.api.changes.~YS5i.~YWNtZSBjb3Jw", "_ebb.api.changes.eve.evil"}
	if strings.Join(seen, " ") != strings.Join(want, " ") {
		t.Fatalf("routed subjects %q, want %q", seen, want)
	}
	seen = nil
	mu.Unlock()
	// eve forges the tokens: nothing she sends reaches the responder.
	errs := make(chan error, 8)
	eve := embeddedtest.MustConnect(t, srv, nats.UserInfo("eve", "eve-pw"), nats.CustomInboxPrefix(auth.InboxPrefix("eve")),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	for _, forged := range []string{auth.ChangesSubject + ".alice.acme", auth.ChangesSubject + ".eve.acme", auth.ChangesSubject + ".alice"} {
		if _, err := eve.Request(forged, nil, 500*time.Millisecond); err == nil {
			t.Fatalf("eve's request on %s was answered", forged)
		}
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("async error %v, want a permission violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no permission violation reported")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 0 {
		t.Fatalf("forged requests reached the responder as %q", seen)
	}
}

// TestFilteredReads_NeedTheResponders: the direct-import configuration
// has no responder to refuse a client's CHANGES reads or to route its
// change requests, so it is refused in filtered reads mode.
func TestFilteredReads_NeedTheResponders(t *testing.T) {
	u, err := auth.Parse([]byte(filteredUsers))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.WithFilteredReads(true).NATSConfigWith(false); err == nil || !strings.Contains(err.Error(), "filtered reads") {
		t.Fatalf("NATSConfigWith(false) in filtered reads mode: %v, want refused", err)
	}
	if _, err := u.WithFilteredReads(true).NATSConfig(); err != nil {
		t.Fatalf("NATSConfig in filtered reads mode: %v", err)
	}
}
