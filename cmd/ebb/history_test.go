package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// TestCLI_HistoryShowsWhatLWWOverwrote: the conflict history the README
// promises is readable from the command line and over HTTP: the state an
// lww write overwrote, with what it lost.
func TestCLI_HistoryShowsWhatLWWOverwrote(t *testing.T) {
	srv := serveInProcess(t, "")
	dir := t.TempDir()
	env := func(who string) map[string]string {
		return map[string]string{"EBB_DATA": filepath.Join(dir, who), "EBB_NATS": srv.nats, "EBB_TENANT": "acme", "EBB_HTTP": srv.http}
	}
	alice, bob := env("alice"), env("bob")
	for _, step := range []struct {
		who  map[string]string
		args []string
	}{
		{alice, []string{"put", "lists", "l1", `{"name":"groceries"}`}},
		{bob, []string{"sync"}},
		{alice, []string{"patch", "lists", "l1", `{"name":"groceries (alice)"}`}},
		{bob, []string{"patch", "lists", "l1", `{"name":"groceries (bob)"}`}}, // stale, later: wins under lww
	} {
		if out, stderr, code := runIn(t, step.who, step.args...); code != 0 {
			t.Fatalf("ebb %s: exit %d %s %s", strings.Join(step.args, " "), code, out, stderr)
		}
	}
	out, stderr, code := runIn(t, alice, "history", "lists", "l1")
	if code != 0 || !strings.Contains(out, "overwritten") || !strings.Contains(out, `"groceries (alice)"`) || !strings.Contains(out, "lost name") {
		t.Fatalf("history: exit %d, %q, stderr %q", code, out, stderr)
	}
	out, _, code = runIn(t, alice, "history", "--json", "lists", "l1")
	var h gateway.HistoryResponse
	if err := json.Unmarshal([]byte(out), &h); err != nil || code != 0 || len(h.Conflicts) != 1 || h.Conflicts[0].Status != events.ConflictOverwritten {
		t.Fatalf("history --json: exit %d, %s (%v)", code, out, err)
	}
	out, _, code = runIn(t, alice, "history", "lists", "nope")
	if code != 0 || !strings.Contains(out, "no conflict records") {
		t.Fatalf("history of a document without records: exit %d, %q", code, out)
	}
}
