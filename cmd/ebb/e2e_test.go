package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/pgtest"
)

// The end-to-end test builds the real binary and runs README's quickstart
// with it: a server, two replicas, offline edits, conflicts under manual,
// lww and merge, and a resolution.

// buildEbb builds the ebb binary once per test run.
var buildEbb = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "ebb-e2e-bin-*")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "ebb")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// freePort returns a loopback port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// e2e runs ebb commands against one data layout.
type e2e struct {
	t       *testing.T
	bin     string
	dir     string
	natsURL string
	port    int
	serve   *exec.Cmd
	logs    *syncBuffer
	// view, when set, is serve's and verify's --view (a PostgreSQL URL).
	view string
}

func newE2E(t *testing.T) *e2e {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := buildEbb()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	e := &e2e{t: t, bin: bin, dir: t.TempDir(), port: port, natsURL: fmt.Sprintf("nats://127.0.0.1:%d", port)}
	t.Cleanup(e.stopServer)
	return e
}

// startServer runs `ebb serve` with args and waits for its ready line.
func (e *e2e) startServer(args ...string) {
	e.t.Helper()
	e.logs = &syncBuffer{}
	argv := []string{"serve", "--data", filepath.Join(e.dir, "server"),
		"--nats-listen", fmt.Sprintf("127.0.0.1:%d", e.port), "--http-listen", "127.0.0.1:0", "--log-format", "json"}
	if e.view != "" {
		argv = append(argv, "--view", e.view)
	}
	cmd := exec.Command(e.bin, append(argv, args...)...)
	cmd.Stderr = e.logs
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.serve = cmd
	deadline := time.Now().Add(30 * time.Second)
	for readyURL(e.logs.String()) == "" {
		if time.Now().After(deadline) {
			e.t.Fatalf("server not ready after 30s:\n%s", e.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopServer sends SIGTERM and checks the server exits 0.
func (e *e2e) stopServer() {
	if e.serve == nil {
		return
	}
	cmd := e.serve
	e.serve = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			e.t.Errorf("ebb serve exited with %v:\n%s", err, e.logs.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		e.t.Errorf("ebb serve did not stop on SIGTERM")
	}
}

// run runs a client command as replica `who` and returns stdout, stderr and
// the exit code.
func (e *e2e) run(who string, args ...string) (string, string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = append(os.Environ(), "EBB_DATA="+filepath.Join(e.dir, who), "EBB_NATS="+e.natsURL, "EBB_TENANT=acme")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// ok runs a command that must succeed and print want (a substring).
func (e *e2e) ok(who, want string, args ...string) string {
	e.t.Helper()
	out, errOut, code := e.run(who, args...)
	if code != 0 {
		e.t.Fatalf("%s: ebb %s: exit %d\nstdout: %s\nstderr: %s", who, strings.Join(args, " "), code, out, errOut)
	}
	if !strings.Contains(out, want) {
		e.t.Fatalf("%s: ebb %s: stdout %q does not contain %q", who, strings.Join(args, " "), out, want)
	}
	return out
}

// doc reads a document with `ebb get --json`.
func (e *e2e) doc(who, coll, id string) docRecord {
	e.t.Helper()
	out := e.ok(who, "", "get", "--json", coll, id)
	var rec docRecord
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		e.t.Fatalf("get --json: %v: %s", err, out)
	}
	return rec
}

func field(rec docRecord, name string) string { return string(rec.Doc[name]) }

func TestE2E_Quickstart(t *testing.T) { quickstart(t, newE2E(t)) }

// TestE2E_QuickstartOnPostgres runs the README's quickstart with the view in
// a throwaway PostgreSQL (`ebb serve --view postgres://...`).
func TestE2E_QuickstartOnPostgres(t *testing.T) {
	e := newE2E(t)
	pg := pgtest.MustStart(t)
	e.view = pg.URL
	quickstart(t, e)
}

func quickstart(t *testing.T, e *e2e) {
	e.startServer("--policy", "todos=manual", "--policy", "notes=merge")

	// Both replicas online: alice writes, bob syncs and sees it.
	e.ok("alice", "put todos/t1: synced", "put", "todos", "t1", `{"title":"milk","done":false}`)
	e.ok("alice", "put notes/n1: synced", "put", "notes", "n1", `{"text":"shopping","colour":"white"}`)
	e.ok("alice", "put lists/l1: synced", "put", "lists", "l1", `{"name":"groceries"}`)
	e.ok("bob", "pulled 3", "sync")
	if got := field(e.doc("bob", "todos", "t1"), "title"); got != `"milk"` {
		t.Fatalf("bob's t1 title = %s", got)
	}

	// The server goes away; both edit the same documents offline.
	e.stopServer()
	e.ok("alice", "queued, offline", "patch", "todos", "t1", `{"title":"oat milk"}`)
	e.ok("bob", "queued, offline", "patch", "todos", "t1", `{"title":"soy milk"}`)
	e.ok("alice", "queued, offline", "patch", "notes", "n1", `{"text":"shopping list"}`)
	e.ok("bob", "queued, offline", "patch", "notes", "n1", `{"colour":"yellow"}`)
	e.ok("alice", "queued, offline", "put", "lists", "l1", `{"name":"groceries (alice)"}`)
	e.ok("bob", "queued, offline", "put", "lists", "l1", `{"name":"groceries (bob)"}`)
	// Offline reads show offline writes.
	if rec := e.doc("bob", "todos", "t1"); field(rec, "title") != `"soy milk"` || rec.Pending != 1 {
		t.Fatalf("bob offline t1 = %+v", rec)
	}
	if _, errOut, code := e.run("bob", "sync", "--timeout", "2s"); code == 0 || !strings.Contains(errOut, "unreachable") {
		t.Fatalf("offline sync: exit %d, stderr %q", code, errOut)
	}

	// Back online: alice syncs first, then bob, then alice again.
	e.startServer("--policy", "todos=manual", "--policy", "notes=merge")
	e.ok("alice", "pushed 3", "sync")
	e.ok("bob", "conflicts 1", "sync")
	e.ok("alice", "", "sync")

	// manual: bob's stale edit is kept as a conflict; the value is alice's meanwhile.
	conf := e.ok("bob", "todos/t1: conflict", "conflicts")
	if !strings.Contains(conf, `"soy milk"`) || !strings.Contains(conf, `"oat milk"`) {
		t.Fatalf("conflicts must show both values:\n%s", conf)
	}
	var confs []conflictRecord
	out := e.ok("alice", "", "conflicts", "--json")
	if err := json.Unmarshal([]byte(out), &confs); err != nil || len(confs) != 1 || len(confs[0].Values) != 2 {
		t.Fatalf("alice's conflicts --json: %v %s", err, out)
	}
	if got := field(e.doc("bob", "todos", "t1"), "title"); got != `"oat milk"` {
		t.Fatalf("t1 while conflicted = %s, want alice's", got)
	}
	// merge: edits to different fields both survive.
	n1 := e.doc("bob", "notes", "n1")
	if field(n1, "text") != `"shopping list"` || field(n1, "colour") != `"yellow"` {
		t.Fatalf("merged note = %s", n1.Doc)
	}
	// lww: the later write (bob's) wins the whole document on both replicas.
	if a, b := field(e.doc("alice", "lists", "l1"), "name"), field(e.doc("bob", "lists", "l1"), "name"); a != `"groceries (bob)"` || b != a {
		t.Fatalf("lww: alice sees %s, bob sees %s", a, b)
	}

	// bob resolves; alice syncs and sees the resolution, with no conflict left.
	e.ok("bob", "resolve todos/t1: synced", "resolve", "todos", "t1", `{"title":"oat milk","done":false}`)
	e.ok("alice", "conflicts 0", "sync")
	for _, who := range []string{"alice", "bob"} {
		rec := e.doc(who, "todos", "t1")
		if field(rec, "title") != `"oat milk"` || len(rec.Conflicts) != 0 || rec.Pending != 0 {
			t.Fatalf("%s after resolve: %+v", who, rec)
		}
	}
	// Convergence: both replicas hold the same versions as each other.
	for _, id := range [][2]string{{"todos", "t1"}, {"notes", "n1"}, {"lists", "l1"}} {
		a, b := e.doc("alice", id[0], id[1]), e.doc("bob", id[0], id[1])
		if a.Version != b.Version || !bytes.Equal(mustJSON(a.Doc), mustJSON(b.Doc)) {
			t.Fatalf("%s/%s differs: alice %+v, bob %+v", id[0], id[1], a, b)
		}
	}

	// The view rebuilt from EVENTS equals the live one.
	e.stopServer()
	e.okVerify()
}

func (e *e2e) okVerify() {
	e.t.Helper()
	argv := []string{"verify", "--data", filepath.Join(e.dir, "server")}
	if e.view != "" {
		argv = append(argv, "--view", e.view)
	}
	out, err := exec.Command(e.bin, argv...).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "OK:") {
		e.t.Fatalf("verify: %v\n%s", err, out)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// lines splits output into non-empty lines.
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}
