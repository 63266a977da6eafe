package server_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/auth/authtest"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/server"
)

// TestRulesExternal_OneNodeDownKeepsTheServerReady: a healthy 3-node cluster,
// every node advertised and running the fleet's filtered accounts, ebb
// given one seed URL (n1) and R3 streams. n3 stops (a rolling restart):
// nats.go prunes the discovered n3 from nc.Servers(), so eachServer no
// longer checks it, but the streams still list it as an (offline) replica,
// so uncheckedPeers must skip offline replicas: failing the check would
// tell the operator to list or advertise a node that is simply down, and
// take the whole rules fleet out of service (JetStream R3 serves on 2 of 3).
func TestRulesExternal_OneNodeDownKeepsTheServerReady(t *testing.T) {
	users := externalRulesUsers(t)
	filtered, err := users.NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	nodes := authtest.MustStartClusterNoAdvertise(t, []string{filtered, filtered, filtered}, []bool{false, false, false})
	adminURL := "nats://ops:ops-secret@" + nodes[0].ClientURL()[len("nats://"):]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cfg := externalRulesConfig(t, users, adminURL)
	cfg.Replicas = 3
	cfg.RulesCheckInterval = 200 * time.Millisecond
	srv, err := server.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start on a healthy cluster: %v", err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	embeddedtest.WaitFor(t, 30*time.Second, "ready on the healthy cluster", func() bool { return srv.Ready(t.Context()) == nil })
	nodes[2].Shutdown()
	nodes[2].WaitForShutdown()
	var notReady error
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if err := srv.Ready(t.Context()); errors.Is(err, server.ErrNodeNotChecked) {
			notReady = err
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if notReady != nil {
		t.Fatalf("one NATS node down (2 of 3 serve the R3 streams): the interlock takes the rules server out of service: %v", notReady)
	}
}
