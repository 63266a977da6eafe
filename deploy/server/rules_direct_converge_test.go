package server_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// TestRulesExternal_DirectOffUntilAServerStarts: two ebb servers on one
// external NATS. S1 re-checks every 100ms, S2 every hour. The NATS is
// reloaded without filtered reads: S1 fails and turns CHANGES's
// allow_direct off, then S1 stops. The accounts are fixed and reloaded,
// and S2's connection is dropped, so S2 checks again (on reconnect): it
// passes, but a server never undoes another's turn-off (it cannot tell a
// server that stopped from one whose check still fails), so allow_direct
// stays off; an ebb serve (re)started reconciles the streams and turns it on, and
// service svc's direct gets on CHANGES (its only last-message read) work
// again.
func TestRulesExternal_DirectOffUntilAServerStarts(t *testing.T) {
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
	// S2's next check: on reconnect (its interval is an hour).
	connz, err := ns.Connz(&natsserver.ConnzOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kicked := 0
	for _, ci := range connz.Conns {
		if ci.Name == "ebb-serve" {
			if err := ns.DisconnectClientByID(ci.Cid); err == nil {
				kicked++
			}
		}
	}
	if kicked == 0 {
		t.Fatal("no connection of S2 to drop")
	}
	svc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("svc", "svc-secret"), nats.CustomInboxPrefix(auth.InboxPrefix("svc")))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	embeddedtest.WaitFor(t, 30*time.Second, "S2 ready again after its reconnect's check", func() bool {
		return s2.Ready(t.Context()) == nil
	})
	if direct() {
		t.Fatal("S2, whose check passes, turned on the allow_direct another server turned off")
	}
	if err := s2.Close(context.Background()); err != nil {
		t.Logf("close S2: %v", err)
	}
	mustStart(t, cfg2) // S2 restarted: it reconciles the streams
	var gerr error
	embeddedtest.WaitFor(t, 30*time.Second, "the restarted server turns allow_direct on and svc direct-gets bob's list", func() bool {
		if !direct() {
			return false
		}
		c, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		_, gerr = svc.RequestWithContext(c, "$JS.API.DIRECT.GET."+events.StreamChanges+"."+events.ChangeSubject("acme", "lists", "l-bob"), nil)
		return gerr == nil
	})
}
