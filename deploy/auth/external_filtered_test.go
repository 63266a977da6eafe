package auth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/authtest"
)

// externalUsers are the users of the filtered-mode tests against an
// external server: a client and the admin ebb serve connects as.
const externalUsers = `users:
  - {name: alice, password: alice-pw, tenant: acme, role: client}
  - {name: ops, password: ops-pw, role: admin}
`

// TestNATSConfig_FilteredModeMarker: the configuration written in
// filtered reads mode carries the marker (FilteredModeSubject mapped in
// EBB to its users' AccountsFingerprint), which CheckFilteredReads finds
// on a nats-server started from it; the configuration without the mode
// carries none, and the check says so with ErrNotFilteredReads at once.
// A user account answering on the marker subjects (with the right
// fingerprint) cannot make the check pass where the server has no marker.
func TestNATSConfig_FilteredModeMarker(t *testing.T) {
	u, err := auth.Parse([]byte(externalUsers))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		filtered bool
		wantErr  error
	}{
		{"filtered", true, nil},
		{"unfiltered", false, auth.ErrNotFilteredReads},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf, err := u.WithFilteredReads(tc.filtered).NATSConfig()
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(conf, auth.FilteredModeSubject); got != tc.filtered {
				t.Fatalf("config mentions %s: %v, want %v", auth.FilteredModeSubject, got, tc.filtered)
			}
			ns := authtest.MustStartNATS(t, conf)
			// Someone else answers the admin's marker request: a client
			// account listening on the marker subjects, answering with
			// the fingerprint the check wants.
			forged := []byte(auth.FilteredModeSubject + "." + u.WithFilteredReads(true).AccountsFingerprint())
			alice := connectSlowBcrypt(t, ns.ClientURL(), nats.UserInfo("alice", "alice-pw"), nats.CustomInboxPrefix(auth.InboxPrefix("alice")))
			for _, subj := range []string{auth.FilteredModeSubject, auth.FilteredModeSubject + ".>"} {
				if _, err := alice.Subscribe(subj, func(m *nats.Msg) { _ = m.Respond(forged) }); err != nil {
					t.Fatal(err)
				}
			}
			_ = alice.Flush()
			ops := connectSlowBcrypt(t, ns.ClientURL(), nats.UserInfo("ops", "ops-pw"))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			err = auth.CheckFilteredReads(ctx, ops, u)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("CheckFilteredReads: %v, want %v", err, tc.wantErr)
			}
			if err != nil && ctx.Err() != nil {
				t.Errorf("the refusal waited out its deadline (%s) instead of hearing no responders", time.Since(start))
			}
		})
	}
}

// TestNATSConfig_FilteredModeOtherUsersFile: the marker carries the
// fingerprint of the users the accounts were written from: checked
// against another users file (a role changed), CheckFilteredReads fails
// with ErrOtherUsersFile; the random salts of the password hashes do not
// change it (two configurations from one file carry one fingerprint).
func TestNATSConfig_FilteredModeOtherUsersFile(t *testing.T) {
	u, err := auth.Parse([]byte(externalUsers))
	if err != nil {
		t.Fatal(err)
	}
	other, err := auth.Parse([]byte(strings.Replace(externalUsers, "role: client", "role: service", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if u.AccountsFingerprint() == other.AccountsFingerprint() {
		t.Fatal("a changed role leaves the fingerprint as it was")
	}
	if u.AccountsFingerprint() == u.WithFilteredReads(true).AccountsFingerprint() {
		t.Fatal("filtered reads mode leaves the fingerprint as it was")
	}
	conf1, err := u.WithFilteredReads(true).NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	conf2, err := u.WithFilteredReads(true).NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	if conf1 == conf2 {
		t.Fatal("two configurations hash the passwords with one salt: the test proves nothing about salts")
	}
	ns := authtest.MustStartNATS(t, conf1)
	ops := connectSlowBcrypt(t, ns.ClientURL(), nats.UserInfo("ops", "ops-pw"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := auth.CheckFilteredReads(ctx, ops, u); err != nil {
		t.Fatalf("check against the users file the accounts came from: %v", err)
	}
	if err := auth.CheckFilteredReads(ctx, ops, other); !errors.Is(err, auth.ErrOtherUsersFile) {
		t.Fatalf("check against another users file: %v, want ErrOtherUsersFile", err)
	}
}

// TestNATSConfig_FilteredModeInCluster: a real 3-node JetStream cluster
// started from the generated configs, n1 and n2 with the filtered
// accounts and n3 with the accounts written without --rules: the check
// on a connection to each node passes on n1 and n2 and fails on n3,
// naming it. Each node's marker is its own: the check on n3 does not
// hear n1's mapping over the routes.
func TestNATSConfig_FilteredModeInCluster(t *testing.T) {
	u, err := auth.Parse([]byte(externalUsers))
	if err != nil {
		t.Fatal(err)
	}
	filtered, err := u.WithFilteredReads(true).NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := u.NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	nodes := authtest.MustStartCluster(t, []string{filtered, filtered, plain})
	for i, ns := range nodes {
		nc := connectSlowBcrypt(t, ns.ClientURL(), nats.UserInfo("ops", "ops-pw"), nats.DontRandomize(), nats.IgnoreDiscoveredServers(), nats.NoReconnect())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := auth.CheckFilteredReads(ctx, nc, u)
		cancel()
		name := ns.Name()
		if i < 2 && err != nil {
			t.Errorf("node %s (filtered): %v", name, err)
		}
		if i == 2 {
			if !errors.Is(err, auth.ErrNotFilteredReads) {
				t.Fatalf("node %s (unfiltered): %v, want ErrNotFilteredReads", name, err)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("the refusal does not name node %s: %v", name, err)
			}
		}
	}
}
