package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/auth"
)

// TestRulesGate_AnonymousBodyIsGeneric: while the interlock fails, the
// 503 of an HTTP change read (served before authentication) and /readyz
// name neither the NATS servers, their URLs nor the fingerprints of the
// failure; /readyz keeps its kind, Ready the whole cause.
func TestRulesGate_AnonymousBodyIsGeneric(t *testing.T) {
	cfg := Config{Data: filepath.Join(t.TempDir(), "data"), NATSListen: "127.0.0.1:-1", HTTPListen: "127.0.0.1:0"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	detail := []string{"n3.internal", "10.1.2.3:4222", "bb2c0015185d397bb6869a37d3d95e5b"}
	s.rules.mu.Lock()
	s.rules.failing = fmt.Errorf("sync rules on NATS nats://ops:REDACTED@10.1.2.3:4222: %w: server n3.internal has accounts of fingerprint bb2c0015185d397bb6869a37d3d95e5b",
		auth.ErrOtherUsersFile)
	s.rules.mu.Unlock()

	rec := httptest.NewRecorder()
	s.rulesGate(http.NotFoundHandler()).ServeHTTP(rec, httptest.NewRequest("GET", "/v1/acme/changes", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "see the server log") {
		t.Errorf("gate: %d %s, want 503 pointing at the log", rec.Code, rec.Body)
	}
	resp, err := http.Get(s.URL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "another users file") {
		t.Errorf("/readyz: %d %s, want 503 with the kind of failure", resp.StatusCode, body)
	}
	for _, d := range detail {
		if strings.Contains(rec.Body.String(), d) {
			t.Errorf("the gate's anonymous 503 shows %q: %s", d, rec.Body)
		}
		if strings.Contains(string(body), d) {
			t.Errorf("/readyz shows %q: %s", d, body)
		}
	}
	if err := s.Ready(ctx); err == nil || !strings.Contains(err.Error(), detail[2]) {
		t.Errorf("Ready: %v, want the whole cause", err)
	}
}
