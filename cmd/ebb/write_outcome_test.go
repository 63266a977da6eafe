package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// TestCLI_WriteReportsTheServersOutcome: a write command prints what the
// server did with the write, not just that it was pushed, and a refused
// write exits non-zero; `ebb rejections` lists it and clears it.
func TestCLI_WriteReportsTheServersOutcome(t *testing.T) {
	srv := serveInProcess(t, "", "--policy", "todos=reject", "--policy", "notes=manual")
	dir := t.TempDir()
	env := func(who string) map[string]string {
		return map[string]string{"EBB_DATA": filepath.Join(dir, who), "EBB_NATS": srv.nats, "EBB_TENANT": "acme"}
	}
	alice, bob := env("alice"), env("bob")
	mustRun := func(env map[string]string, want string, args ...string) string {
		t.Helper()
		out, stderr, code := runIn(t, env, args...)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("ebb %s: exit %d, stdout %q (want %q), stderr %q", strings.Join(args, " "), code, out, want, stderr)
		}
		return out
	}
	mustRun(alice, "put todos/t1: synced, applied (version 1)", "put", "todos", "t1", `{"title":"milk"}`)
	mustRun(bob, "pulled 1", "sync")
	mustRun(alice, "applied (version 2)", "patch", "todos", "t1", `{"title":"oat milk"}`)

	// bob's edit is stale under reject: exit 1, the reason on stdout.
	out, stderr, code := runIn(t, bob, "patch", "todos", "t1", `{"title":"soy milk"}`)
	if code != 1 || !strings.Contains(out, "rejected:") || !strings.Contains(stderr, "refused") {
		t.Fatalf("stale patch under reject: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	out, stderr, code = runIn(t, bob, "patch", "--json", "todos", "t2", `{"title":"x"}`)
	var rec struct {
		State   string         `json:"state"`
		Outcome events.Outcome `json:"outcome"`
		Reason  string         `json:"reason"`
		Event   string         `json:"event"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil || code != 1 || rec.Outcome != events.OutcomeRejected || rec.Reason == "" || rec.Event == "" {
		t.Fatalf("patch of a missing doc --json: exit %d, %q (%v), stderr %q", code, out, err, stderr)
	}
	out = mustRun(bob, "todos/t1: patch", "rejections")
	if !strings.Contains(out, "todos/t2: patch "+rec.Event) {
		t.Fatalf("rejections:\n%s\nwant the patch of t2", out)
	}
	mustRun(bob, "dismissed "+rec.Event, "rejections", "--dismiss", rec.Event)
	if out = mustRun(bob, "", "rejections"); strings.Contains(out, rec.Event) {
		t.Fatalf("rejections after dismiss still list %s:\n%s", rec.Event, out)
	}

	// manual: a stale edit is held as a conflict, exit 0, the id printed.
	mustRun(alice, "applied (version 1)", "put", "notes", "n1", `{"text":"a"}`)
	mustRun(bob, "", "sync")
	mustRun(alice, "applied (version 2)", "patch", "notes", "n1", `{"text":"b"}`)
	mustRun(bob, "synced, conflict ", "patch", "notes", "n1", `{"text":"c"}`)

	// Offline: the lag is unknown, not zero.
	offline := map[string]string{"EBB_DATA": filepath.Join(dir, "alice"), "EBB_NATS": "nats://127.0.0.1:1", "EBB_TENANT": "acme"}
	if out = mustRun(offline, "lag:             unknown", "status"); !strings.Contains(out, "reachable:       no") {
		t.Fatalf("offline status:\n%s", out)
	}
	out = mustRun(offline, "", "status", "--json")
	if !strings.Contains(out, `"lag":null`) {
		t.Fatalf("offline status --json: %s", out)
	}
}
