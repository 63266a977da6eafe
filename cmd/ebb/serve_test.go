package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readyURL returns the NATS URL from serve's JSON "ebb ready" log line.
func readyURL(logs string) string {
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			Msg  string `json:"msg"`
			NATS string `json:"nats"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "ebb ready" {
			return rec.NATS
		}
	}
	return ""
}

func TestServe_EmbeddedCreatesStreamsAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &syncBuffer{}
	m := &Main{Stdout: &bytes.Buffer{}, Stderr: stderr, Getenv: func(string) string { return "" }}
	done := make(chan error, 1)
	go func() {
		done <- m.Run(ctx, []string{"serve", "--data", t.TempDir(), "--nats-listen", "127.0.0.1:-1", "--log-format", "json"})
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
