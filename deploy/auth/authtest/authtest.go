// Package authtest starts an "external" nats-server in process from a
// configuration deploy/auth generates (Users.NATSConfig), as an operator
// would include it in their server's config, for tests of ebb against
// an external server.
package authtest

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
)

// MustStartNATS starts nats-server from accounts, an accounts block (the
// output of Users.NATSConfig or `ebb nats-config`), with a client
// listener on loopback at a free port and JetStream stored in
// tb.TempDir(); it is shut down when the test ends. The configuration
// goes through nats-server's own config file parser, so a block it
// refuses fails the test.
func MustStartNATS(tb testing.TB, accounts string) *server.Server {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "nats-server.conf")
	conf := "listen: 127.0.0.1:-1\njetstream: {store_dir: " + strconv.Quote(filepath.Join(dir, "js")) + "}\n" + accounts
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		tb.Fatalf("nats-server refuses %s: %v", path, err)
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("nats-server from %s: %v", path, err)
	}
	ns.Start()
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server not ready for connections within 10s")
	}
	return ns
}

// MustStartCluster starts a JetStream cluster of len(accounts) nodes on
// loopback, node i (named n1, n2, ...) from the accounts block
// accounts[i], each through nats-server's config file parser, with its
// client and route listeners at free ports and its storage in
// tb.TempDir(); it returns once every node accepts connections and the
// cluster has a JetStream meta leader, and shuts them down when the test
// ends.
func MustStartCluster(tb testing.TB, accounts []string) []*server.Server {
	tb.Helper()
	return MustStartClusterNoAdvertise(tb, accounts, nil)
}

// MustStartClusterNoAdvertise is MustStartCluster where node i runs with
// cluster {no_advertise: true} if noAdvertise[i] (as behind a load
// balancer or in Kubernetes): its client URL is not gossiped to clients,
// so their Servers() never list it. A nil noAdvertise advertises all.
func MustStartClusterNoAdvertise(tb testing.TB, accounts []string, noAdvertise []bool) []*server.Server {
	tb.Helper()
	dir := tb.TempDir()
	ports := make([]int, len(accounts))
	var routes []string
	for i := range accounts {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(ports[i]))
	}
	var nodes []*server.Server
	for i, acc := range accounts {
		name := "n" + strconv.Itoa(i+1)
		extra := ""
		if i < len(noAdvertise) && noAdvertise[i] {
			extra = ", no_advertise: true"
		}
		conf := "server_name: " + name + "\nlisten: 127.0.0.1:-1\njetstream: {store_dir: " + strconv.Quote(filepath.Join(dir, name)) + "}\n" +
			"cluster: {name: ebb, listen: 127.0.0.1:" + strconv.Itoa(ports[i]) + ", routes: [" + strings.Join(routes, ", ") + "]" + extra + "}\n" + acc
		path := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			tb.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			tb.Fatalf("nats-server refuses %s: %v", path, err)
		}
		opts.NoSigs = true
		ns, err := server.NewServer(opts)
		if err != nil {
			tb.Fatalf("nats-server from %s: %v", path, err)
		}
		ns.Start()
		tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		nodes = append(nodes, ns)
	}
	embeddedtest.WaitFor(tb, time.Minute, "every node routed to all others and a JetStream meta leader", func() bool {
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
