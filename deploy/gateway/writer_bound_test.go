package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// openLogFiles is how many write logs (".db" files under dir) process
// pid ("self" for this one) holds open, read from /proc/<pid>/fd. The
// test is skipped where there is no /proc.
func openLogFiles(t *testing.T, pid, dir string) int {
	t.Helper()
	fds, err := os.ReadDir(filepath.Join("/proc", pid, "fd"))
	if err != nil {
		t.Skipf("no /proc to count open files: %v", err)
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc", pid, "fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) && strings.HasSuffix(target, ".db") {
			n++
		}
	}
	return n
}

// userName is the i-th user of newUsersWriteEnv.
func userName(i int) string { return fmt.Sprintf("u%02d", i) }

// newUsersWriteEnv is newWriteEnv with n client users of tenant acme
// (userName(i), password userName(i)+"-pw"), each its own writing
// identity, and the writer configured by wcfg.
func newUsersWriteEnv(t *testing.T, n int, withProjector bool, wait time.Duration, wcfg func(*gateway.WriterConfig)) *writeEnv {
	t.Helper()
	var b strings.Builder
	b.WriteString("users:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: %s, password: %s-pw, tenant: acme, role: client}\n", userName(i), userName(i))
	}
	users, err := auth.Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	s := embeddedtest.MustStart(t, func(c *embedded.Config) { c.Sync.Interval = time.Minute })
	e := &writeEnv{s: s, dir: filepath.Join(t.TempDir(), "gateway"), view: filepath.Join(t.TempDir(), "view.db"), users: users, wcfg: wcfg}
	e.nc = embeddedtest.MustConnect(t, s)
	e.js = embeddedtest.MustJetStream(t, e.nc)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, e.js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if withProjector {
		e.startProjector(t)
	}
	e.openWriter(t, wait)
	return e
}

// eventsIn returns every event in EVENTS, in stream order.
func (e *writeEnv) eventsIn(t *testing.T) []*events.Event {
	t.Helper()
	st, err := e.js.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []*events.Event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := events.DecodeEvent(m.Data, events.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// checkWriters checks that every writing identity's events in EVENTS
// are one device numbered 1, 2, 3... with no gap or repeat, and returns
// how many each identity wrote.
func (e *writeEnv) checkWriters(t *testing.T) map[string]int {
	t.Helper()
	device := map[string]string{}
	n := map[string]int{}
	for _, ev := range e.eventsIn(t) {
		if d, ok := device[ev.Client]; ok && d != ev.Device {
			t.Errorf("%s wrote as device %s after %s: its log did not resume", ev.Client, ev.Device, d)
		}
		device[ev.Client] = ev.Device
		n[ev.Client]++
		if ev.Seq != uint64(n[ev.Client]) {
			t.Errorf("%s's event %s has sequence %d, want %d", ev.Client, ev.ID, ev.Seq, n[ev.Client])
		}
	}
	return n
}

// TestWriter_ManyIdentitiesBoundedOpenLogs: 12 identities write through a
// Writer bounded to 3 open logs (and no idle closing): after every write
// at most 3 log files are open and the goroutines do not grow with the
// identities; the first identity's log, closed to make room, reopens
// where it was: its next event is sequence 2 of the same device, and a
// retry with its first Idempotency-Key answers the first event, written
// once.
func TestWriter_ManyIdentitiesBoundedOpenLogs(t *testing.T) {
	const identities, bound = 12, 3
	e := newUsersWriteEnv(t, identities, true, 10*time.Second, func(c *gateway.WriterConfig) {
		c.MaxOpenLogs, c.IdleClose = bound, -1
	})
	first := map[string]answer{}
	base := 0
	for i := range identities {
		if i == bound {
			base = runtime.NumGoroutine() // with the bound's logs open
		}
		u := userName(i)
		first[u] = e.send(t, "PUT", "/v1/acme/docs/todos/"+u, `{"n":1}`, "user", u, "Idempotency-Key", "k-"+u).want(t, http.StatusCreated)
		if n := openLogFiles(t, "self", e.dir); n > bound {
			t.Fatalf("after %d identities wrote, %d write logs are open, want at most %d", i+1, n, bound)
		}
	}
	// Each open log holds a few goroutines (its publisher's, its receipts
	// consumer's here and in the server): once the bound's logs are open,
	// more identities add none.
	if grown := runtime.NumGoroutine() - base; grown > 10 {
		t.Errorf("goroutines grew by %d from %d to %d identities under a bound of %d logs", grown, bound, identities, bound)
	}

	u := userName(0)
	again := e.send(t, "PUT", "/v1/acme/docs/todos/"+u, `{"n":1}`, "user", u, "Idempotency-Key", "k-"+u).want(t, http.StatusCreated)
	if !again.body.Replayed || again.body.Event != first[u].body.Event {
		t.Fatalf("retry of %s's first write after its log was closed: %+v, first %+v", u, again.body, first[u].body)
	}
	next := e.send(t, "PATCH", "/v1/acme/docs/todos/"+u, `{"n":2}`, "user", u, "If-Match", `"1"`).want(t, http.StatusOK)
	if next.body.Version != 2 {
		t.Fatalf("second write of %s: %+v", u, next.body)
	}
	if got := e.send(t, "GET", "/v1/acme/writes/"+first[userName(1)].body.Event, "", "user", userName(1)).want(t, http.StatusOK); got.body.Status != "applied" {
		t.Fatalf("GET of %s's write from its closed log: %+v", userName(1), got.body)
	}
	n := e.checkWriters(t)
	if n[u] != 2 || len(n) != identities {
		t.Fatalf("events per identity %v, want 2 of %s and 1 of each other", n, u)
	}
}

// TestWriter_IdleLogsClosed: logs idle for IdleClose with everything
// settled are closed (no file left open), and the next request of their
// identity reopens them where they were.
func TestWriter_IdleLogsClosed(t *testing.T) {
	e := newUsersWriteEnv(t, 3, true, 10*time.Second, func(c *gateway.WriterConfig) { c.IdleClose = 20 * time.Millisecond })
	for i := range 3 {
		e.send(t, "PUT", "/v1/acme/docs/todos/"+userName(i), `{"n":1}`, "user", userName(i)).want(t, http.StatusCreated)
	}
	embeddedtest.WaitFor(t, 10*time.Second, "the idle logs are closed", func() bool { return openLogFiles(t, "self", e.dir) == 0 })
	e.send(t, "PATCH", "/v1/acme/docs/todos/"+userName(2), `{"n":2}`, "user", userName(2), "If-Match", `"1"`).want(t, http.StatusOK)
	if n := e.checkWriters(t); n[userName(2)] != 2 {
		t.Fatalf("events per identity %v", n)
	}
}

// TestWriter_FullOfUnsettledRefusesLoudly: with the bound reached by logs
// whose writes have no receipt yet (no projector runs), none is closed,
// neither to make room nor for idleness, and a new identity's write is
// refused with 503 and Retry-After, nothing written, logged and counted
// (ebb.gateway.writer.refused). Once the receipts come, the same request
// is accepted, and the first write was applied once.
func TestWriter_FullOfUnsettledRefusesLoudly(t *testing.T) {
	logs := &embeddedtest.Buffer{}
	reader := sdkmetric.NewManualReader()
	e := newUsersWriteEnv(t, 2, false, 50*time.Millisecond, func(c *gateway.WriterConfig) {
		c.MaxOpenLogs, c.IdleClose = 1, 10*time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	})
	first := e.send(t, "PUT", "/v1/acme/docs/todos/a", `{"n":1}`, "user", userName(0), "Idempotency-Key", "a").want(t, http.StatusAccepted)
	embeddedtest.WaitFor(t, 10*time.Second, "the first write is published", func() bool { return e.countEvents(t) == 1 })
	// The reaper has judged the log idle past IdleClose, and kept it.
	embeddedtest.WaitFor(t, 10*time.Second, "a reaper turn past IdleClose of the first log", func() bool {
		open, reaped := e.w.ReapedPast("acme", userName(0))
		return !open || reaped
	})
	if open, _ := e.w.ReapedPast("acme", userName(0)); !open {
		t.Fatal("the reaper closed a log whose write has no receipt")
	}
	refused := e.send(t, "PUT", "/v1/acme/docs/todos/b", `{"n":1}`, "user", userName(1), "Idempotency-Key", "b").want(t, http.StatusServiceUnavailable)
	if refused.header.Get("Retry-After") == "" || !strings.Contains(refused.raw, "MaxOpenLogs 1") {
		t.Fatalf("refusal: Retry-After %q, body %s", refused.header.Get("Retry-After"), refused.raw)
	}
	if n := openLogFiles(t, "self", e.dir); n != 1 {
		t.Fatalf("%d logs open, want the unsettled one", n)
	}
	if !strings.Contains(logs.String(), "request refused") {
		t.Fatalf("no log line for the refusal:\n%s", logs.String())
	}
	if n := counterValue(t, reader, "ebb.gateway.writer.refused"); n != 1 {
		t.Fatalf("ebb.gateway.writer.refused = %d, want 1", n)
	}
	if n := e.countEvents(t); n != 1 {
		t.Fatalf("EVENTS holds %d events after the refusal, want 1", n)
	}

	e.startProjector(t)
	embeddedtest.WaitFor(t, 10*time.Second, "the first write is settled and its log closed", func() bool {
		return openLogFiles(t, "self", e.dir) == 0
	})
	if a := e.send(t, "PUT", "/v1/acme/docs/todos/b", `{"n":1}`, "user", userName(1), "Idempotency-Key", "b"); a.status != http.StatusCreated && a.status != http.StatusAccepted {
		t.Fatalf("the refused write once the first settled: %d %s", a.status, a.raw)
	}
	again := e.send(t, "PUT", "/v1/acme/docs/todos/a", `{"n":1}`, "user", userName(0), "Idempotency-Key", "a")
	if again.body.Event != first.body.Event || !again.body.Replayed {
		t.Fatalf("retry of the first write: %+v, first %+v", again.body, first.body)
	}
	embeddedtest.WaitFor(t, 10*time.Second, "both writes are in EVENTS", func() bool { return e.countEvents(t) == 2 })
	e.checkWriters(t)
}

// counterValue is the sum of the int64 counter name's points in reader.
func counterValue(t *testing.T, reader *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == name {
				for _, p := range s.DataPoints {
					n += p.Value
				}
			}
		}
	}
	return n
}
