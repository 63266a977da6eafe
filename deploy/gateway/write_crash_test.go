package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// Environment of the crash child: the NATS URL and the writer's directory.
const (
	envCrashNATS = "EBB_GATEWAY_CRASH_NATS"
	envCrashDir  = "EBB_GATEWAY_CRASH_DIR"
	envCrashIdle = "EBB_GATEWAY_CRASH_IDLE" // the writer's IdleClose, if set
)

// TestWriteCrashChild is the child process of TestWrite_CrashKeepsAcknowledged:
// a gateway with a Writer on the given directory, its address on stdout,
// serving until it is killed. It does nothing in a normal run.
func TestWriteCrashChild(t *testing.T) {
	url, dir := os.Getenv(envCrashNATS), os.Getenv(envCrashDir)
	if url == "" {
		t.Skip("the child of TestWrite_CrashKeepsAcknowledged")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	js := embeddedtest.MustJetStream(t, nc)
	wc := gateway.WriterConfig{Dir: dir, JetStream: js, Conn: nc}
	if v := os.Getenv(envCrashIdle); v != "" {
		if wc.IdleClose, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	w, err := gateway.OpenWriter(context.Background(), wc)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{JetStream: js, Writer: w, WriteWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("addr=http://%s\n", ln.Addr())
	_ = http.Serve(ln, g) // until killed
}

// TestWrite_CrashKeepsAcknowledged: a write answered 202 while JetStream
// cannot take it (EVENTS is missing) is fsynced in the writer's log; the
// server process is killed (SIGKILL) before it could publish; a new
// writer on the same directory publishes it, the projector applies it,
// and the client's retry with the same Idempotency-Key gets the first
// event's outcome: applied once, nothing lost.
func TestWrite_CrashKeepsAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	s := embeddedtest.MustStart(t, func(c *embedded.Config) { c.Sync.Interval = time.Minute })
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	for _, name := range []string{events.StreamChanges, events.StreamReceipts, events.StreamDead} {
		cfgs := events.Streams(events.StreamOptions{})
		for _, c := range cfgs {
			if c.Name == name {
				if _, err := js.CreateStream(t.Context(), c); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	dir := filepath.Join(t.TempDir(), "gateway")

	cmd, base := startCrashChild(t, s.ClientURL(), dir)
	child := &writeEnv{srv: &httptest.Server{URL: base}}
	a := child.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":1}`, "Idempotency-Key", "crash-1").want(t, http.StatusAccepted)
	if a.body.Status != "pending" {
		t.Fatalf("202 body %+v, want pending", a.body)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	// The server comes back with its streams; a new writer on the same
	// directory, and a projector.
	if err := events.EnsureStreams(t.Context(), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	e := &writeEnv{s: s, nc: nc, js: js, dir: dir, view: filepath.Join(t.TempDir(), "view.db")}
	e.startProjector(t)
	e.openWriter(t, 10*time.Second)
	// Published by the new writer on its own, before any retry.
	embeddedtest.WaitFor(t, 10*time.Second, "the acknowledged write is applied", func() bool {
		return e.send(t, "GET", "/v1/acme/docs/todos/t1", "").status == http.StatusOK
	})
	again := e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":1}`, "Idempotency-Key", "crash-1").want(t, http.StatusCreated)
	if again.body.Event != a.body.Event || !again.body.Replayed || again.body.Version != 1 {
		t.Fatalf("retry after the crash: %+v, first %+v", again.body, a.body)
	}
	if n := e.countEvents(t); n != 1 {
		t.Fatalf("EVENTS holds %d events, want 1", n)
	}
}

// startCrashChild starts TestWriteCrashChild on the NATS server at url and
// the writer directory dir, with env added to its environment, and returns
// it with its gateway's base URL. The test's cleanup kills it.
func startCrashChild(t *testing.T, url, dir string, env ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestWriteCrashChild$", "-test.v")
	cmd.Env = append(append(os.Environ(), envCrashNATS+"="+url, envCrashDir+"="+dir), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "addr="); ok {
				addr <- a
			}
		}
	}()
	select {
	case base := <-addr:
		return cmd, base
	case <-time.After(30 * time.Second):
		t.Fatal("the child did not start its gateway")
	}
	return nil, ""
}

// TestWrite_CrashWithClosedLogs: the server process (a child, with a
// 20ms IdleClose) writes once, closes its idle log, reopens it for a
// second write that gets no receipt (the projector is stopped), and is
// killed (SIGKILL). A new writer on the directory publishes the second
// write, retries of both keys answer their first events, and a third
// write after the restart continues the same device's sequence: nothing
// lost, nothing doubled, through the close, the reopen and the crash.
func TestWrite_CrashWithClosedLogs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	s := embeddedtest.MustStart(t, func(c *embedded.Config) { c.Sync.Interval = time.Minute })
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	if err := events.EnsureStreams(t.Context(), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	e := &writeEnv{s: s, nc: nc, js: js, dir: filepath.Join(t.TempDir(), "gateway"), view: filepath.Join(t.TempDir(), "view.db")}
	e.startProjector(t)
	cmd, base := startCrashChild(t, s.ClientURL(), e.dir, envCrashIdle+"=20ms")
	child := &writeEnv{srv: &httptest.Server{URL: base}}
	pid := strconv.Itoa(cmd.Process.Pid)

	a := child.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":1}`, "Idempotency-Key", "k1").want(t, http.StatusCreated)
	embeddedtest.WaitFor(t, 10*time.Second, "the child closes its idle log", func() bool { return openLogFiles(t, pid, e.dir) == 0 })
	e.stop()
	b := child.send(t, "PUT", "/v1/acme/docs/todos/t2", `{"n":2}`, "Idempotency-Key", "k2").want(t, http.StatusAccepted)
	embeddedtest.WaitFor(t, 10*time.Second, "the second write is published", func() bool { return e.countEvents(t) == 2 })
	if n := openLogFiles(t, pid, e.dir); n != 1 {
		t.Fatalf("the child holds %d logs open with a write unsettled, want 1", n)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	e.startProjector(t)
	e.openWriter(t, 10*time.Second)
	embeddedtest.WaitFor(t, 10*time.Second, "the second write is applied", func() bool {
		return e.send(t, "GET", "/v1/acme/docs/todos/t2", "").status == http.StatusOK
	})
	for _, w := range []struct {
		key, doc, body string
		first          answer
	}{{"k1", "t1", `{"n":1}`, a}, {"k2", "t2", `{"n":2}`, b}} {
		again := e.send(t, "PUT", "/v1/acme/docs/todos/"+w.doc, w.body, "Idempotency-Key", w.key).want(t, http.StatusCreated)
		if again.body.Event != w.first.body.Event || !again.body.Replayed {
			t.Fatalf("retry of %s after the crash: %+v, first %+v", w.key, again.body, w.first.body)
		}
	}
	e.send(t, "PUT", "/v1/acme/docs/todos/t3", `{"n":3}`).want(t, http.StatusCreated)
	if n := e.checkWriters(t); n[gateway.DefaultWriteClient] != 3 || len(n) != 1 {
		t.Fatalf("events per identity %v, want 3 of %s", n, gateway.DefaultWriteClient)
	}
}
