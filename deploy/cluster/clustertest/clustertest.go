// Package clustertest runs the 3-node NATS JetStream cluster of deploy/cluster
// in process, on loopback, for tests: each node's options are read from its
// config file in deploy/cluster with nats-server's own parser, then pointed
// at loopback ports and a storage directory in tb.TempDir(). Nodes can be
// killed (server.Server.Shutdown) and restarted on the same ports and store,
// as an operator's crashed machine would come back.
//
//	c := clustertest.MustStart(t)
//	nc, _ := nats.Connect(c.URLs(), nats.MaxReconnects(-1))
//	i := c.StreamLeader(events.StreamEvents)
//	c.Kill(i)
//	c.Restart(i)
package clustertest

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Size is the number of nodes in deploy/cluster.
const Size = 3

// account is the account streams live in without auth.
const account = server.DEFAULT_GLOBAL_ACCOUNT

// Dir returns deploy/cluster, where the node configs are.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// ConfigFile returns the path of node i's config (0-based), with TLS or not.
func ConfigFile(i int, tls bool) string {
	name := fmt.Sprintf("nats-%d.conf", i+1)
	if tls {
		name = fmt.Sprintf("nats-%d-tls.conf", i+1)
	}
	return filepath.Join(Dir(), name)
}

// Cluster is a running in-process cluster. Its methods fail tb on error and
// are not safe for concurrent use.
type Cluster struct {
	tb    testing.TB
	opts  []*server.Options
	nodes []*server.Server // nil while killed
}

// MustStart starts the three nodes of deploy/cluster (plain, no TLS) and
// waits until the cluster has a meta leader. mods change every node's
// options after the loopback ports and store are set (for example
// SyncAlways). Every node is shut down in tb.Cleanup.
func MustStart(tb testing.TB, mods ...func(*server.Options)) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb}
	clientPorts, routePorts := freePorts(tb, Size), freePorts(tb, Size)
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	for i := range Size {
		o, err := server.ProcessConfigFile(ConfigFile(i, false))
		if err != nil {
			tb.Fatalf("clustertest: %v", err)
		}
		o.ConfigFile = "" // Reload must not reread the file's container paths
		o.Host, o.Port = "127.0.0.1", clientPorts[i]
		o.HTTPHost, o.HTTPPort = "", 0
		o.Cluster.Host, o.Cluster.Port = "127.0.0.1", routePorts[i]
		o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		o.StoreDir = tb.TempDir()
		o.NoSigs, o.NoLog = true, true
		for _, m := range mods {
			m(o)
		}
		c.opts = append(c.opts, o)
	}
	c.nodes = make([]*server.Server, Size)
	tb.Cleanup(func() {
		for i := range c.nodes {
			c.Kill(i)
		}
	})
	for i := range Size {
		c.start(i)
	}
	c.WaitMetaLeader(30 * time.Second)
	return c
}

func (c *Cluster) start(i int) {
	c.tb.Helper()
	s, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		c.tb.Fatalf("clustertest: node %d: %v", i, err)
	}
	s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		s.Shutdown()
		c.tb.Fatalf("clustertest: node %d not ready for connections", i)
	}
	c.nodes[i] = s
}

// URLs returns the client URLs of all nodes, comma separated, as nats.Connect
// and `ebb serve --nats` take them.
func (c *Cluster) URLs() string {
	var u []string
	for _, o := range c.opts {
		u = append(u, (&url.URL{Scheme: "nats", Host: net.JoinHostPort(o.Host, fmt.Sprint(o.Port))}).String())
	}
	return strings.Join(u, ",")
}

// Node returns node i's server, nil while it is killed.
func (c *Cluster) Node(i int) *server.Server { return c.nodes[i] }

// Kill shuts node i down (its store stays) and waits until it has stopped.
// Killing a killed node does nothing.
func (c *Cluster) Kill(i int) {
	if s := c.nodes[i]; s != nil {
		s.Shutdown()
		s.WaitForShutdown()
		c.nodes[i] = nil
	}
}

// Restart starts killed node i again on its ports and store.
func (c *Cluster) Restart(i int) {
	c.tb.Helper()
	if c.nodes[i] != nil {
		c.tb.Fatalf("clustertest: restart of node %d, which runs", i)
	}
	c.start(i)
}

// MetaLeader returns the node that leads the JetStream meta group, or -1.
func (c *Cluster) MetaLeader() int {
	for i, s := range c.nodes {
		if s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// StreamLeader returns the node that leads stream's raft group, or -1.
func (c *Cluster) StreamLeader(stream string) int {
	for i, s := range c.nodes {
		if s != nil && s.JetStreamIsStreamLeader(account, stream) {
			return i
		}
	}
	return -1
}

// WaitMetaLeader waits until a running node leads the meta group.
func (c *Cluster) WaitMetaLeader(timeout time.Duration) int {
	c.tb.Helper()
	return c.wait(timeout, "a meta leader", c.MetaLeader)
}

// WaitStreamLeader waits until a running node leads stream.
func (c *Cluster) WaitStreamLeader(stream string, timeout time.Duration) int {
	c.tb.Helper()
	return c.wait(timeout, "a leader of stream "+stream, func() int { return c.StreamLeader(stream) })
}

// WaitCurrent waits until every running node's meta state and its replica
// of each of streams is current with its leader, as after a restarted node
// has caught up.
func (c *Cluster) WaitCurrent(timeout time.Duration, streams ...string) {
	c.tb.Helper()
	c.wait(timeout, "every node current", func() int {
		for _, s := range c.nodes {
			if s == nil {
				continue
			}
			if !s.JetStreamIsCurrent() {
				return -1
			}
			for _, st := range streams {
				if !s.JetStreamIsStreamCurrent(account, st) {
					return -1
				}
			}
		}
		return 0
	})
}

func (c *Cluster) wait(timeout time.Duration, what string, f func() int) int {
	c.tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if i := f(); i >= 0 {
			return i
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("clustertest: timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// freePorts returns n distinct loopback ports nothing listens on right now.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("clustertest: %v", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}
