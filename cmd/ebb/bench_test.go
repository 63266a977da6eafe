package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/cmd/ebb/internal/bench"
)

// TestBench_QuickJSON is the CI smoke test of `ebb bench`: the quick run
// completes and every row of its JSON has both figures, a ratio and a
// target. It asserts no speed.
func TestBench_QuickJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every workload against embedded servers")
	}
	out, stderr, code := runIn(t, nil, "bench", "--quick", "--json", "--dir", t.TempDir())
	if code != 0 {
		t.Fatalf("ebb bench --quick --json: exit %d: %s", code, stderr)
	}
	var rep benchReport
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("decode report: %v\n%s", err, out)
	}
	if rep.Server != "embedded" || rep.Rounds != 1 || rep.Sizes != bench.QuickSizes || rep.Seconds <= 0 {
		t.Errorf("report header: %+v", rep)
	}
	keys := map[string]bool{}
	for _, r := range rep.Rows {
		if keys[r.Key] {
			t.Errorf("key %q twice", r.Key)
		}
		keys[r.Key] = true
		if r.Workload == "" || r.Unit == "" || r.Baseline == "" {
			t.Errorf("%s: missing workload, unit or baseline: %+v", r.Key, r)
		}
		if !(r.Ebb > 0) || !(r.Raw > 0) || !(r.Ratio > 0) || math.IsInf(r.Ratio, 0) {
			t.Errorf("%s: want both figures and a ratio, got ebb %v raw %v ratio %v", r.Key, r.Ebb, r.Raw, r.Ratio)
		}
		if (r.Target.Compare != bench.AtLeast && r.Target.Compare != bench.AtMost) || r.Target.Value <= 0 || r.Met != r.Target.Met(r.Ratio) {
			t.Errorf("%s: target %+v met %v for ratio %v", r.Key, r.Target, r.Met, r.Ratio)
		}
	}
	want := []string{"push/always", "push/interval", "projector/always", "projector/interval",
		"projector-publish/always", "projector-publish/interval",
		"catch-up", "catch-up-bytes", "store-size", "put-x1/always", "put-x8/always", "put-x1/interval", "put-x8/interval",
		"latency-p50", "latency-p99", "get-backlog", "put-backlog", "local-writes-x8", "delta-bytes"}
	// No fsync rows here: their workload starts ebb again, and in process
	// this binary is the test's (the bench package tests them).
	for _, k := range want {
		if !keys[k] {
			t.Errorf("no row %q", k)
		}
	}
	if !strings.Contains(stderr, "bench: [1/") {
		t.Errorf("no progress lines on a non-terminal stderr:\n%s", stderr)
	}
}

func TestBench_Usage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--quick", "--large"},
		{"bench", "--rounds", "-1"},
		{"bench", "extra"},
	} {
		if _, stderr, code := runIn(t, nil, args...); code != 2 {
			t.Errorf("ebb %v: exit %d, want 2: %s", args, code, stderr)
		}
	}
	if _, stderr, code := runIn(t, nil, "bench", "--only", "frobnicate", "--dir", t.TempDir()); code != 1 || !strings.Contains(stderr, "unknown workload") {
		t.Errorf("--only frobnicate: exit %d: %s", code, stderr)
	}
}
