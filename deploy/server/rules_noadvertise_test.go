package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/authtest"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/server"
)

// TestRulesExternal_UnadvertisedNodeListedInNATSURLsIsChecked: n3 runs
// the accounts without filtered reads and does not advertise its client
// URL (no_advertise), so the cluster never tells ebb of it. ebb cannot
// discover such a node: the documented contract is that every node is
// either advertised or listed in --nats (Config.NATSURLs). Listed, n3 is
// checked: Start is refused, wrapping auth.ErrNotFilteredReads and
// naming n3.
func TestRulesExternal_UnadvertisedNodeListedInNATSURLsIsChecked(t *testing.T) {
	users := externalRulesUsers(t)
	filtered, err := users.NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := users.WithFilteredReads(false).NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	nodes := authtest.MustStartClusterNoAdvertise(t, []string{filtered, filtered, plain}, []bool{false, false, true})
	admin := func(ns *natsserver.Server) string {
		return strings.Replace(ns.ClientURL(), "nats://", "nats://ops:ops-secret@", 1)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cfg := externalRulesConfig(t, users, admin(nodes[0]))
	cfg.NATSURLs = append(cfg.NATSURLs, admin(nodes[2]))
	srv, err := server.Start(ctx, cfg)
	if err == nil {
		srv.Close(context.Background())
		t.Fatal("ebb serve --rules started though n3, listed in --nats, runs the accounts without filtered reads")
	}
	if !errors.Is(err, auth.ErrNotFilteredReads) || !strings.Contains(err.Error(), "n3") {
		t.Fatalf("Start: %v, want ErrNotFilteredReads naming n3", err)
	}
	if strings.Contains(err.Error(), "ops-secret") {
		t.Errorf("Start's error shows the admin's password: %v", err)
	}
}

// TestRulesExternal_UnlistedUnadvertisedReplicaNodeFails: n3 runs the
// accounts without filtered reads, does not advertise itself and is not
// listed in --nats, but holds replicas of ebb's streams (Replicas 3):
// the interlock finds it among the streams' peers and fails, wrapping
// ErrNodeNotChecked and naming n3, so the server is not ready. (A node
// holding none of ebb's streams cannot be found: it must be listed.)
func TestRulesExternal_UnlistedUnadvertisedReplicaNodeFails(t *testing.T) {
	users := externalRulesUsers(t)
	filtered, err := users.NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := users.WithFilteredReads(false).NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	nodes := authtest.MustStartClusterNoAdvertise(t, []string{filtered, filtered, plain}, []bool{false, false, true})
	adminURL := strings.Replace(nodes[0].ClientURL(), "nats://", "nats://ops:ops-secret@", 1)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cfg := externalRulesConfig(t, users, adminURL)
	cfg.Replicas = 3
	cfg.RulesCheckInterval = 100 * time.Millisecond
	srv, err := server.Start(ctx, cfg)
	if err != nil {
		if !errors.Is(err, server.ErrNodeNotChecked) {
			t.Fatalf("Start: %v, want ErrNodeNotChecked (or a start, then not ready)", err)
		}
		return
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	var notReady error
	embeddedtest.WaitFor(t, 30*time.Second, "not ready for the unchecked n3", func() bool {
		notReady = srv.Ready(t.Context())
		return errors.Is(notReady, server.ErrNodeNotChecked)
	})
	if !strings.Contains(notReady.Error(), "n3") {
		t.Errorf("Ready: %v, want n3 named", notReady)
	}
}
