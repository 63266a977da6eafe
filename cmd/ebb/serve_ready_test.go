package main

import (
	"encoding/json"
	"errors"
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
