package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// serveProc is a real `ebb serve` process started by a test.
type serveProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error // the result of cmd.Wait, once
	nats string
	http string
}

// startServeProc runs the built binary as `ebb serve --data data` with
// args. It waits until the process logs its ready line or exits, whichever
// comes first; the caller checks which with ready/exited. The process is
// killed at cleanup if it is still running.
func startServeProc(t *testing.T, data string, args ...string) *serveProc {
	t.Helper()
	bin, err := buildEbb()
	if err != nil {
		t.Fatal(err)
	}
	p := &serveProc{t: t, logs: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(bin, append([]string{"serve", "--data", data, "--log-format", "json"}, args...)...)
	p.cmd.Stderr = p.logs
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.After(30 * time.Second)
	for {
		if p.nats, p.http = readyAddrs(p.logs.String()); p.http != "" {
			return p
		}
		select {
		case err := <-p.done:
			p.done <- err // keep it for exitCode
			return p
		case <-deadline:
			t.Fatalf("ebb serve neither ready nor exited after 30s:\n%s", p.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// exitCode waits up to 30s for the process to exit and returns its code.
func (p *serveProc) exitCode() int {
	p.t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			p.t.Fatalf("wait: %v", err)
		}
		return 0
	case <-time.After(30 * time.Second):
		p.t.Fatalf("ebb serve did not exit:\n%s", p.logs.String())
		return -1
	}
}

// stop sends SIGTERM and checks the server exits 0.
func (p *serveProc) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		p.t.Fatalf("ebb serve exited %d on SIGTERM:\n%s", code, p.logs.String())
	}
}

// serverStreamMsgs returns the message count of each ebb stream on the server at url.
func serverStreamMsgs(t *testing.T, url string) map[string]uint64 {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]uint64{}
	for _, name := range []string{events.StreamEvents, events.StreamChanges, events.StreamReceipts} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		out[name] = st.CachedInfo().State.Msgs
	}
	return out
}

// TestServe_SecondServeOnSameDataDirRefused: a second `ebb serve` on a data
// directory in use exits 1 with one line naming the directory and the
// holding process, whether it asks for other ports or the same ones, and
// the first server's streams survive it and a restart.
func TestServe_SecondServeOnSameDataDirRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	data := t.TempDir()
	natsPort := freePort(t)
	a := startServeProc(t, data, "--nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort), "--http-listen", "127.0.0.1:0")
	if a.http == "" {
		t.Fatalf("serve A not ready:\n%s", a.logs.String())
	}
	ph := newPhone(t, a.http, "phone")
	// Each document is written twice, so CHANGES (one message per
	// subject) has removed messages in its blocks too.
	for i := range 3 {
		put := ph.event(events.OpPut, "todos", fmt.Sprint("t", i), 0, `{"n":1}`)
		patch := ph.event(events.OpPatch, "todos", fmt.Sprint("t", i), 1, `{"n":2}`)
		if st := ph.push(put, patch); st[0] != gateway.StatusAccepted || st[1] != gateway.StatusAccepted {
			t.Fatalf("push: %v", st)
		}
		ph.receipt(put.ID)
		ph.receipt(patch.ID)
	}
	before := serverStreamMsgs(t, a.nats)

	for _, tc := range []struct{ name, natsListen, httpListen string }{
		{"other ports", "127.0.0.1:-1", "127.0.0.1:0"},
		{"same ports", fmt.Sprintf("127.0.0.1:%d", natsPort), strings.TrimPrefix(a.http, "http://")},
	} {
		b := startServeProc(t, data, "--nats-listen", tc.natsListen, "--http-listen", tc.httpListen)
		if code := b.exitCode(); code != 1 {
			t.Fatalf("%s: second serve exited %d, want 1:\n%s", tc.name, code, b.logs.String())
		}
		if got := serverStreamMsgs(t, a.nats); fmt.Sprint(got) != fmt.Sprint(before) {
			t.Errorf("%s: streams of serve A changed: %v, before %v", tc.name, got, before)
		}
		out := lines(b.logs.String())
		if len(out) != 1 || !strings.Contains(out[0], data) || !strings.Contains(out[0], "pid "+strconv.Itoa(a.cmd.Process.Pid)) {
			t.Errorf("%s: second serve must say in one line that %s is held by pid %d, got %d lines, last:\n%s",
				tc.name, data, a.cmd.Process.Pid, len(out), out[len(out)-1])
		}
	}

	// verify takes the same lock: it refuses while A runs.
	var stderr bytes.Buffer
	m := &Main{Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }}
	err := m.Run(context.Background(), []string{"verify", "--data", data})
	if ExitCode(err) != 1 || !strings.Contains(stderr.String(), "pid "+strconv.Itoa(a.cmd.Process.Pid)) {
		t.Errorf("verify while serve runs: exit %d, stderr %q", ExitCode(err), stderr.String())
	}

	// A still works, and after a restart every event is still there.
	late := ph.event(events.OpPut, "todos", "late", 0, `{"n":2}`)
	if st := ph.push(late); st[0] != gateway.StatusAccepted {
		t.Fatalf("push after the refused serve: %v", st)
	}
	ph.receipt(late.ID)
	// A crash, not a clean stop: nothing A writes at shutdown may repair
	// what the refused serve did to the data directory.
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	a.exitCode()
	a = startServeProc(t, data, "--nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort), "--http-listen", "127.0.0.1:0")
	if a.http == "" {
		t.Fatalf("serve A did not restart:\n%s", a.logs.String())
	}
	got := serverStreamMsgs(t, a.nats)
	if got[events.StreamEvents] != 7 || got[events.StreamChanges] != 4 || got[events.StreamReceipts] != 7 {
		t.Fatalf("after restart: %v, want 7 events, 4 changes and 7 receipts", got)
	}
	ph.base = a.http
	for i := range 3 {
		if rec := ph.doc("todos", fmt.Sprint("t", i)); rec.Version != 2 {
			t.Fatalf("t%d after restart: %+v", i, rec)
		}
	}
	a.stop()
	m = &Main{Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }}
	var out bytes.Buffer
	m.Stdout = &out
	if err := m.Run(context.Background(), []string{"verify", "--data", data}); err != nil || !strings.HasPrefix(out.String(), "OK:") {
		t.Fatalf("verify after stop: %v %s", err, out.String())
	}
}

// TestServe_LockReleasedWhenKilled: the lock is the process's, so a serve
// killed with SIGKILL leaves nothing behind that stops the next one.
func TestServe_LockReleasedWhenKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	data := t.TempDir()
	a := startServeProc(t, data, "--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0")
	if a.http == "" {
		t.Fatalf("serve A not ready:\n%s", a.logs.String())
	}
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if code := a.exitCode(); code != -1 {
		t.Fatalf("killed serve exit code %d", code)
	}
	b := startServeProc(t, data, "--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0")
	if b.http == "" {
		t.Fatalf("serve after a SIGKILL not ready:\n%s", b.logs.String())
	}
	b.stop()
}

// TestServe_ExternalNATSCreatesDataDir: with --nats the data directory
// (the view) is created when missing.
func TestServe_ExternalNATSCreatesDataDir(t *testing.T) {
	ext := embeddedtest.MustStart(t)
	data := filepath.Join(t.TempDir(), "new", "dir")
	s := serveInProcess(t, data, "--nats", ext.ClientURL())
	if _, err := os.Stat(filepath.Join(data, viewFile)); err != nil {
		t.Fatalf("view in the new data directory: %v", err)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
}
