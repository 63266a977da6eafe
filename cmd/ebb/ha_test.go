package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/pgtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// --partitions with a bbolt view is refused before anything starts: each
// server would apply its partitions into a view of its own. The keys are
// in the config file, the environment and the flags.
func TestServe_PartitionsNeedSharedView(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"bbolt view", nil, []string{"--partitions", "4"}, "--view postgres://"},
		{"bbolt view from the environment", map[string]string{"EBB_SERVE_PROJECTOR_PARTITIONS": "2"}, nil, "--view postgres://"},
		{"too many", nil, []string{"--partitions", "300", "--view", "postgres://u@127.0.0.1:1/db"}, "want 0 to 256"},
		{"lease TTL without partitions", nil, []string{"--lease-ttl", "2s", "--view", "postgres://u@127.0.0.1:1/db"}, "with --partitions"},
		{"lease TTL too short", nil, []string{"--partitions", "2", "--lease-ttl", "100ms", "--view", "postgres://u@127.0.0.1:1/db"}, "want at least 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"serve", "--data", t.TempDir(), "--http-listen", "127.0.0.1:0"}, tt.args...)
			_, stderr, code := runIn(t, tt.env, args...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Fatalf("serve %v: exit %d, %q; want exit 2 naming %q", tt.args, code, stderr, tt.want)
			}
		})
	}
	cfg := writeConfig(t, "view:\n  postgres_url: postgres://u@127.0.0.1:1/db\nprojector:\n  partitions: 4\n  lease_ttl: 3s\n")
	c := printConfigOf(t, nil, "--config", cfg)
	if c.Projector.Partitions != 4 || time.Duration(c.Projector.LeaseTTL) != 3*time.Second {
		t.Fatalf("projector settings from the file: %+v", c.Projector)
	}
	c = printConfigOf(t, map[string]string{"EBB_SERVE_PROJECTOR_LEASE_TTL": "2s"}, "--config", cfg, "--partitions", "8")
	if c.Projector.Partitions != 8 || time.Duration(c.Projector.LeaseTTL) != 2*time.Second {
		t.Fatalf("projector settings from the environment and flags: %+v", c.Projector)
	}
}

// haLeaseTTL is the HA test's lease TTL: short, to keep the test short;
// a takeover takes about LeaseTTL and a quarter. EBB_HA_LEASE_TTL sets
// another, to measure by hand (EBB_HA_LEASE_TTL=5s: serve's default).
var haLeaseTTL = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("EBB_HA_LEASE_TTL")); err == nil && d >= projection.MinLeaseTTL {
		return d
	}
	return 2 * time.Second
}()

// haServer is one `ebb serve` process of the HA test.
type haServer struct {
	name string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

func startHAServer(t *testing.T, bin, name, natsURL, view string) *haServer {
	t.Helper()
	s := &haServer{name: name, logs: &syncBuffer{}, done: make(chan error, 1)}
	s.cmd = exec.Command(bin, "serve", "--data", filepath.Join(t.TempDir(), name), "--nats", natsURL, "--view", view,
		"--partitions", "4", "--lease-ttl", haLeaseTTL.String(), "--http-listen", "127.0.0.1:0", "--log-format", "json")
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() { s.stop(t) })
	waitFor(t, 30*time.Second, name+"'s ready line", func() bool {
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("%s exited: %v\n%s", name, err, s.logs.String())
		default:
		}
		return readyURL(s.logs.String()) != ""
	})
	return s
}

// leases counts the leases s logged taking.
func (s *haServer) leases() int {
	return strings.Count(s.logs.String(), `"lease taken: applying the partition"`)
}

// holder is the name s holds its leases under, from its group's log line.
func (s *haServer) holder() string {
	for _, line := range strings.Split(s.logs.String(), "\n") {
		var rec struct {
			Msg    string `json:"msg"`
			Holder string `json:"holder"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "projector group started" {
			return rec.Holder
		}
	}
	return ""
}

// holdsAll reports whether s holds the lease of each of the 4 partitions
// (the KV bucket's keys, as `nats kv get ebb_projector_leases` shows).
func (s *haServer) holdsAll(ctx context.Context, t *testing.T, kv jetstream.KeyValue) bool {
	t.Helper()
	h := s.holder()
	if h == "" {
		t.Fatalf("%s logged no holder:\n%s", s.name, s.logs.String())
	}
	for i := range 4 {
		e, err := kv.Get(ctx, fmt.Sprintf("partition.4.%d", i))
		if err != nil || string(e.Value()) != h {
			return false
		}
	}
	return true
}

func (s *haServer) kill(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.done
	s.done <- nil
}

// stop ends s with SIGTERM (a clean shutdown: exit 0), unless it is gone.
func (s *haServer) stop(t *testing.T) {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- nil
		if err != nil {
			t.Errorf("%s exited with %v:\n%s", s.name, err, s.logs.String())
		}
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		t.Errorf("%s did not stop on SIGTERM", s.name)
	}
}

// haPut is one write the writers' local logs acknowledged.
type haPut struct {
	id string
	k  int // the document's k-th write: field n, and its version once applied
	at time.Time
}

// haWriters are replicas that each rewrite their own few documents in
// turn, syncing after each write.
type haWriters struct {
	replicas []*consumer.Replica
	conns    []*nats.Conn
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu   sync.Mutex
	puts []haPut
	errs []error
}

const haDocsPerWriter = 4

func startHAWriters(t *testing.T, natsURL string, n int) *haWriters {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &haWriters{cancel: cancel}
	t.Cleanup(w.close)
	for i := range n {
		nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.Name(fmt.Sprintf("writer-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		w.conns = append(w.conns, nc)
		r, err := consumer.OpenReplica(context.Background(), consumer.ReplicaConfig{Dir: t.TempDir(), Tenant: "acme", Conn: nc})
		if err != nil {
			t.Fatal(err)
		}
		w.replicas = append(w.replicas, r)
	}
	for i, r := range w.replicas {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			counts := make([]int, haDocsPerWriter)
			for n := 0; ctx.Err() == nil; n++ {
				d := n % haDocsPerWriter
				id := fmt.Sprintf("w%d-d%d", i, d)
				k := counts[d] + 1
				if _, err := r.Put(ctx, "todos", id, events.Fields{"n": json.RawMessage(strconv.Itoa(k))}); err != nil {
					if ctx.Err() == nil {
						w.fail(fmt.Errorf("writer %d: put %s: %w", i, id, err))
					}
					return
				}
				counts[d] = k
				w.mu.Lock()
				w.puts = append(w.puts, haPut{id: id, k: k, at: time.Now()})
				w.mu.Unlock()
				// A sync that fails (a partition between holders) leaves the
				// write in the local log; the next one pushes it.
				sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				_, _ = r.Sync(sctx)
				cancel()
			}
		}()
	}
	return w
}

func (w *haWriters) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, err)
}

// firstAfter returns the first write put after t0, waiting for one.
func (w *haWriters) firstAfter(t *testing.T, t0 time.Time) haPut {
	t.Helper()
	var p haPut
	waitFor(t, 10*time.Second, "a write after "+t0.Format("15:04:05.000"), func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, q := range w.puts {
			if q.at.After(t0) {
				p = q
				return true
			}
		}
		return false
	})
	return p
}

// stop ends the writes and syncs every replica until each has pushed its
// writes and pulled everyone's; it returns, per document, how many writes
// its local log acknowledged.
func (w *haWriters) stop(t *testing.T) map[string]int {
	t.Helper()
	w.cancel()
	w.wg.Wait()
	for _, err := range w.errs {
		t.Error(err)
	}
	for round := range 2 {
		for i, r := range w.replicas {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if _, err := r.Sync(ctx); err != nil {
				t.Fatalf("final sync %d of replica %d: %v", round, i, err)
			}
			cancel()
		}
	}
	want := map[string]int{}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.puts {
		want[p.id] = max(want[p.id], p.k)
	}
	return want
}

func (w *haWriters) close() {
	w.cancel()
	w.wg.Wait()
	for _, r := range w.replicas {
		r.Close()
	}
	for _, nc := range w.conns {
		nc.Close()
	}
}

// viewVersion returns the version of document id in the PostgreSQL view
// (schema ebb), 0 when absent.
func viewVersion(ctx context.Context, t *testing.T, conn *pgx.Conn, id string) uint64 {
	t.Helper()
	var v int64
	err := conn.QueryRow(ctx, `SELECT version FROM ebb.docs WHERE tenant = 'acme' AND collection = 'todos' AND doc = $1`, id).Scan(&v)
	if err != nil && err != pgx.ErrNoRows {
		t.Fatal(err)
	}
	return uint64(v)
}

// readStream reads every message of stream through an ordered consumer.
func readStream(ctx context.Context, t *testing.T, js jetstream.JetStream, stream string) []jetstream.Msg {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	n := st.CachedInfo().State.Msgs
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for uint64(len(out)) < n {
		b, err := c.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range b.Messages() {
			out = append(out, m)
			got++
		}
		if b.Error() != nil || got == 0 {
			t.Fatalf("read %s: %d of %d messages: %v", stream, len(out), n, b.Error())
		}
	}
	return out
}

// Two `ebb serve` processes on one NATS server and one PostgreSQL view,
// 4 partitions: the first holds every lease, the second stands by; writers
// write throughout; the first is killed (SIGKILL: it can neither renew nor
// release its leases) and the second takes over. The test logs the time
// from the kill to the next write applied, and checks that no event was
// applied twice or skipped: one receipt per event in EVENTS, each
// document's versions 1, 2, 3... with no gap, every acknowledged write in
// the view, every replica equal to the view, and the view equal to a
// rebuild from EVENTS.
func TestServe_HATakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs two servers, a PostgreSQL and a NATS server")
	}
	bin, err := buildEbb()
	if err != nil {
		t.Fatal(err)
	}
	pg := pgtest.MustStart(t)
	ns := embeddedtest.MustStart(t)
	ctx := context.Background()

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	a := startHAServer(t, bin, "a", ns.ClientURL(), pg.URL)
	kv, err := js.KeyValue(ctx, projection.DefaultLeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a holding every lease", func() bool { return a.holdsAll(ctx, t, kv) })
	b := startHAServer(t, bin, "b", ns.ClientURL(), pg.URL)
	w := startHAWriters(t, ns.ClientURL(), 3)
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	// Writes applied by a, then the kill.
	first := w.firstAfter(t, time.Now())
	waitFor(t, 30*time.Second, "a applying writes", func() bool { return viewVersion(ctx, t, conn, first.id) >= uint64(first.k) })
	waitFor(t, 30*time.Second, "some writes", func() bool { w.mu.Lock(); defer w.mu.Unlock(); return len(w.puts) >= 30 })
	if n := b.leases(); n != 0 {
		t.Fatalf("b took %d leases while a held them", n)
	}
	killed := time.Now()
	a.kill(t)
	next := w.firstAfter(t, killed)
	waitFor(t, 30*time.Second, "a write put after the kill applied", func() bool { return viewVersion(ctx, t, conn, next.id) >= uint64(next.k) })
	applied := time.Since(killed)
	waitFor(t, 30*time.Second, "b holding every lease", func() bool { return b.holdsAll(ctx, t, kv) })
	held := time.Since(killed)
	t.Logf("takeover: SIGKILL to the next write applied %s, to b holding all 4 partitions <= %s (lease TTL %s)",
		applied.Round(time.Millisecond), held.Round(time.Millisecond), haLeaseTTL)
	if bound := haLeaseTTL + haLeaseTTL/4 + 5*time.Second; applied > bound {
		t.Errorf("takeover took %s, above %s", applied, bound)
	}
	// Writes applied by b.
	after := w.firstAfter(t, time.Now().Add(time.Second))
	waitFor(t, 30*time.Second, "b applying writes", func() bool { return viewVersion(ctx, t, conn, after.id) >= uint64(after.k) })
	want := w.stop(t)

	// Every acknowledged write applied exactly once: the view's version
	// of each document is its count of writes, and its field n the last.
	waitFor(t, 30*time.Second, "every write in the view", func() bool {
		for id, k := range want {
			if viewVersion(ctx, t, conn, id) < uint64(k) {
				return false
			}
		}
		return true
	})
	total := 0
	for id, k := range want {
		total += k
		var v int64
		var n string
		if err := conn.QueryRow(ctx, `SELECT version, fields->>'n' FROM ebb.docs WHERE tenant = 'acme' AND doc = $1`, id).Scan(&v, &n); err != nil {
			t.Fatal(err)
		}
		if v != int64(k) || n != strconv.Itoa(k) {
			t.Errorf("%s: version %d, n=%s in the view; %d writes acknowledged", id, v, n, k)
		}
	}

	// One receipt per event, versions rising by one per document.
	evs := readStream(ctx, t, js, events.StreamEvents)
	rcpts := readStream(ctx, t, js, events.StreamReceipts)
	if len(evs) != total {
		t.Errorf("EVENTS holds %d events, the writers acknowledged %d writes", len(evs), total)
	}
	perEvent := map[string]int{}
	versions := map[string][]uint64{}
	for _, m := range rcpts {
		r, err := events.DecodeReceipt(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		perEvent[r.Event]++
		if r.Outcome != events.OutcomeApplied {
			t.Errorf("event %s on %s: %s (%s)", r.Event, r.Doc, r.Outcome, r.Reason)
		}
		versions[r.Doc] = append(versions[r.Doc], r.Version)
	}
	for _, m := range evs {
		if id := m.Headers().Get(nats.MsgIdHdr); perEvent[id] != 1 {
			t.Errorf("event %s: %d receipts, want 1", id, perEvent[id])
		}
	}
	if len(perEvent) != len(evs) {
		t.Errorf("receipts for %d events, EVENTS holds %d", len(perEvent), len(evs))
	}
	for id, vs := range versions {
		seen := map[uint64]bool{}
		for _, v := range vs {
			seen[v] = true
		}
		if len(seen) != len(vs) || len(vs) != want[id] {
			t.Errorf("%s: receipt versions %v, want 1..%d once each", id, vs, want[id])
			continue
		}
		for v := uint64(1); v <= uint64(want[id]); v++ {
			if !seen[v] {
				t.Errorf("%s: no receipt at version %d: %v", id, v, vs)
			}
		}
	}

	// Convergence: every replica equals the view.
	for i, r := range w.replicas {
		docs, err := r.List(ctx, "todos", false)
		if err != nil {
			t.Fatal(err)
		}
		if len(docs) != len(want) {
			t.Errorf("replica %d holds %d documents, the view %d", i, len(docs), len(want))
		}
		for _, d := range docs {
			if d.Version != uint64(want[d.ID]) || string(d.Fields["n"]) != strconv.Itoa(want[d.ID]) || d.Pending != 0 {
				t.Errorf("replica %d: %s at v%d n=%s pending %d; the view has v%d", i, d.ID, d.Version, d.Fields["n"], d.Pending, want[d.ID])
			}
		}
	}

	// Determinism: the view equals a rebuild from EVENTS, partition by
	// partition: `ebb verify`, once every server is stopped.
	b.stop(t)
	out, err := exec.Command(bin, "verify", "--json", "--data", t.TempDir(), "--nats", ns.ClientURL(), "--view", pg.URL).CombinedOutput()
	if err != nil {
		t.Fatalf("ebb verify on the partitioned view: %v: %s", err, strings.TrimSpace(string(out)))
	}
	var vr struct {
		OK         bool     `json:"ok"`
		Docs       int      `json:"docs"`
		LiveHash   string   `json:"live_hash"`
		Partitions []uint64 `json:"partitions"`
	}
	if err := json.Unmarshal(out, &vr); err != nil {
		t.Fatalf("ebb verify --json: %v: %s", err, out)
	}
	last, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if !vr.OK || vr.Docs != len(want) || len(vr.Partitions) != 4 {
		t.Fatalf("ebb verify: %s; want ok, %d documents, 4 partitions", out, len(want))
	}
	for i, cp := range vr.Partitions {
		if cp != last.CachedInfo().State.LastSeq {
			t.Errorf("ebb verify: partition %d replayed up to %d, EVENTS ends at %d", i, cp, last.CachedInfo().State.LastSeq)
		}
	}
	t.Logf("%d events, %d documents; ebb verify: view hash %s equals the rebuild's, partitions %v", len(evs), vr.Docs, vr.LiveHash[:12], vr.Partitions)
}
