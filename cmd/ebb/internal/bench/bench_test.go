package bench

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// benchSizes picks the sizes of the Go benchmarks: quick unless
// -bench.sizes=default or large.
var benchSizes = flag.String("bench.sizes", "quick", "sizes of the Go benchmarks: quick, default or large")

// benchSync, if set, runs the Go benchmarks under one server fsync policy
// (Config.Sync), so a profile shows one of them.
var benchSync = flag.String("bench.sync", "", "server fsync policy of the Go benchmarks: always or interval (default both)")

func sizes(tb testing.TB) Sizes {
	switch *benchSizes {
	case "quick":
		return QuickSizes
	case "default":
		return DefaultSizes
	case "large":
		return LargeSizes
	}
	tb.Fatalf("-bench.sizes %q: want quick, default or large", *benchSizes)
	return Sizes{}
}

// benchWorkload runs one workload of `ebb bench` b.N times (one round
// each) and reports the rows of the last run as metrics: for each row,
// key:ebb and key:raw in the row's unit and key:ratio. So
//
//	go test -bench Put -benchtime 1x -cpuprofile cpu.out ./cmd/ebb/internal/bench
//
// profiles exactly what the `ebb bench` row measures.
func benchWorkload(b *testing.B, name string) {
	var rows []Result
	for range b.N {
		var err error
		rows, err = Run(b.Context(), Config{Dir: b.TempDir(), Sizes: sizes(b), Rounds: 1, Only: []string{name}, Sync: *benchSync,
			Self: []string{os.Args[0], "-test.run=^TestFsyncChild$", "-test.count=1"}})
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, r := range rows {
		unit := strings.NewReplacer("/", "-per-", "µ", "u").Replace(r.Unit)
		b.ReportMetric(r.Ebb, r.Key+":ebb-"+unit)
		b.ReportMetric(r.Raw, r.Key+":raw-"+unit)
		b.ReportMetric(r.Ratio, r.Key+":ratio")
	}
}

func BenchmarkPush(b *testing.B)        { benchWorkload(b, "push") }
func BenchmarkProjector(b *testing.B)   { benchWorkload(b, "projector") }
func BenchmarkCatchUp(b *testing.B)     { benchWorkload(b, "catch-up") }
func BenchmarkPut(b *testing.B)         { benchWorkload(b, "put") }
func BenchmarkLatency(b *testing.B)     { benchWorkload(b, "latency") }
func BenchmarkBacklog(b *testing.B)     { benchWorkload(b, "backlog") }
func BenchmarkLocalWrites(b *testing.B) { benchWorkload(b, "local-writes") }
func BenchmarkDelta(b *testing.B)       { benchWorkload(b, "delta") }
func BenchmarkFsync(b *testing.B)       { benchWorkload(b, "fsync") }

// TestFsyncChild is the child process of the fsync workload (see
// fsync.go); run on its own it does nothing.
func TestFsyncChild(t *testing.T) {
	if !IsFsyncChild() {
		t.Skip("only the fsync workload's child process runs this")
	}
	if err := RunFsyncChild(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestTarget_Met(t *testing.T) {
	for _, c := range []struct {
		t     Target
		ratio float64
		want  bool
	}{
		{Target{AtLeast, 0.8}, 0.8, true},
		{Target{AtLeast, 0.8}, 0.79, false},
		{Target{AtMost, 2}, 2, true},
		{Target{AtMost, 2}, 2.01, false},
	} {
		if got := c.t.Met(c.ratio); got != c.want {
			t.Errorf("%v met by %v = %v, want %v", c.t, c.ratio, got, c.want)
		}
	}
}

func TestMedianAndPercentile(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median 3,1,2 = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median 4,1,2,3 = %v", m)
	}
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(100 - i)
	}
	if p := pct(xs, 50); p != 50 {
		t.Errorf("p50 of 1..100 = %v", p)
	}
	if p := pct(xs, 99); p != 99 {
		t.Errorf("p99 of 1..100 = %v", p)
	}
}

// TestCountFsyncs: only sync calls between the markers count, by the
// directory of the file they name; strace's resumed halves of a call
// interrupted by another thread do not count twice.
func TestCountFsyncs(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "strace.out")
	lines := []string{
		`100 fdatasync(7</D/client/ebb.db>) = 0`,
		`100 fsync(9</D/mark.begin>) = 0`,
		`100 fdatasync(7</D/client/ebb.db> <unfinished ...>`,
		`101 fsync(12</D/server/w-1/jetstream/$G/streams/EVENTS/msgs/1.blk>) = 0`,
		`100 <... fdatasync resumed>) = 0`,
		`102 fdatasync(13</D/server/w-1/view.db>) = 0`,
		`102 fsync(14</elsewhere/x>) = 0`,
		`100 fdatasync(7</D/client/ebb.db>) = 0`,
		`100 fsync(9</D/mark.end>) = 0`,
		`101 fsync(12</D/server/w-1/jetstream/$G/streams/EVENTS/msgs/1.blk>) = 0`,
	}
	text := strings.ReplaceAll(strings.Join(lines, "\n"), "/D/", dir+"/")
	if err := os.WriteFile(out, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := countFsyncs(out, dir, markBegin, markEnd)
	if err != nil {
		t.Fatal(err)
	}
	if c != (fsyncCounts{client: 2, server: 2}) {
		t.Errorf("counts %+v, want client 2, server 2", c)
	}
	if _, err := countFsyncs(out, dir, markRawBegin, markRawEnd); err == nil {
		t.Error("counted between markers that are not there")
	}
}

// TestFsync_Rows runs the fsync workload at the quick size: it starts this
// test binary again under strace and reports both rows per sync policy,
// each with a count above zero (every write is fsynced somewhere at
// sync=always). It asserts no bound.
func TestFsync_Rows(t *testing.T) {
	if testing.Short() {
		t.Skip("starts embedded servers under strace")
	}
	if _, err := exec.LookPath("strace"); err != nil {
		t.Skip("no strace")
	}
	rows, err := Run(t.Context(), Config{Dir: t.TempDir(), Sizes: QuickSizes, Rounds: 1, Only: []string{"fsync"},
		Self: []string{os.Args[0], "-test.run=^TestFsyncChild$", "-test.count=1"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Result{}
	for _, r := range rows {
		got[r.Key] = r
	}
	for _, k := range []string{"fsync-client/always", "fsync-server/always", "fsync-client/interval", "fsync-server/interval"} {
		r, ok := got[k]
		if !ok {
			t.Errorf("no row %s in %+v", k, rows)
			continue
		}
		if r.Ratio != r.Ebb || r.Raw != 1 || r.Met != r.Target.Met(r.Ratio) {
			t.Errorf("%s: %+v", k, r)
		}
	}
	for _, k := range []string{"fsync-client/always", "fsync-server/always", "fsync-client/interval"} {
		if got[k].Ebb <= 0 {
			t.Errorf("%s: %v fsyncs per write, want some", k, got[k].Ebb)
		}
	}
}
