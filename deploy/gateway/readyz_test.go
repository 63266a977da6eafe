package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// TestReadyz_NamesEveryCause: /readyz is 503 while anything is wrong, and
// its JSON body names every cause, not only the first: each missing
// stream and each error Ready joins.
func TestReadyz_NamesEveryCause(t *testing.T) {
	var ready atomic.Pointer[error] // the handler reads it on another goroutine
	e := newEnvWith(t, func(c *gateway.Config) {
		c.Ready = func(context.Context) error {
			if p := ready.Load(); p != nil {
				return *p
			}
			return nil
		}
	})
	code, body := e.do(t, "GET", "/readyz", nil)
	if code != 200 || !strings.Contains(string(body), `"ready"`) {
		t.Fatalf("healthy: %d %s", code, body)
	}

	joined := errors.Join(errors.New("projector stalled: no progress for 30s"), errors.New("nats: disconnected"))
	ready.Store(&joined)
	for _, name := range []string{events.StreamDead, events.StreamReceipts} {
		if err := e.js.DeleteStream(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	code, body = e.do(t, "GET", "/readyz", nil)
	var resp struct {
		Status string   `json:"status"`
		Error  string   `json:"error"`
		Causes []string `json:"causes"`
	}
	if err := json.Unmarshal(body, &resp); err != nil || code != 503 {
		t.Fatalf("not ready: %d %s (%v)", code, body, err)
	}
	want := []string{"stream RECEIPTS", "stream DEAD", "projector stalled", "nats: disconnected"}
	if len(resp.Causes) != len(want) || resp.Status != "not ready" || resp.Error == "" {
		t.Fatalf("causes %q, want %d: %s", resp.Causes, len(want), body)
	}
	for i, w := range want {
		if !strings.Contains(resp.Causes[i], w) {
			t.Fatalf("cause %d %q, want it to name %q: %s", i, resp.Causes[i], w, body)
		}
	}
}
