package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/ebbsync/ebb/consumer"
)

// The fsync workload counts fsyncs with strace, which needs the workload in
// a process of its own: Run starts Config.Self again under `strace -f -y`
// with FsyncChildEnv set, and that process must call RunFsyncChild (`ebb
// bench` does, first thing; the package's tests do in TestFsyncChild).
//
// The child runs, in one process, an embedded server (fsync per write, the
// embedded default) with a projector, and a Replica online on its own
// connection. After a warm-up it fsyncs a marker file, makes Sizes.Fsync
// Replica.Put calls on distinct documents from 8 goroutines, waits until
// Sync returns (every write published, applied by the projector and
// settled), and fsyncs a second marker. Between the markers the parent
// counts the fsync, fdatasync, sync_file_range and syncfs calls on files
// under the replica's directory (the client process: its one bbolt file) and
// under the server's (JetStream's store and the projector's view). bbolt
// calls fdatasync twice per write transaction (pages, then meta) and
// fsync when it grows the file; nats-server calls fsync on its message
// blocks and index files: strace sees each of these system calls, which is
// what reaches the disk, whatever layer made it. Then, between two more
// markers, the child publishes as many events with PublishMsgAsync from 8
// goroutines into a stream configured as EVENTS: what raw JetStream fsyncs
// per message at the same policy, for the note.

// FsyncChildEnv is the environment variable that tells a process started
// by the fsync workload to run as its child (see RunFsyncChild).
const FsyncChildEnv = "EBB_BENCH_FSYNC_CHILD"

// fsyncSpec is what the parent tells the child, as JSON in FsyncChildEnv.
type fsyncSpec struct {
	Dir  string `json:"dir"` // client/, server/ and the markers go here
	N    int    `json:"n"`
	Sync string `json:"sync"` // syncMode.name
}

// Marker files, fsynced by the child around what is counted.
const (
	markBegin    = "mark.begin"
	markEnd      = "mark.end"
	markRawBegin = "mark.raw.begin"
	markRawEnd   = "mark.raw.end"
)

// fsyncWriters is how many goroutines call Put in the fsync workload.
const fsyncWriters = 8

// IsFsyncChild reports whether this process was started by the fsync
// workload and must call RunFsyncChild.
func IsFsyncChild() bool { return os.Getenv(FsyncChildEnv) != "" }

// RunFsyncChild runs the child side of the fsync workload described by
// FsyncChildEnv and returns when it is done.
func RunFsyncChild(ctx context.Context) error {
	var spec fsyncSpec
	if err := json.Unmarshal([]byte(os.Getenv(FsyncChildEnv)), &spec); err != nil {
		return fmt.Errorf("fsync child: %s: %w", FsyncChildEnv, err)
	}
	r := &runner{cfg: Config{Sync: spec.Sync}, sizes: Sizes{Fsync: spec.N}, rounds: 1, dir: filepath.Join(spec.Dir, "server"), log: slog.New(slog.DiscardHandler)}
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return fmt.Errorf("fsync child: %w", err)
	}
	sms := r.syncs()
	if len(sms) != 1 {
		return fmt.Errorf("fsync child: %w %q", ErrUnknownSync, spec.Sync)
	}
	e, err := r.newEnv(ctx, sms[0])
	if err != nil {
		return err
	}
	defer e.stop()
	_, stopProjector, err := r.startProjector(ctx, e, "ebb-bench-fsync")
	if err != nil {
		return err
	}
	defer stopProjector()
	nc, err := r.connect(e.url)
	if err != nil {
		return err
	}
	defer nc.Close()
	rep, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: filepath.Join(spec.Dir, "client"), Tenant: "bench-fsync", Conn: nc, Logger: r.log})
	if err != nil {
		return fmt.Errorf("open replica: %w", err)
	}
	defer rep.Close()
	puts := func(prefix string, n int) error {
		var wg sync.WaitGroup
		errs := make([]error, fsyncWriters)
		for w := range fsyncWriters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += fsyncWriters {
					wr := benchWrite(i, n)
					if _, err := rep.Put(ctx, wr.Collection, prefix+wr.Doc, wr.Fields); err != nil {
						errs[w] = fmt.Errorf("put: %w", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		if _, err := rep.Sync(sctx); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		return nil
	}
	// Warm up: files created and grown, streams and consumers in place.
	if err := puts("warm-", max(fsyncWriters, spec.N/10)); err != nil {
		return err
	}
	if err := mark(spec.Dir, markBegin); err != nil {
		return err
	}
	if err := puts("", spec.N); err != nil {
		return err
	}
	if err := mark(spec.Dir, markEnd); err != nil {
		return err
	}

	gen, err := r.openLog("bench-fsync-raw")
	if err != nil {
		return err
	}
	evs, err := appendWrites(ctx, gen, spec.N, spec.N)
	gen.Close()
	if err != nil {
		return err
	}
	msgs, err := eventMsgs(evs)
	if err != nil {
		return err
	}
	ms := rawMsgs(msgs)
	if err := mark(spec.Dir, markRawBegin); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, fsyncWriters)
	for w := range fsyncWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(ms); i += fsyncWriters {
				if _, err := e.js.PublishMsgAsync(ms[i], withStall); err != nil {
					errs[w] = fmt.Errorf("publish: %w", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	}
	return mark(spec.Dir, markRawEnd)
}

// mark creates and fsyncs the marker file name in dir.
func mark(dir, name string) error {
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return fmt.Errorf("marker %s: %w", name, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("marker %s: %w", name, err)
	}
	return nil
}

// syncCall matches the start of a sync system call on a file descriptor in
// `strace -f -y` output, capturing the file's path.
var syncCall = regexp.MustCompile(`\b(?:fsync|fdatasync|sync_file_range|syncfs)\(\d+<([^>]*)>`)

// fsyncCounts are the sync calls strace saw between two markers.
type fsyncCounts struct {
	client, server int
}

// countFsyncs reads strace's output and counts the sync calls on files
// under dir/client and dir/server between the markers begin and end.
func countFsyncs(path, dir, begin, end string) (fsyncCounts, error) {
	f, err := os.Open(path)
	if err != nil {
		return fsyncCounts{}, fmt.Errorf("strace output: %w", err)
	}
	defer f.Close()
	var (
		c       fsyncCounts
		inside  bool
		seen    bool
		clientP = filepath.Join(dir, "client") + string(filepath.Separator)
		serverP = filepath.Join(dir, "server") + string(filepath.Separator)
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := syncCall.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		switch p := m[1]; {
		case p == filepath.Join(dir, begin):
			inside = true
		case p == filepath.Join(dir, end):
			if !inside {
				return c, fmt.Errorf("strace output: marker %s before %s", end, begin)
			}
			seen = true
			inside = false
		case !inside:
		case strings.HasPrefix(p, clientP):
			c.client++
		case strings.HasPrefix(p, serverP):
			c.server++
		}
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("strace output: %w", err)
	}
	if !seen {
		return c, fmt.Errorf("strace output: markers %s and %s not both seen", begin, end)
	}
	return c, nil
}

// runFsync: see the comment at the top of this file. It reports no rows,
// only a progress line, when strace or Config.Self is missing, or against
// an external server (whose fsyncs are not in this machine's processes).
func runFsync(ctx context.Context, r *runner) ([]Result, error) {
	strace, err := exec.LookPath("strace")
	switch {
	case err != nil:
		r.step("fsync: skipped, no strace on PATH")
		return nil, nil
	case len(r.cfg.Self) == 0:
		r.step("fsync: skipped, Config.Self not set")
		return nil, nil
	case r.cfg.NATSURL != "":
		r.step("fsync: skipped against an external server")
		return nil, nil
	}
	var rows []Result
	for _, sm := range r.syncs() {
		rs, err := r.fsync(ctx, strace, sm)
		rows = append(rows, rs...)
		if err != nil {
			return rows, err
		}
	}
	return rows, nil
}

func (r *runner) fsync(ctx context.Context, strace string, sm syncMode) ([]Result, error) {
	n := max(fsyncWriters, r.sizes.Fsync)
	r.step("fsync: %d Replica.Put calls under strace (sync=%s)", n, sm.name)
	dir, err := r.tempDir()
	if err != nil {
		return nil, err
	}
	spec, err := json.Marshal(fsyncSpec{Dir: dir, N: n, Sync: sm.name})
	if err != nil {
		return nil, fmt.Errorf("fsync: %w", err)
	}
	out := filepath.Join(dir, "strace.out")
	args := append([]string{"-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,sync_file_range,syncfs", "-e", "signal=none", "-o", out}, r.cfg.Self...)
	cmd := exec.CommandContext(ctx, strace, args...)
	cmd.Env = append(os.Environ(), FsyncChildEnv+"="+string(spec))
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("fsync: %s: %w: %s", strings.Join(cmd.Args, " "), err, lastLines(b, 10))
	}
	ebb, err := countFsyncs(out, dir, markBegin, markEnd)
	if err != nil {
		return nil, fmt.Errorf("fsync: %w", err)
	}
	raw, err := countFsyncs(out, dir, markRawBegin, markRawEnd)
	if err != nil {
		return nil, fmt.Errorf("fsync: %w", err)
	}
	per := func(c int) float64 { return float64(c) / float64(n) }
	note := fmt.Sprintf("%d writes from %d goroutines until Sync returned, under strace -f; raw PublishMsgAsync of as many events: %.3f server fsyncs per message", n, fsyncWriters, per(raw.server))
	rows := []Result{
		r.row(Result{Key: "fsync-client/" + sm.name, Workload: "fsyncs per write, client process (Replica.Put online)", Sync: sm.name, Unit: "fsyncs/write",
			Ebb: per(ebb.client), Raw: 1, Ratio: per(ebb.client), Target: Target{AtMost, 1},
			Baseline: "the target: one fsync per write", Note: note + "; counts fsync/fdatasync on the replica's files"}),
		r.row(Result{Key: "fsync-server/" + sm.name, Workload: "fsyncs per write, server (JetStream and projector)", Sync: sm.name, Unit: "fsyncs/write",
			Ebb: per(ebb.server), Raw: 1, Ratio: per(ebb.server), Target: Target{AtMost, 1},
			Baseline: "the target: one fsync per write", Note: note + "; counts fsync/fdatasync on JetStream's store and the projector's view"}),
	}
	for i := range rows {
		rows[i].Rounds = 1
	}
	return rows, nil
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
