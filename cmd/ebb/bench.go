package main

import (
	"context"
	"fmt"
	"os"

	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/cmd/ebb/internal/bench"
)

// benchReport is what `ebb bench --json` prints.
type benchReport struct {
	Started time.Time      `json:"started"`
	Seconds float64        `json:"seconds"`
	Server  string         `json:"server"` // "embedded" or the --nats URL
	Go      string         `json:"go"`
	CPUs    int            `json:"cpus"`
	Rounds  int            `json:"rounds"`
	Sizes   bench.Sizes    `json:"sizes"`
	Rows    []bench.Result `json:"rows"`
}

// benchAbout is the help paragraph of `ebb bench`.
var benchAbout = "Each workload runs beside its raw JetStream baseline on the same server in the same run, alternating which goes first, and reports the medians and ebb/raw against the target of issue 15. Absolute figures on a shared machine are noise; the ratios are what to compare. Without --nats every workload starts its own embedded servers (fsync per write, and the background interval) in a temporary directory; --nats must name a scratch server: the workloads create the ebb streams there and run projectors over them. The fsync workload runs ebb again under strace -f and counts its fsync calls; without strace on PATH (or with --nats) its rows are left out. Workloads (--only): " +
	strings.Join(bench.Workloads(), ", ") + "."

func runBench(ctx context.Context, m *Main, args []string) error {
	if bench.IsFsyncChild() {
		// Started by the fsync workload of an `ebb bench` under strace.
		return bench.RunFsyncChild(ctx)
	}
	var (
		asJSON, quick, large bool
		natsURL, only, dir   string
		rounds               int
	)
	fs := m.newFlagSet("bench")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.BoolVar(&quick, "quick", false, "small sizes, one round: a smoke test, not a measurement")
	fs.BoolVar(&large, "large", false, "the issue's sizes (100k backlog, 1M catch-up); takes long")
	fs.StringVar(&natsURL, "nats", "", "run against this scratch NATS JetStream server instead of embedded ones")
	fs.StringVar(&only, "only", "", "comma-separated workloads to run (default all)")
	fs.StringVar(&dir, "dir", "", "directory for temporary stores and servers (default the system's)")
	fs.IntVar(&rounds, "rounds", 0, "raw/ebb pairs per workload (default 3, 1 with --quick)")
	if err := m.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("bench takes no arguments, got %q", fs.Args())
	}
	if quick && large {
		return usagef("bench: --quick and --large exclude each other")
	}
	if rounds < 0 {
		return usagef("bench: --rounds %d: want at least 1", rounds)
	}
	cfg := bench.Config{NATSURL: natsURL, Dir: dir, Sizes: bench.DefaultSizes, Rounds: rounds}
	// The fsync workload runs `ebb bench` again as its child; a test
	// binary (this command run in process) is not ebb, so there it is
	// skipped, and the bench package's own tests cover it.
	if self, err := os.Executable(); err == nil && !testing.Testing() {
		cfg.Self = []string{self, "bench"}
	}
	switch {
	case quick:
		cfg.Sizes = bench.QuickSizes
		if cfg.Rounds == 0 {
			cfg.Rounds = 1
		}
	case large:
		cfg.Sizes = bench.LargeSizes
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 3
	}
	if only != "" {
		cfg.Only = strings.Split(only, ",")
	}
	stop := m.benchProgress(&cfg)
	started := time.Now()
	rows, err := bench.Run(ctx, cfg)
	stop()
	if err != nil {
		return err
	}
	rep := benchReport{Started: started.UTC(), Seconds: time.Since(started).Seconds(), Server: "embedded",
		Go: runtime.Version(), CPUs: runtime.NumCPU(), Rounds: cfg.Rounds, Sizes: cfg.Sizes, Rows: rows}
	if natsURL != "" {
		rep.Server = natsURL
	}
	if asJSON {
		return printJSON(m.Stdout, rep)
	}
	if err := bench.WriteTable(m.Stdout, rows); err != nil {
		return err
	}
	fmt.Fprintf(m.Stdout, "\n%d rounds, %s, %d CPUs, %s server, %.0fs\n", rep.Rounds, rep.Go, rep.CPUs, rep.Server, rep.Seconds)
	return nil
}

// benchProgress sets cfg.Progress to draw a bar on Stderr when it is a
// terminal, or to print one line a step otherwise. The returned func
// clears the bar.
func (m *Main) benchProgress(cfg *bench.Config) (stop func()) {
	w := m.Stderr
	if !isTerminal(w) {
		cfg.Progress = func(s bench.Step) { fmt.Fprintf(w, "bench: [%d/%d] %s\n", s.Done+1, s.Total, s.What) }
		return func() {}
	}
	drawn := false
	cfg.Progress = func(s bench.Step) {
		fmt.Fprintf(w, "\r\033[K%s %s", benchBar(s.Done, s.Total, 24), s.What)
		drawn = true
	}
	return func() {
		if drawn {
			fmt.Fprint(w, "\r\033[K")
		}
	}
}

// benchBar renders "[=====>      ] 3/20".
func benchBar(done, total, width int) string {
	total = max(total, 1)
	fill := width * min(done, total) / total
	return fmt.Sprintf("[%s%s] %d/%d", strings.Repeat("=", fill), strings.Repeat(" ", width-fill), done, total)
}
