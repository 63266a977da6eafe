package embedded_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// TestStart_StreamsSurviveTurningAuthOnAndOff: with users from package
// auth the streams live in account EBB, without users in the global
// account; a Dir started both ways keeps its streams.
func TestStart_StreamsSurviveTurningAuthOnAndOff(t *testing.T) {
	users, err := auth.Parse([]byte("users: [{name: alice, password: a, tenant: acme, role: client}]"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := func(withUsers bool) *embedded.Server {
		return embeddedtest.MustStart(t, embeddedtest.InProcess(), func(c *embedded.Config) {
			c.Dir = dir
			if withUsers {
				c.Users = users.NATSUsers()
			}
		})
	}
	msgs := func(s *embedded.Server) uint64 {
		t.Helper()
		js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, s))
		st, err := js.Stream(ctx, "KEEP")
		if err != nil {
			t.Fatalf("stream KEEP: %v", err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	s := start(false)
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, s))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "keep", []byte("1")); err != nil {
		t.Fatal(err)
	}
	for i, withUsers := range []bool{true, false, true} {
		if err := s.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		s = start(withUsers)
		if n := msgs(s); n != 1 {
			t.Fatalf("restart %d (users %v): KEEP holds %d messages, want 1", i+1, withUsers, n)
		}
	}
}

// TestStart_UserWithAnEncodedName: a user name that is not a plain subject
// token gets an account and an inbox of its encoded name, and works.
func TestStart_UserWithAnEncodedName(t *testing.T) {
	const name = "ann.o'neil@example.com"
	users, err := auth.Parse([]byte(`users: [{name: "` + name + `", password: pw, tenant: acme, role: client}]`))
	if err != nil {
		t.Fatal(err)
	}
	s := embeddedtest.MustStart(t, func(c *embedded.Config) { c.Users = users.NATSUsers() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, s))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"ebb.evt.>"}}); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(name, "pw"), nats.CustomInboxPrefix(auth.InboxPrefix(name)))
	if err != nil {
		t.Fatalf("connect as %q: %v", name, err)
	}
	defer nc.Close()
	ujs := embeddedtest.MustJetStream(t, nc)
	if _, err := ujs.Publish(ctx, events.ClientEvents("acme", name)[:len(events.ClientEvents("acme", name))-1]+"todos.t1", []byte("{}")); err != nil {
		t.Fatalf("publish as %q: %v", name, err)
	}
}
