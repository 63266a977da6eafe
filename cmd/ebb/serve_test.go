package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// syncBuffer is a buffer safe to read while serve writes its logs to it.
type syncBuffer = embeddedtest.Buffer

// waitFor waits on a condition with a deadline.
var waitFor = embeddedtest.WaitFor

// readyAddrs returns the NATS and HTTP URLs from serve's JSON "ebb ready" log line.
func readyAddrs(logs string) (natsURL, httpURL string) {
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			Msg  string `json:"msg"`
			NATS string `json:"nats"`
			HTTP string `json:"http"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "ebb ready" {
			return rec.NATS, rec.HTTP
		}
	}
	return "", ""
}

func readyURL(logs string) string { u, _ := readyAddrs(logs); return u }

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServe_EmbeddedCreatesStreamsAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &syncBuffer{}
	m := &Main{Stdout: &bytes.Buffer{}, Stderr: stderr, Getenv: func(string) string { return "" }}
	done := make(chan error, 1)
	go func() {
		done <- m.Run(ctx, []string{"serve", "--data", t.TempDir(), "--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0", "--log-format", "json"})
	}()
	waitFor(t, 20*time.Second, "the ready line", func() bool { return readyURL(stderr.String()) != "" })

	nc, err := nats.Connect(readyURL(stderr.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for _, name := range []string{events.StreamEvents, events.StreamChanges, events.StreamReceipts, events.StreamDead} {
		if _, err := js.Stream(ctx, name); err != nil {
			t.Errorf("stream %s: %v", name, err)
		}
	}
	_, base := readyAddrs(stderr.String())
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := httpGet(t, base+path); code != 200 {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	code, body := httpGet(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, `ebb_stream_messages{stream="EVENTS"} 0`) {
		t.Errorf("/metrics: %d, no EVENTS message gauge in:\n%s", code, body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v, want nil on shutdown", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after cancel")
	}
}

func TestMain_UsageErrors(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no command", nil, 2, "no command"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"bad flag", []string{"serve", "--no-such-flag"}, 2, "no-such-flag"},
		{"stray argument", []string{"serve", "extra"}, 2, "takes no arguments"},
		{"bad log format", []string{"serve", "--log-format", "xml"}, 2, "--log-format"},
		{"help", []string{"help"}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			m := &Main{Stdout: &bytes.Buffer{}, Stderr: &stderr, Getenv: func(string) string { return "" }}
			err := m.Run(context.Background(), tt.args)
			if code := ExitCode(err); code != tt.wantCode {
				t.Fatalf("exit code %d, want %d (err %v)", code, tt.wantCode, err)
			}
			if tt.wantErr != "" && !errors.Is(err, ErrUsage) {
				t.Fatalf("err %v does not wrap ErrUsage", err)
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Fatalf("stderr %q does not mention %q", stderr.String(), tt.wantErr)
			}
		})
	}
}

// testServer is an `ebb serve` run in process by a test.
type testServer struct {
	nats, http string
	stop       func() error
	done       chan error
	stderr     *syncBuffer
}

// serveInProcess runs `ebb serve` in process with args on data (a fresh
// directory if empty) and waits until it is ready; it is stopped in
// t.Cleanup if the test did not stop it.
func serveInProcess(t *testing.T, data string, args ...string) *testServer {
	t.Helper()
	if data == "" {
		data = t.TempDir()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &testServer{stderr: &syncBuffer{}, done: make(chan error, 1)}
	m := &Main{Stdout: io.Discard, Stderr: s.stderr, Getenv: func(string) string { return "" }}
	go func() {
		s.done <- m.Run(ctx, append([]string{"serve", "--data", data, "--nats-listen", "127.0.0.1:-1",
			"--http-listen", "127.0.0.1:0", "--log-format", "json", "--fsync-interval", "1m"}, args...))
	}()
	stopped := false
	s.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-s.done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("serve did not stop")
		}
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if s.nats, s.http = readyAddrs(s.stderr.String()); s.http != "" {
			return s
		}
		select {
		case err := <-s.done:
			stopped = true
			t.Fatalf("serve stopped before ready: %v\n%s", err, s.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready after 20s:\n%s", s.stderr.String())
		}
	}
}
