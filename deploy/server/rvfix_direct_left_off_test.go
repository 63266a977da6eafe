package server_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// TestRVFix_DirectLeftOffAfterTheFailingServerStops: two ebb servers on
// one external NATS. S1 re-checks every 100ms, S2 every hour. The NATS is
// reloaded without filtered reads: S1 fails and turns CHANGES's
// allow_direct off, then S1 stops (scaled down, restarted elsewhere...).
// The accounts are fixed and reloaded: S2 is ready, nobody fails, and
// allow_direct stays off for good, since only the server that turned it
// off (in memory) turns it back on. Service svc's direct gets on CHANGES
// (its only last-message read: no STREAM.MSG.GET) fail from then on.
func TestRVFix_DirectLeftOffAfterTheFailingServerStops(t *testing.T) {
	hash := func(pw string) string {
		h, _ := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		return string(h)
	}
	u, err := auth.New([]auth.User{
		{Name: "ann", PasswordHash: hash("ann-secret"), Tenant: "acme", Role: auth.RoleClient, Groups: []string{"red"}},
		{Name: "bob", PasswordHash: hash("bob-secret"), Tenant: "acme", Role: auth.RoleClient, Groups: []string{"blue"}},
		{Name: "svc", PasswordHash: hash("svc-secret"), Tenant: "acme", Role: auth.RoleService},
		{Name: "ops", PasswordHash: hash("ops-secret"), Role: auth.RoleAdmin},
	})
	if err != nil {
		t.Fatal(err)
	}
	users := u.WithFilteredReads(true)
	ns, path := startReloadable(t, users)
	adminURL := strings.Replace(ns.ClientURL(), "nats://", "nats://ops:ops-secret@", 1)
	cfg1 := externalRulesConfig(t, users, adminURL)
	cfg1.RulesCheckInterval = 100 * time.Millisecond
	s1 := mustStart(t, cfg1)
	cfg2 := externalRulesConfig(t, users, adminURL)
	cfg2.RulesCheckInterval = time.Hour
	s2 := mustStart(t, cfg2)
	bobWritesSecret(t, &rulesWorld{t: t, srv: s2, natsURL: ns.ClientURL()})

	ops, err := nats.Connect(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	js, _ := jetstream.New(ops)
	direct := func() bool {
		st, err := js.Stream(t.Context(), events.StreamChanges)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.AllowDirect
	}

	writeConf(t, path, filepath.Dir(path), users, false)
	if err := ns.Reload(); err != nil {
		t.Fatal(err)
	}
	embeddedtest.WaitFor(t, 30*time.Second, "S1 turns allow_direct off", func() bool { return !direct() })
	if err := s1.Close(context.Background()); err != nil {
		t.Logf("close S1: %v", err)
	}
	writeConf(t, path, filepath.Dir(path), users, true)
	if err := ns.Reload(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	svc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("svc", "svc-secret"), nats.CustomInboxPrefix(auth.InboxPrefix("svc")))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	c, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	_, gerr := svc.RequestWithContext(c, "$JS.API.DIRECT.GET."+events.StreamChanges+"."+events.ChangeSubject("acme", "lists", "l-bob"), nil)
	cancel()
	if rerr := s2.Ready(t.Context()); rerr == nil && !direct() {
		t.Fatalf("accounts fixed, the remaining server S2 ready, yet CHANGES's allow_direct is still off (left by the stopped S1); service svc's direct get: %v", gerr)
	}
}
