package projection_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// Environment of a cluster node child process (TestHelperClusterNode).
const (
	nodeEnv       = "EBB_TEST_CLUSTER_NODE" // the node's name
	nodePortEnv   = "EBB_TEST_CLUSTER_PORT"
	nodeRouteEnv  = "EBB_TEST_CLUSTER_ROUTE_PORT"
	nodeRoutesEnv = "EBB_TEST_CLUSTER_ROUTES"
	nodeDirEnv    = "EBB_TEST_CLUSTER_DIR"
)

// TestHelperClusterNode is not a test: run as a child process with
// nodeEnv set, it is one node of a JetStream cluster until killed.
func TestHelperClusterNode(t *testing.T) {
	name := os.Getenv(nodeEnv)
	if name == "" {
		t.Skip("helper process")
	}
	port, _ := strconv.Atoi(os.Getenv(nodePortEnv))
	rport, _ := strconv.Atoi(os.Getenv(nodeRouteEnv))
	opts := &server.Options{
		ServerName: name, Host: "127.0.0.1", Port: port,
		JetStream: true, StoreDir: os.Getenv(nodeDirEnv), NoLog: true, NoSigs: true,
		Cluster: server.ClusterOpts{Name: "ebb", Host: "127.0.0.1", Port: rport},
		Routes:  server.RoutesFromStr(os.Getenv(nodeRoutesEnv)),
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	s.WaitForShutdown() // until killed
}

// cluster is a 3-node JetStream cluster on loopback, each node a child
// process (so a test can kill one for real), storage in t.TempDir().
type cluster struct {
	names []string
	urls  []string
	procs map[string]*exec.Cmd
}

func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func mustStartCluster(tb testing.TB) *cluster {
	tb.Helper()
	const n = 3
	ports := freePorts(tb, 2*n)
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[n+i]))
	}
	c := &cluster{procs: map[string]*exec.Cmd{}}
	dir := tb.TempDir()
	for i := range n {
		name := fmt.Sprintf("n%d", i)
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperClusterNode$")
		cmd.Env = append(os.Environ(), nodeEnv+"="+name,
			nodePortEnv+"="+strconv.Itoa(ports[i]), nodeRouteEnv+"="+strconv.Itoa(ports[n+i]),
			nodeRoutesEnv+"="+strings.Join(routes, ","), nodeDirEnv+"="+filepath.Join(dir, name))
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.kill(name) })
		c.names = append(c.names, name)
		c.urls = append(c.urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
		c.procs[name] = cmd
	}
	return c
}

// kill kills node name with SIGKILL and waits for it.
func (c *cluster) kill(name string) {
	cmd := c.procs[name]
	if cmd == nil || cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
}

// freeze stops node name with SIGSTOP: its sockets stay open and it
// answers nothing, as a node cut off by the network or hung would.
func (c *cluster) freeze(tb testing.TB, name string) {
	tb.Helper()
	if err := c.procs[name].Process.Signal(syscall.SIGSTOP); err != nil {
		tb.Fatal(err)
	}
}

// thaw resumes a frozen node (SIGCONT).
func (c *cluster) thaw(tb testing.TB, name string) {
	tb.Helper()
	if err := c.procs[name].Process.Signal(syscall.SIGCONT); err != nil {
		tb.Fatal(err)
	}
}

// connect connects to node i, with the other nodes to reconnect to.
func (c *cluster) connect(tb testing.TB, i int) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	urls := []string{c.urls[i]}
	for j, u := range c.urls {
		if j != i {
			urls = append(urls, u)
		}
	}
	var nc *nats.Conn
	waitFor(tb, 30*time.Second, "a connection to the cluster", func() bool {
		var err error
		nc, err = nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		return err == nil && nc.ConnectedUrl() == c.urls[i]
	})
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// ensureStreams creates ebb's streams R3 once the cluster has a meta leader.
func (c *cluster) ensureStreams(tb testing.TB, js jetstream.JetStream) {
	tb.Helper()
	waitFor(tb, 60*time.Second, "the cluster to create the streams", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return events.EnsureStreams(ctx, js, events.StreamOptions{Replicas: 3}) == nil
	})
}
