package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/cluster/clustertest"
	"github.com/ebbsync/ebb/events"
)

// failoverBound fails the cluster test when a kill stalls synced writes
// longer than this: a stall, not a slow failover. The target (and what
// the test logs) is under 5 s.
const failoverBound = 45 * time.Second

// failoverTarget is issue 14's target from a kill to the next synced write.
// With EBB_STRICT_FAILOVER set the test fails above it; by default it only
// logs the figure (see /work/notes/h7-readme.md for the causes above it).
const failoverTarget = 5 * time.Second

// `ebb serve --nats <3 URLs> --replicas 3` on the 3-node cluster of
// deploy/cluster: the streams are R3; three replicas write while the EVENTS
// stream leader, then the meta leader, then the node serve is connected
// to are killed and restarted; no
// acknowledged write is lost, the replicas converge on the server view, and
// ebb verify agrees. It logs the time from each kill to the next synced
// write.
func TestCluster_R3SurvivesLeaderKills(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node cluster through two leader kills")
	}
	c := clustertest.MustStart(t)
	data := filepath.Join(t.TempDir(), "missing", "data") // --nats creates a missing --data
	ctx, stopServe := context.WithCancel(context.Background())
	defer stopServe()
	stderr := &syncBuffer{}
	m := &Main{Stdout: &bytes.Buffer{}, Stderr: stderr, Getenv: func(string) string { return "" }}
	served := make(chan error, 1)
	go func() {
		served <- m.Run(ctx, []string{"serve", "--data", data, "--nats", c.URLs(), "--replicas", "3",
			"--http-listen", "127.0.0.1:0", "--log-format", "json"})
	}()
	serveStopped := false
	stop := func() {
		if !serveStopped {
			serveStopped = true
			stopServe()
			if err := <-served; err != nil {
				t.Errorf("serve: %v\n%s", err, stderr.String())
			}
		}
	}
	defer stop()
	waitFor(t, 30*time.Second, "serve's ready line", func() bool { return readyURL(stderr.String()) != "" })

	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{events.StreamEvents, events.StreamChanges, events.StreamReceipts, events.StreamDead} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("stream %s has %d replicas, want 3 (--replicas 3)", name, r)
		}
	}

	w := startWriters(t, c.URLs(), 3)
	w.waitSynced(t, time.Now(), 30*time.Second) // warm up: writes flow

	kill := func(what string, node int) {
		t.Helper()
		t.Logf("before the kill: %s", leaders(ctx, c, js))
		logFrom := len(stderr.String())
		killed := time.Now()
		c.Kill(node)
		d := w.waitSynced(t, killed, failoverBound)
		if d > failoverTarget && os.Getenv("EBB_STRICT_FAILOVER") != "" {
			t.Errorf("%s killed: next synced write after %s, target %s", what, d, failoverTarget)
		}
		t.Logf("FAILOVER %s (nats-%d) killed at %s: next synced write after %s", what, node+1, killed.Format("15:04:05.000"), d.Round(time.Millisecond))
		w.logFailed(t)
		logServe(t, stderr.String()[logFrom:])
		logFrom = len(stderr.String())
		c.Restart(node)
		c.WaitMetaLeader(30 * time.Second)
		c.WaitCurrent(30*time.Second, events.StreamEvents, events.StreamChanges, events.StreamReceipts)
		restarted := time.Now()
		d = w.waitSynced(t, restarted, failoverBound)
		t.Logf("FAILOVER %s (nats-%d) restarted: next synced write after %s; %s", what, node+1, d.Round(time.Millisecond), leaders(ctx, c, js))
		w.logFailed(t)
		logServe(t, stderr.String()[logFrom:])
	}
	kill("EVENTS stream leader", c.WaitStreamLeader(events.StreamEvents, 10*time.Second))
	kill("meta leader", c.WaitMetaLeader(10*time.Second))
	kill("serve's node (the one its connection is on)", serveNode(t, c))

	written := w.stop(t)
	if len(written) == 0 {
		t.Fatal("no writes")
	}

	// Nothing acknowledged by a local log is lost: each write is one event in
	// EVENTS, and every replica's view holds every write, synced.
	st, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().State.Msgs; got != uint64(len(written)) {
		t.Errorf("EVENTS holds %d events, the replicas wrote %d", got, len(written))
	}
	for i, r := range w.replicas {
		docs, err := r.List(ctx, "todos", false)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, d := range docs {
			if d.Pending != 0 {
				t.Errorf("replica %d: %s still pending", i, d.ID)
			}
			got[d.ID] = string(d.Fields["n"])
		}
		if len(got) != len(written) {
			t.Errorf("replica %d holds %d documents, want %d", i, len(got), len(written))
		}
		for id, n := range written {
			if got[id] != n {
				t.Errorf("replica %d: %s has n=%s, want %s", i, id, got[id], n)
			}
		}
	}
	w.close(t)

	// The server view agrees with a rebuild from EVENTS.
	stop()
	var out bytes.Buffer
	vm := &Main{Stdout: &out, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
	vctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := vm.Run(vctx, []string{"verify", "--data", data, "--nats", c.URLs()}); err != nil {
		t.Fatalf("verify: %v\n%s", err, out.String())
	}
	if want := fmt.Sprintf("OK: %d documents", len(written)); !strings.Contains(out.String(), want) {
		t.Fatalf("verify: %q, want %q", out.String(), want)
	}
}

// leaders names the nodes leading the meta group, each stream ebb reads
// from, and each stream's consumers (the projector's durable, the
// replicas' ordered ones), for the test log.
func leaders(ctx context.Context, c *clustertest.Cluster, js jetstream.JetStream) string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s := fmt.Sprintf("meta leader nats-%d, serve on %s", c.MetaLeader()+1, serveConn(c))
	for _, name := range []string{events.StreamEvents, events.StreamChanges, events.StreamReceipts} {
		s += fmt.Sprintf("; %s leader nats-%d", name, c.StreamLeader(name)+1)
		st, err := js.Stream(ctx, name)
		if err != nil {
			return s + fmt.Sprintf(": %v", err)
		}
		on := map[string]int{}
		for ci := range st.ListConsumers(ctx).Info() {
			if ci.Cluster != nil {
				if ci.Config.Durable != "" {
					s += fmt.Sprintf(", %s on %s", ci.Name, ci.Cluster.Leader)
				} else {
					on[ci.Cluster.Leader]++
				}
			}
		}
		for srv, n := range on {
			s += fmt.Sprintf(", %d ordered on %s", n, srv)
		}
	}
	return s
}

// writers are replicas that each put a new document, then sync, in a loop.
type writers struct {
	replicas []*consumer.Replica
	conns    []*nats.Conn
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu      sync.Mutex
	synced  []time.Time       // when each synced write was put (its Put returned)
	syncEnd []time.Time       // when its sync returned
	written map[string]string // document id -> its n, every write the local logs acked
	failed  []string          // syncs that failed, for the log
	errs    []error
}

func startWriters(t *testing.T, urls string, n int) *writers {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &writers{cancel: cancel, written: map[string]string{}}
	for i := range n {
		nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.Name(fmt.Sprintf("writer-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		r, err := consumer.OpenReplica(context.Background(), consumer.ReplicaConfig{Dir: filepath.Join(t.TempDir(), "w"), Tenant: "acme", Conn: nc})
		if err != nil {
			t.Fatal(err)
		}
		w.replicas, w.conns = append(w.replicas, r), append(w.conns, nc)
	}
	for i, r := range w.replicas {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.loop(ctx, i, r)
		}()
	}
	return w
}

func (w *writers) loop(ctx context.Context, i int, r *consumer.Replica) {
	for n := 0; ctx.Err() == nil; n++ {
		id := fmt.Sprintf("w%d-%04d", i, n)
		val := fmt.Sprint(n)
		if _, err := r.Put(ctx, "todos", id, events.Fields{"n": json.RawMessage(val)}); err != nil {
			if ctx.Err() == nil {
				w.fail(fmt.Errorf("writer %d: put %s: %w", i, id, err))
			}
			return
		}
		put := time.Now()
		w.mu.Lock()
		w.written[id] = val
		w.mu.Unlock()
		// Short, so a sync stuck on a dead leader gives way to a new
		// write soon: the measured stall is the cluster's and ebb's, not
		// this timeout's.
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := r.Sync(sctx)
		cancel()
		w.mu.Lock()
		if err == nil {
			w.synced, w.syncEnd = append(w.synced, put), append(w.syncEnd, time.Now())
		} else if ctx.Err() == nil {
			w.failed = append(w.failed, fmt.Sprintf("writer %d (on %s): sync of %s put %s failed after %s: %v",
				i, w.conns[i].ConnectedServerName(), id, put.Format("15:04:05.000"), time.Since(put).Round(time.Millisecond), err))
		}
		w.mu.Unlock()
		// A failed sync leaves the write pending in the local log; the
		// next sync pushes it.
	}
}

// logServe logs serve's warnings and errors in logs (JSON lines).
func logServe(t *testing.T, logs string) {
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			Level string `json:"level"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level != "INFO" && rec.Level != "DEBUG" {
			t.Logf("serve: %s", line)
		}
	}
}

// logFailed logs the syncs that failed since the last call.
func (w *writers) logFailed(t *testing.T) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.failed {
		t.Log(f)
	}
	w.failed = nil
}

// serveConn names the node serve's connection is on.
func serveConn(c *clustertest.Cluster) string {
	for i := range clustertest.Size {
		s := c.Node(i)
		if s == nil {
			continue
		}
		cz, err := s.Connz(&server.ConnzOptions{})
		if err != nil {
			continue
		}
		for _, ci := range cz.Conns {
			if ci.Name == "ebb-serve" {
				return s.Name()
			}
		}
	}
	return "?"
}

// serveNode is the index of the node serve's connection is on.
func serveNode(t *testing.T, c *clustertest.Cluster) int {
	t.Helper()
	name := serveConn(c)
	for i := range clustertest.Size {
		if s := c.Node(i); s != nil && s.Name() == name {
			return i
		}
	}
	t.Fatalf("no node holds serve's connection (%s)", name)
	return -1
}

func (w *writers) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, err)
}

// waitSynced waits for a write put at or after since to be synced, and
// returns the time from since to the end of that sync.
func (w *writers) waitSynced(t *testing.T, since time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	var d time.Duration
	waitFor(t, timeout, fmt.Sprintf("a write put after %s to be synced", since.Format("15:04:05.000")), func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for i, p := range w.synced {
			if !p.Before(since) {
				d = w.syncEnd[i].Sub(since)
				return true
			}
		}
		return false
	})
	return d
}

// stop ends the write loops, syncs every replica until nothing is pending,
// and returns every write.
func (w *writers) stop(t *testing.T) map[string]string {
	t.Helper()
	w.cancel()
	w.wg.Wait()
	for _, err := range w.errs {
		t.Error(err)
	}
	for i, r := range w.replicas {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		// A second sync pulls the changes of writes the others synced
		// after this one's first.
		for range 2 {
			if _, err := r.Sync(ctx); err != nil {
				t.Fatalf("final sync of replica %d: %v", i, err)
			}
		}
		cancel()
	}
	for i, r := range w.replicas {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if _, err := r.Sync(ctx); err != nil {
			t.Fatalf("last sync of replica %d: %v", i, err)
		}
		cancel()
	}
	return w.written
}

func (w *writers) close(t *testing.T) {
	for _, r := range w.replicas {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}
	for _, nc := range w.conns {
		nc.Close()
	}
}
