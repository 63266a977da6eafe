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
	w, err := gateway.OpenWriter(context.Background(), gateway.WriterConfig{Dir: dir, JetStream: js, Conn: nc})
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

	cmd := exec.Command(os.Args[0], "-test.run", "^TestWriteCrashChild$", "-test.v")
	cmd.Env = append(os.Environ(), envCrashNATS+"="+s.ClientURL(), envCrashDir+"="+dir)
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
	var base string
	select {
	case base = <-addr:
	case <-time.After(30 * time.Second):
		t.Fatal("the child did not start its gateway")
	}
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
