package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ebbsync/ebb/projection"
)

// TestServe_ReadyzFollowsProjectorReady: serve's /readyz asks
// projectorReady and names its cause; it is ready again when the cause is
// gone.
func TestServe_ReadyzFollowsProjectorReady(t *testing.T) {
	var cause atomic.Pointer[error] // the handler reads it on another goroutine
	old := projectorReady
	projectorReady = func(*projection.Projector) error {
		if p := cause.Load(); p != nil {
			return *p
		}
		return nil
	}
	t.Cleanup(func() { projectorReady = old })

	s := serveInProcess(t, "")
	if code, body := httpGet(t, s.http+"/readyz"); code != 200 {
		t.Fatalf("readyz: %d %s", code, body)
	}
	stalled := errors.New("projector: no progress for 30s at EVENTS sequence 7")
	cause.Store(&stalled)
	code, body := httpGet(t, s.http+"/readyz")
	var resp struct{ Causes []string }
	if err := json.Unmarshal([]byte(body), &resp); err != nil || code != 503 ||
		len(resp.Causes) != 1 || !strings.Contains(resp.Causes[0], "no progress") {
		t.Fatalf("readyz with a stalled projector: %d %s", code, body)
	}
	cause.Store(nil)
	if code, body := httpGet(t, s.http+"/readyz"); code != 200 {
		t.Fatalf("readyz after recovery: %d %s", code, body)
	}
}

// TestServe_HTTPLimitFlags: the gateway's limits are serve flags.
func TestServe_HTTPLimitFlags(t *testing.T) {
	s := serveInProcess(t, "", "--http-max-body", "1024")
	resp, err := http.Post(s.http+"/v1/acme/events", "application/json", strings.NewReader("["+strings.Repeat(`"x",`, 400)+`"x"]`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || !strings.Contains(string(b), "1024") {
		t.Fatalf("push over --http-max-body: %d %s", resp.StatusCode, b)
	}
	var stderr bytes.Buffer
	m := &Main{Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }}
	if err := m.Run(context.Background(), []string{"serve", "--http-max-long-polls", "0"}); ExitCode(err) != 2 {
		t.Fatalf("--http-max-long-polls 0: %v (exit %d), want a usage error", err, ExitCode(err))
	}
}
