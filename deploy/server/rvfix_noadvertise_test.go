package server_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

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

// TestRVFix_UnadvertisedUnfilteredNodePassesInterlock: n3 runs the
// accounts without filtered reads and does not advertise its client URL
// (no_advertise). ebb serve --rules on n1 checks only nc.Servers() (n1,
// n2), starts, and reports ready, while client ann, connected to n3,
// direct-gets bob's list that the rules hide from her.
func TestRVFix_UnadvertisedUnfilteredNodePassesInterlock(t *testing.T) {
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
	cfg.RulesCheckInterval = 100 * time.Millisecond
	srv, err := server.Start(ctx, cfg)
	if err != nil {
		t.Logf("start refused (the interlock saw n3): %v", err)
		return
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	bobWritesSecret(t, &rulesWorld{t: t, srv: srv, natsURL: nodes[0].ClientURL()})
	w := &rulesWorld{t: t, srv: srv, natsURL: nodes[2].ClientURL()}
	time.Sleep(time.Second) // several re-checks
	if srv.Ready(t.Context()) == nil && directGetsSecret(t, w.conn("ann")) {
		t.Fatal("ebb serve --rules is ready (the interlock passes every re-check) while client ann, on the unadvertised unfiltered node n3, direct-gets bob's l-bob")
	}
}
