package server_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/server"
)

// startClusterNoAdvertise is authtest.MustStartCluster where the nodes
// whose noAdv is true run with cluster {no_advertise: true} (common
// behind a load balancer or in Kubernetes): their client URLs are not
// gossiped to clients, so nc.Servers() never lists them.
func startClusterNoAdvertise(t *testing.T, accounts []string, noAdv []bool) []*natsserver.Server {
	t.Helper()
	dir := t.TempDir()
	ports := make([]int, len(accounts))
	var routes []string
	for i := range accounts {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(ports[i]))
	}
	var nodes []*natsserver.Server
	for i, acc := range accounts {
		name := "n" + strconv.Itoa(i+1)
		extra := ""
		if noAdv[i] {
			extra = ", no_advertise: true"
		}
		conf := "server_name: " + name + "\nlisten: 127.0.0.1:-1\njetstream: {store_dir: " + strconv.Quote(filepath.Join(dir, name)) + "}\n" +
			"cluster: {name: ebb, listen: 127.0.0.1:" + strconv.Itoa(ports[i]) + ", routes: [" + strings.Join(routes, ", ") + "]" + extra + "}\n" + acc
		path := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := natsserver.ProcessConfigFile(path)
		if err != nil {
			t.Fatal(err)
		}
		opts.NoSigs = true
		ns, err := natsserver.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		nodes = append(nodes, ns)
	}
	embeddedtest.WaitFor(t, time.Minute, "cluster routed with a meta leader", func() bool {
		leader := false
		for _, ns := range nodes {
			if !ns.ReadyForConnections(10*time.Millisecond) || ns.NumRoutes() < len(nodes)-1 {
				return false
			}
			leader = leader || ns.JetStreamIsLeader()
		}
		return leader
	})
	return nodes
}

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
	nodes := startClusterNoAdvertise(t, []string{filtered, filtered, plain}, []bool{false, false, true})
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
	nodes := startClusterNoAdvertise(t, []string{filtered, filtered, plain}, []bool{false, false, true})
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
