package bench

import (
	"context"
	"errors"
	"fmt"

	"log/slog"
	"os"
	"slices"
	"sort"
	"time"
)

// Sizes are the workload sizes of one run.
type Sizes struct {
	Push      int // backlog the publisher drains (workload push)
	Project   int // events the projector applies (workload projector)
	CatchUp   int // documents a fresh replica catches up (workload catch-up)
	Put       int // Replica.Put calls per writer count (workload put)
	Rate      int // writes per second offered (workload latency)
	Duration  time.Duration
	Backlog   int // unsettled writes under Get and Put (workload backlog)
	BacklogOp int // Get and Put calls timed per side (workload backlog)
	Local     int // Replica.Put calls from 8 goroutines, offline (workload local-writes)
	Delta     int // documents of which 1% change (workload delta)
	Fsync     int // Replica.Put calls counted for fsyncs (workload fsync)
}

// QuickSizes is a small run (seconds): a smoke test, not a measurement.
var QuickSizes = Sizes{Push: 2000, Project: 2000, CatchUp: 2000, Put: 200, Rate: 200,
	Duration: time.Second, Backlog: 2000, BacklogOp: 20, Local: 400, Delta: 2000, Fsync: 400}

// DefaultSizes is a run of a few minutes on a 2-core machine.
var DefaultSizes = Sizes{Push: 20_000, Project: 20_000, CatchUp: 10_000, Put: 2000, Rate: 500,
	Duration: 5 * time.Second, Backlog: 10_000, BacklogOp: 50, Local: 4000, Delta: 20_000, Fsync: 4000}

// LargeSizes are the sizes (100k backlog, 1M catch-up): long.
var LargeSizes = Sizes{Push: 100_000, Project: 100_000, CatchUp: 1_000_000, Put: 5000, Rate: 500,
	Duration: 10 * time.Second, Backlog: 100_000, BacklogOp: 50, Local: 20_000, Delta: 100_000, Fsync: 20_000}

// Config configures Run. Every field may be left zero.
type Config struct {
	// NATSURL, if set, runs every workload against this (scratch) server
	// instead of embedded ones; see the package doc.
	NATSURL string
	// Dir is where temporary stores and embedded servers live; empty
	// means os.TempDir(). Run removes what it creates there.
	Dir string
	// Sizes of the workloads; zero means DefaultSizes.
	Sizes Sizes
	// Rounds is how many times each raw/ebb pair runs, alternating which
	// goes first; zero means 3.
	Rounds int
	// Only, if not empty, names the workloads to run (see Workloads).
	Only []string
	// Self is the command line that starts this program again so that it
	// calls RunFsyncChild when IsFsyncChild (see fsync.go); without it the
	// fsync workload reports no rows.
	Self []string
	// Sync, if not empty, runs the embedded servers with only this fsync
	// policy: "always" or "interval" (for profiling one of them).
	Sync string
	// Progress is told of every step; nil means none.
	Progress func(Step)
	// Logger receives the embedded servers' and components' warnings;
	// nil discards.
	Logger *slog.Logger
}

// Step is one unit of progress: Done of Total steps of the run, and what
// is starting now.
type Step struct {
	Done, Total int
	What        string
}

// Compare says which way a ratio must lie to meet its target.
type Compare string

const (
	AtLeast Compare = ">="
	AtMost  Compare = "<="
)

// Target is a bound on Result.Ratio.
type Target struct {
	Compare Compare `json:"compare"`
	Value   float64 `json:"value"`
}

func (t Target) String() string { return fmt.Sprintf("%s %g", t.Compare, t.Value) }

// Met reports whether ratio meets t.
func (t Target) Met(ratio float64) bool {
	if t.Compare == AtMost {
		return ratio <= t.Value
	}
	return ratio >= t.Value
}

// Result is one row of the table: the ebb figure, its baseline (raw
// JetStream, or the same ebb call without the load the row is about) and
// Ratio = Ebb/Raw, the median of the rounds' ratios.
type Result struct {
	Key      string  `json:"key"` // short and stable, as "push/always": for scripts and Go benchmark metrics
	Workload string  `json:"workload"`
	Sync     string  `json:"sync,omitempty"` // server fsync policy, when the row depends on it
	Unit     string  `json:"unit"`
	Ebb      float64 `json:"ebb"`
	Raw      float64 `json:"raw"`
	Ratio    float64 `json:"ratio"`
	Target   Target  `json:"target"`
	Met      bool    `json:"met"`
	Rounds   int     `json:"rounds"`
	Baseline string  `json:"baseline"` // what Raw measures
	Note     string  `json:"note,omitempty"`
}

// workload is one named workload: steps is how many progress steps it
// reports, run adds its rows.
type workload struct {
	name  string
	steps func(r *runner) int
	run   func(ctx context.Context, r *runner) ([]Result, error)
}

// Workloads are the names Config.Only accepts, in the order they run.
func Workloads() []string {
	var ns []string
	for _, w := range workloads {
		ns = append(ns, w.name)
	}
	return ns
}

var workloads = []workload{
	{"push", pairSteps(true), runPush},
	{"projector", func(r *runner) int { return 3 * r.rounds * len(r.syncs()) }, runProjector},
	{"catch-up", func(r *runner) int { return 1 + pairSteps(false)(r) }, runCatchUp},
	{"put", func(r *runner) int { return 4 * len(r.syncs()) * r.rounds }, runPut},
	{"latency", func(r *runner) int { return 2 * r.rounds }, runLatency},
	{"backlog", func(r *runner) int { return 2 * r.rounds }, runBacklog},
	{"local-writes", pairSteps(false), runLocalWrites},
	{"delta", func(*runner) int { return 2 }, runDelta},
	{"fsync", func(r *runner) int { return len(r.syncs()) }, runFsync},
}

// ErrUnknownWorkload is returned by Run for a name in Config.Only that is
// not one of Workloads.
var ErrUnknownWorkload = errors.New("unknown workload")

// ErrUnknownSync is returned by Run for a Config.Sync it cannot honour.
var ErrUnknownSync = errors.New("unknown sync policy")

// Run runs the workloads and returns their rows. It stops at the first
// workload that fails, returning the rows measured so far with the error.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	r, err := newRunner(cfg)
	if err != nil {
		return nil, err
	}
	defer r.close()
	var todo []workload
	for _, w := range workloads {
		if len(cfg.Only) == 0 || slices.Contains(cfg.Only, w.name) {
			todo = append(todo, w)
		}
	}
	for _, n := range cfg.Only {
		if !slices.Contains(Workloads(), n) {
			return nil, fmt.Errorf("bench: %w %q (have %v)", ErrUnknownWorkload, n, Workloads())
		}
	}
	for _, w := range todo {
		r.total += w.steps(r)
	}
	var out []Result
	for _, w := range todo {
		rows, err := w.run(ctx, r)
		out = append(out, rows...)
		if err != nil {
			return out, fmt.Errorf("bench %s: %w", w.name, err)
		}
	}
	return out, nil
}

// runner holds what the workloads share: sizes, rounds, progress and the
// temporary directory.
type runner struct {
	cfg    Config
	sizes  Sizes
	rounds int
	dir    string
	log    *slog.Logger
	done   int
	total  int
}

func newRunner(cfg Config) (*runner, error) {
	r := &runner{cfg: cfg, sizes: cfg.Sizes, rounds: cfg.Rounds, log: cfg.Logger}
	if cfg.Sync != "" && (cfg.NATSURL != "" || len(r.syncs()) == 0) {
		return nil, fmt.Errorf("bench: %w %q: want always or interval, with embedded servers", ErrUnknownSync, cfg.Sync)
	}
	if r.sizes == (Sizes{}) {
		r.sizes = DefaultSizes
	}
	if r.rounds <= 0 {
		r.rounds = 3
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp(cfg.Dir, "ebb-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: temporary directory: %w", err)
	}
	r.dir = dir
	return r, nil
}

func (r *runner) close() { os.RemoveAll(r.dir) }

// tempDir returns a new directory under the run's temporary directory.
func (r *runner) tempDir() (string, error) {
	d, err := os.MkdirTemp(r.dir, "w-")
	if err != nil {
		return "", fmt.Errorf("temporary directory: %w", err)
	}
	return d, nil
}

// step reports that what starts now.
func (r *runner) step(format string, args ...any) {
	if r.cfg.Progress != nil {
		r.cfg.Progress(Step{Done: r.done, Total: r.total, What: fmt.Sprintf(format, args...)})
	}
	r.done++
}

// pairSteps counts the steps of a workload that runs a raw/ebb pair per
// round, per sync mode if perSync.
func pairSteps(perSync bool) func(r *runner) int {
	return func(r *runner) int {
		n := 2 * r.rounds
		if perSync {
			n *= len(r.syncs())
		}
		return n
	}
}

// pair runs raw and ebb r.rounds times, alternating which goes first, and
// returns the medians of each and of the per-round ratios ebb/raw. Each
// function returns its figure for one round.
func (r *runner) pair(ctx context.Context, what string, raw, ebb func(ctx context.Context, round int) (float64, error)) (e, w, ratio float64, err error) {
	return r.pairWith(ctx, what, nil, raw, ebb)
}

// pairWith is pair with setup called before each round, untimed.
func (r *runner) pairWith(ctx context.Context, what string, setup func(ctx context.Context, round int) error, raw, ebb func(ctx context.Context, round int) (float64, error)) (e, w, ratio float64, err error) {
	e, ws, rs, err := r.pairsWith(ctx, what, setup, []baseline{{"raw", raw}}, ebb)
	if err != nil {
		return 0, 0, 0, err
	}
	return e, ws[0], rs[0], nil
}

// baseline is one raw run of a round, named in the progress line.
type baseline struct {
	name string
	run  func(ctx context.Context, round int) (float64, error)
}

// pairsWith is pairWith with several baselines: each round runs setup,
// then the baselines and ebb (the baselines first in odd rounds, ebb first
// in even ones), and it returns the median of ebb's figures and, per
// baseline, the median of its figures and of the per-round ratios
// ebb/baseline.
func (r *runner) pairsWith(ctx context.Context, what string, setup func(ctx context.Context, round int) error, raws []baseline, ebb func(ctx context.Context, round int) (float64, error)) (e float64, w, ratio []float64, err error) {
	var es []float64
	ws, rs := make([][]float64, len(raws)), make([][]float64, len(raws))
	for i := range r.rounds {
		if setup != nil {
			if err := setup(ctx, i); err != nil {
				return 0, nil, nil, err
			}
		}
		fw := make([]float64, len(raws))
		var fe float64
		runRaws := func() error {
			for k, b := range raws {
				r.step("%s: %s (round %d/%d)", what, b.name, i+1, r.rounds)
				var err error
				if fw[k], err = b.run(ctx, i); err != nil {
					return err
				}
			}
			return nil
		}
		runEbb := func() error {
			r.step("%s: ebb (round %d/%d)", what, i+1, r.rounds)
			var err error
			fe, err = ebb(ctx, i)
			return err
		}
		first, second := runRaws, runEbb
		if i%2 == 1 {
			first, second = second, first
		}
		if err := first(); err != nil {
			return 0, nil, nil, err
		}
		if err := second(); err != nil {
			return 0, nil, nil, err
		}
		es = append(es, fe)
		for k := range raws {
			ws[k] = append(ws[k], fw[k])
			if fw[k] != 0 {
				rs[k] = append(rs[k], fe/fw[k])
			}
		}
	}
	for k := range raws {
		w = append(w, median(ws[k]))
		ratio = append(ratio, median(rs[k]))
	}
	return median(es), w, ratio, nil
}

// row fills in a Result's ratio verdict.
func (r *runner) row(res Result) Result {
	res.Met = res.Target.Met(res.Ratio)
	res.Rounds = r.rounds
	return res
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// rate is n operations over d, per second.
func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
