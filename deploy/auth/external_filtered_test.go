package auth_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
// EBB), which CheckFilteredReads finds on a nats-server started from it;
// the configuration without the mode carries none, and the check says
// so with ErrNotFilteredReads at once.
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
			ops := connectSlowBcrypt(t, ns.ClientURL(), nats.UserInfo("ops", "ops-pw"))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			err = auth.CheckFilteredReads(ctx, ops)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("CheckFilteredReads: %v, want %v", err, tc.wantErr)
			}
			if err != nil && ctx.Err() != nil {
				t.Errorf("the refusal waited out its deadline (%s) instead of hearing no responders", time.Since(start))
			}
			// A client cannot answer for the server: the marker is in EBB.
			alice := connectSlowBcrypt(t, ns.ClientURL(), nats.UserInfo("alice", "alice-pw"), nats.CustomInboxPrefix(auth.InboxPrefix("alice")))
			actx, acancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer acancel()
			if err := auth.CheckFilteredReads(actx, alice); err == nil {
				t.Error("CheckFilteredReads passed on a client's connection, outside EBB")
			}
		})
	}
}

// TestNATSConfig_FilteredModeInCluster: nats-server accepts the filtered
// accounts block, marker included, in the config of each node of a
// 3-node JetStream cluster, and keeps the marker's mapping in EBB.
func TestNATSConfig_FilteredModeInCluster(t *testing.T) {
	u, err := auth.Parse([]byte(externalUsers))
	if err != nil {
		t.Fatal(err)
	}
	conf, err := u.WithFilteredReads(true).NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, node := range []string{"n1", "n2", "n3"} {
		path := filepath.Join(dir, node+".conf")
		full := "server_name: " + node + "\nlisten: 127.0.0.1:-1\njetstream: {store_dir: \"" + filepath.Join(dir, node) + "\"}\n" +
			"cluster: {name: ebb, listen: 127.0.0.1:-1, routes: [nats://127.0.0.1:6222, nats://127.0.0.1:6223, nats://127.0.0.1:6224]}\n" + conf
		if err := os.WriteFile(path, []byte(full), 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Fatalf("nats-server refuses node %s's config: %v", node, err)
		}
		var ebb *server.Account
		for _, a := range opts.Accounts {
			if a.Name == auth.StreamAccount {
				ebb = a
			}
		}
		// RemoveMapping reports whether the mapping was there (on this
		// parsed copy, which no server uses).
		if ebb == nil || !ebb.RemoveMapping(auth.FilteredModeSubject) {
			t.Fatalf("node %s: account %s has no mapping of %s", node, auth.StreamAccount, auth.FilteredModeSubject)
		}
	}
}
