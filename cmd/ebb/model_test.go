package main

// TestModel is a randomized, seeded whole-system test of ebb (issue 11,
// "the test that finds the next one"), in the spirit of Jepsen's checkers
// and FoundationDB's simulation. One run, from one seed:
//
//   - a real `ebb serve` child process (embedded NATS on a loopback port,
//     data in t.TempDir()), with one collection per policy: lww, merge,
//     reject and manual;
//   - 3 to 5 replicas, each a consumer.Replica in its own child process of
//     the test binary (model_agent_test.go), doing random puts, patches,
//     deletes and resolves on a few documents per collection;
//   - faults: replicas detached (offline) and reattached, replicas SIGKILLed
//     in the middle of a write, the server SIGKILLed or stopped and
//     restarted later (writes go on offline meanwhile), RECEIPTS purged
//     whole or its older half (receipts expiring by age), CHANGES purged;
//   - a reference model of what each replica acknowledged: a write is
//     acknowledged when the agent replied with its event id after the
//     Replica call returned (durable in the local log); a write whose agent
//     was killed before replying is "maybe".
//
// Then writes stop, the server comes back, every replica attaches and syncs
// twice, a fresh replica joins and syncs, and the checker
// (model_check_test.go) reads the replicas' dumps (view, conflicts,
// rejections, every log entry's fate), EVENTS, CHANGES, a live record of
// every change published, the server's view file and `ebb verify`, and
// reports each violated invariant with its evidence: none vanished (every
// acknowledged write is in its writer's log, reached EVENTS and got a fate
// its writer can see), exactly once, versions (rise by one, one event per
// version, every version accounted for), no silent loss (a stale write is
// refused, kept as a conflict, or recorded, per policy), convergence
// (replicas, the fresh one and CHANGES equal the server view), determinism
// (`ebb verify`), and sync (every final sync completes).
//
// Run it (from the module root):
//
//	go test -race -count=1 ./cmd/ebb/ -run '^TestModel$' -v                          # short: kept seeds, at least 2 runs
//	go test -race -count=1 ./cmd/ebb/ -run '^TestModel$' -ebb.model.seed=42 -v       # one seed
//	go test -count=1 -timeout 0 ./cmd/ebb/ -run '^TestModel$' -ebb.model.duration=30m -ebb.model.keep -v  # long
//
// -ebb.model.ops sets the steps per seed (default 200, 1000 in the long
// run); -ebb.model.replicas the replicas (default 3, 3-5 by seed in the
// long run); -ebb.model.faults narrows the faults (detach, kill, server,
// purge-receipts, purge-changes; default all) to isolate a finding;
// -ebb.model.keep goes on after a failing seed in the long run. The choices
// of every step come from the seed alone; what the processes make of them
// (how far a killed write got, which receipt a purge caught) varies with
// timing, so a seed reproduces its finding most runs, not every run. Seeds
// that found bugs are kept in testdata/model/seeds.txt with their settings
// and run first, as regression cases. On failure the test logs the seed,
// the command that reruns it, and the trace of steps.

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

var (
	modelSeed     = flag.Uint64("ebb.model.seed", 0, "TestModel: run only this seed")
	modelDuration = flag.Duration("ebb.model.duration", 0, "TestModel: run random seeds for this long (the long run)")
	modelOps      = flag.Int("ebb.model.ops", 0, "TestModel: steps per seed (0: 90, or 400 in the long run)")
	modelKeep     = flag.Bool("ebb.model.keep", false, "TestModel long run: go on after a failing seed")
	modelFaults   = flag.String("ebb.model.faults", "all", "TestModel: faults to inject, comma-separated from detach, kill, server, purge-receipts, purge-changes (or all, or none)")
	modelReplicas = flag.Int("ebb.model.replicas", 0, "TestModel: replicas per seed (0: 3, or 3-5 by seed in the long run)")
)

const (
	// modelSyncTimeout bounds each final sync, in milliseconds.
	modelSyncTimeout = 5000
	modelTenant      = "acme"
	modelSeeds       = "testdata/model/seeds.txt"
)

var (
	modelColls = []string{"lww", "merge", "reject", "manual"}
	modelDocs  = []string{"d0", "d1", "d2"}
)

func TestModel(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary and child processes")
	}
	if os.Getenv(modelAgentEnv) != "" {
		t.Skip("inside an agent")
	}
	bin, err := buildEbb()
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case *modelSeed != 0:
		runModelSeed(t, bin, modelCase{seed: *modelSeed, steps: modelSteps(false), replicas: modelReplicaCount(*modelSeed, false), faults: *modelFaults})
	case *modelDuration > 0:
		deadline := time.Now().Add(*modelDuration)
		var runs, failed int
		for time.Now().Before(deadline) {
			seed := rand.Uint64()
			runs++
			if !runModelSeed(t, bin, modelCase{seed: seed, steps: modelSteps(true), replicas: modelReplicaCount(seed, true), faults: *modelFaults}) {
				failed++
				if !*modelKeep {
					break
				}
			}
		}
		t.Logf("long run: %d seeds, %d failed, %d steps each", runs, failed, modelSteps(true))
	default:
		// The kept seeds, and fixed ones up to two runs in all.
		cases := keptModelSeeds(t)
		for s := uint64(1); len(cases) < 2; s++ {
			if !slices.ContainsFunc(cases, func(c modelCase) bool { return c.seed == s }) {
				cases = append(cases, modelCase{seed: s, steps: modelSteps(false), replicas: modelReplicaCount(s, false), faults: *modelFaults})
			}
		}
		for _, c := range cases {
			runModelSeed(t, bin, c)
		}
	}
}

func modelReplicaCount(seed uint64, long bool) int {
	switch {
	case *modelReplicas > 0:
		return *modelReplicas
	case long:
		return 3 + int(seed%3)
	}
	return 3
}

func modelSteps(long bool) int {
	switch {
	case *modelOps > 0:
		return *modelOps
	case long:
		return 1000
	}
	return 200
}

// modelCase is one seed's run and its settings.
type modelCase struct {
	seed            uint64
	steps, replicas int
	faults          string // as -ebb.model.faults
}

// keptModelSeeds reads testdata/model/seeds.txt: one case per line, a seed
// then optional ops=N, replicas=N and faults=LIST (the flags' defaults
// otherwise), then an optional "# why" comment.
func keptModelSeeds(t *testing.T) []modelCase {
	f, err := os.Open(modelSeeds)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []modelCase
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		words := strings.Fields(line)
		if len(words) == 0 {
			continue
		}
		seed, err := strconv.ParseUint(words[0], 10, 64)
		if err != nil {
			t.Fatalf("%s: bad seed %q: %v", modelSeeds, words[0], err)
		}
		c := modelCase{seed: seed, steps: modelSteps(false), replicas: modelReplicaCount(seed, false), faults: *modelFaults}
		for _, w := range words[1:] {
			k, v, _ := strings.Cut(w, "=")
			switch k {
			case "ops":
				c.steps, err = strconv.Atoi(v)
			case "replicas":
				c.replicas, err = strconv.Atoi(v)
			case "faults":
				c.faults = v
			default:
				err = fmt.Errorf("unknown setting %q", k)
			}
			if err != nil {
				t.Fatalf("%s: seed %d: %q: %v", modelSeeds, seed, w, err)
			}
		}
		out = append(out, c)
	}
	return out
}

// fault reports whether fault is enabled for this run (-ebb.model.faults).
func (r *modelRun) fault(fault string) bool {
	for _, f := range strings.Split(r.faults, ",") {
		if f = strings.TrimSpace(f); f == "all" || f == fault {
			return true
		}
	}
	return false
}

// modelRun is the state of one seed's run.
type modelRun struct {
	t       *testing.T
	rng     *rand.Rand
	seed    uint64
	root    string
	srv     *modelServer
	obs     *modelObserver
	agents  []*modelAgent
	clients []string
	acked   map[string]string // event id -> client: acknowledged writes
	maybe   int               // writes whose agent was killed before replying
	stats   modelStats
	downFor int // steps the server stays down (0: up)
	trace   []string
	faults  string    // as -ebb.model.faults
	began   time.Time // when the run began: the trace's times count from it
}

type modelStats struct {
	Writes, Acked, Maybe, ReplicaKills, ServerKills, ServerStops, Purges, Detaches int
}

// logf adds a step to the trace, after the time since the run began
// (which the checker's evidence, such as when a receipt was heard, uses).
func (r *modelRun) logf(format string, args ...any) {
	r.trace = append(r.trace, fmt.Sprintf("[%7.3fs] ", time.Since(r.began).Seconds())+fmt.Sprintf(format, args...))
}

// runModelSeed runs one seed as a subtest and reports whether it passed.
func runModelSeed(t *testing.T, bin string, c modelCase) bool {
	seed, steps, replicas := c.seed, c.steps, c.replicas
	return t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
		r := &modelRun{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
			root: t.TempDir(), acked: map[string]string{}, faults: c.faults, began: time.Now()}
		defer func() {
			if t.Failed() {
				t.Logf("model seed %d FAILED; reproduce with:\n  go test -race -count=1 ./cmd/ebb/ -run '^TestModel$' -ebb.model.seed=%d -ebb.model.ops=%d -ebb.model.replicas=%d -ebb.model.faults=%s -v",
					seed, seed, steps, replicas, c.faults)
			}
		}()
		r.run(steps, replicas, bin)
	})
}

func (r *modelRun) policies() map[string]string {
	p := map[string]string{}
	for _, c := range modelColls {
		p[c] = c
	}
	return p
}

func (r *modelRun) agentConfig(client string, attach bool) modelAgentConfig {
	return modelAgentConfig{Dir: modelAgentDir(r.root, client), Client: client, Tenant: modelTenant,
		NATS: r.srv.url(), Attach: attach, Policies: r.policies(), Collections: modelColls}
}

func (r *modelRun) run(steps, n int, bin string) {
	t := r.t
	var args []string
	for _, c := range modelColls {
		args = append(args, "--policy", c+"="+c)
	}
	r.srv = &modelServer{t: t, bin: bin, data: modelServerData(r.root), port: freePort(t), args: args}
	if err := r.srv.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.srv.kill)
	obs, err := newModelObserver(r.srv.url())
	if err != nil {
		t.Fatal(err)
	}
	r.obs = obs
	t.Cleanup(obs.close)

	for i := range n {
		c := fmt.Sprintf("r%d", i)
		r.clients = append(r.clients, c)
		r.agents = append(r.agents, startModelAgent(t, r.agentConfig(c, true)))
	}
	t.Cleanup(func() {
		for _, a := range r.agents {
			if a != nil {
				a.kill()
			}
		}
	})

	start := time.Now()
	defer func() {
		if t.Failed() {
			r.dumpTrace()
		}
	}()
	for i := range steps {
		r.step(i)
		if t.Failed() {
			return
		}
	}
	t.Logf("seed %d: %d replicas, %d steps in %v: %+v", r.seed, n, steps, time.Since(start).Round(time.Millisecond), r.stats)
	r.settleAndCheck()
}

func (r *modelRun) dumpTrace() {
	r.t.Logf("model seed %d trace (%d steps):\n  %s", r.seed, len(r.trace), strings.Join(r.trace, "\n  "))
}

// step draws one step from the seed and performs it. Every random choice of
// the step is drawn first, so the sequence of choices depends on the seed
// only, not on what the processes did.
func (r *modelRun) step(i int) {
	k := r.rng.IntN(100)
	who := r.rng.IntN(len(r.agents))
	coll := modelColls[r.rng.IntN(len(modelColls))]
	doc := modelDocs[r.rng.IntN(len(modelDocs))]
	fields, putFields := r.randomFields(), r.randomFields()
	for f, v := range putFields {
		if string(v) == "null" {
			delete(putFields, f) // only a patch may remove a field
		}
	}
	delay := time.Duration(r.rng.IntN(8000)) * time.Microsecond
	downFor := 2 + r.rng.IntN(12)
	if r.downFor > 0 {
		r.downFor--
		if r.downFor == 0 {
			r.logf("%d: server restart", i)
			if err := r.srv.start(); err != nil {
				r.t.Fatalf("step %d: %v", i, err)
			}
		}
	}
	switch {
	case k < 30:
		r.write(i, who, modelCmd{Cmd: "write", Op: events.OpPut, Coll: coll, Doc: doc, Fields: putFields})
	case k < 52:
		r.write(i, who, modelCmd{Cmd: "write", Op: events.OpPatch, Coll: coll, Doc: doc, Fields: fields})
	case k < 58:
		r.write(i, who, modelCmd{Cmd: "write", Op: events.OpDelete, Coll: coll, Doc: doc})
	case k < 66:
		r.write(i, who, modelCmd{Cmd: "resolve", Coll: "manual", Doc: doc, Fields: putFields})
	case k < 76:
		if !r.srv.up() {
			r.write(i, who, modelCmd{Cmd: "write", Op: events.OpPatch, Coll: coll, Doc: doc, Fields: fields})
			return
		}
		rep, err := r.agents[who].call(modelCmd{Cmd: "sync", TimeoutMS: 2000}, 30*time.Second)
		r.must(i, err)
		r.logf("%d: %s sync: %v %s", i, r.clients[who], rep.OK, rep.Err)
	case k < 86 && !r.fault("detach"):
	case k < 80:
		rep, err := r.agents[who].call(modelCmd{Cmd: "detach"}, 30*time.Second)
		r.must(i, err)
		r.stats.Detaches++
		r.logf("%d: %s detach %v", i, r.clients[who], rep.OK)
	case k < 86:
		rep, err := r.agents[who].call(modelCmd{Cmd: "attach"}, 30*time.Second)
		r.must(i, err)
		r.logf("%d: %s attach: %v %s", i, r.clients[who], rep.OK, rep.Err)
	case k < 91 && !r.fault("kill"):
	case k < 91:
		r.killMidWrite(i, who, modelCmd{Cmd: "write", Op: events.OpPut, Coll: coll, Doc: doc, Fields: putFields}, delay)
	case k < 95 && !r.fault("server"):
	case k < 94:
		if r.srv.up() {
			r.stats.ServerKills++
			r.logf("%d: server SIGKILL, down %d steps", i, downFor)
			r.srv.kill()
			r.downFor = downFor
		}
	case k < 95:
		if r.srv.up() {
			r.stats.ServerStops++
			r.logf("%d: server SIGTERM, down %d steps", i, downFor)
			r.must(i, r.srv.stop())
			r.downFor = downFor
		}
	case k < 98 && !r.fault("purge-receipts"):
	case k < 97:
		if r.srv.up() {
			r.stats.Purges++
			r.purge(i, func(ctx context.Context) error {
				keep, err := r.obs.expire(ctx, events.StreamReceipts)
				r.logf("%d: the older half of RECEIPTS expires (first kept %d)", i, keep)
				return err
			})
		}
	case k < 98:
		if r.srv.up() {
			r.stats.Purges++
			r.logf("%d: purge RECEIPTS", i)
			r.purge(i, func(ctx context.Context) error { return r.obs.purge(ctx, events.StreamReceipts) })
		}
	case !r.fault("purge-changes"):
	default:
		if r.srv.up() {
			r.stats.Purges++
			r.logf("%d: purge CHANGES", i)
			r.purge(i, func(ctx context.Context) error { return r.obs.purge(ctx, events.StreamChanges) })
		}
	}
}

func (r *modelRun) purge(i int, fn func(ctx context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fn(ctx); err != nil {
		r.logf("%d: purge failed: %v", i, err) // the server may be restarting; not the product's fault
	}
}

func (r *modelRun) must(i int, err error) {
	if err != nil {
		r.t.Fatalf("step %d: %v", i, err)
	}
}

// randomFields returns one or two fields from a, b, c with small values,
// sometimes null (a patch removes the field).
func (r *modelRun) randomFields() events.Fields {
	f := events.Fields{}
	for range 1 + r.rng.IntN(2) {
		name := string(rune('a' + r.rng.IntN(3)))
		v := r.rng.IntN(10)
		if v == 0 {
			f[name] = json.RawMessage("null")
		} else {
			f[name] = json.RawMessage(strconv.Itoa(v))
		}
	}
	return f
}

// write performs one write and records it if acknowledged.
func (r *modelRun) write(i, who int, c modelCmd) {
	rep, err := r.agents[who].call(c, 60*time.Second)
	r.must(i, err)
	r.stats.Writes++
	switch {
	case rep.OK && rep.Skipped:
		r.logf("%d: %s %s %s/%s: no open conflict", i, r.clients[who], c.Cmd, c.Coll, c.Doc)
	case rep.OK:
		r.acked[rep.Event] = r.clients[who]
		r.stats.Acked++
		r.logf("%d: %s %s%s %s/%s %s -> %s", i, r.clients[who], c.Cmd, c.Op, c.Coll, c.Doc, modelFieldsString(c.Fields), rep.Event)
	default:
		// Refused before it was durable (a patch of a document the replica
		// does not have is still written; refusals here are the contract's).
		r.logf("%d: %s %s%s %s/%s refused: %s", i, r.clients[who], c.Cmd, c.Op, c.Coll, c.Doc, rep.Err)
	}
}

// killMidWrite sends a write, SIGKILLs the agent after delay, restarts it,
// and records the write as acknowledged if its reply made it out first.
func (r *modelRun) killMidWrite(i, who int, c modelCmd, delay time.Duration) {
	a := r.agents[who]
	r.must(i, a.send(c))
	time.Sleep(delay) // the kill point, drawn from the seed; not synchronisation
	reps := a.kill()
	r.stats.ReplicaKills++
	r.stats.Writes++
	acked := ""
	for _, rep := range reps {
		if rep.OK && rep.Event != "" {
			acked = rep.Event
			r.acked[rep.Event] = r.clients[who]
			r.stats.Acked++
		}
	}
	if acked == "" {
		r.stats.Maybe++
		r.maybe++
	}
	r.logf("%d: %s SIGKILL %v into put %s/%s %s: acked %q", i, r.clients[who], delay, c.Coll, c.Doc, modelFieldsString(c.Fields), acked)
	r.agents[who] = startModelAgent(r.t, r.agentConfig(r.clients[who], r.srv.up()))
}

func modelFieldsString(f events.Fields) string {
	if f == nil {
		return ""
	}
	b, _ := json.Marshal(f)
	return string(b)
}

// awaitReseed waits up to 30 s until CHANGES holds a message for every
// document the projector published a change of, and reports a convergence
// violation when it never does.
func (r *modelRun) awaitReseed(ev *modelEvidence) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		lack, err := r.obs.changesLacking(ctx)
		cancel()
		if err == nil && len(lack) == 0 {
			return
		}
		if time.Now().After(deadline) {
			ev.violate("convergence", "CHANGES still lacks %v 30 s after the faults stopped (never reseeded from the view; read error: %v)", lack, err)
			return
		}
		time.Sleep(100 * time.Millisecond) // polling pace, bounded by the deadline above
	}
}

// finalSync syncs a with a short timeout, tried again while the replica
// still makes progress (its pending writes fall), so a slow machine is not
// taken for a stuck write and a stuck write costs two timeouts.
func (r *modelRun) finalSync(a *modelAgent) modelReply {
	pending := -1
	for {
		rep, err := a.call(modelCmd{Cmd: "sync", TimeoutMS: modelSyncTimeout}, 60*time.Second)
		if err != nil {
			r.t.Fatal(err)
		}
		if rep.OK || !strings.Contains(rep.Err, "deadline") {
			return rep
		}
		d, err := a.call(modelCmd{Cmd: "dump"}, 60*time.Second)
		if err != nil || !d.OK {
			r.t.Fatalf("dump %s: %v %s", a.cfg.Client, err, d.Err)
		}
		if pending >= 0 && d.Dump.Pending >= pending {
			return rep
		}
		pending = d.Dump.Pending
	}
}

// settleAndCheck stops the faults, brings everyone online, syncs, gathers
// the evidence and checks it.
func (r *modelRun) settleAndCheck() {
	t := r.t
	if !r.srv.up() {
		r.logf("final: server restart")
		if err := r.srv.start(); err != nil {
			t.Fatal(err)
		}
	}
	ev := &modelEvidence{acked: r.acked, dumps: map[string]*modelDump{}, syncErrs: map[string]string{}}
	// The projector finds a purged CHANGES at its next look (every 2 s) and
	// reseeds it from the view; "everyone synced" means after that, so wait
	// (bounded) until CHANGES holds every document it ever published.
	r.awaitReseed(ev)
	for i, a := range r.agents {
		rep, err := a.call(modelCmd{Cmd: "attach"}, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK {
			ev.syncErrs[r.clients[i]] = "attach: " + rep.Err
		}
	}
	// Two rounds: the first pushes everyone's writes, the second pulls
	// what the others pushed after one's own first sync. A replica whose
	// first sync timed out is not given a second: a healthy sync takes
	// milliseconds here, and the short run must stay short.
	for round := range 2 {
		for i, a := range r.agents {
			if _, failed := ev.syncErrs[r.clients[i]]; failed {
				continue
			}
			rep := r.finalSync(a)
			if !rep.OK && (round == 1 || strings.Contains(rep.Err, "deadline")) {
				ev.syncErrs[r.clients[i]] = fmt.Sprintf("sync (round %d): %s", round+1, rep.Err)
			}
		}
	}
	late := startModelAgent(t, r.agentConfig("late", true))
	r.agents = append(r.agents, late)
	if rep := r.finalSync(late); !rep.OK {
		ev.syncErrs["late"] = "sync: " + rep.Err
	}
	for i, a := range r.agents {
		rep, err := a.call(modelCmd{Cmd: "dump"}, 60*time.Second)
		if err != nil || !rep.OK {
			t.Fatalf("dump %s: %v %s", a.cfg.Client, err, rep.Err)
		}
		client := a.cfg.Client
		if i < len(r.clients) {
			client = r.clients[i]
		}
		ev.dumps[client] = rep.Dump
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The watcher has read everything CHANGES holds.
	last, err := r.obs.lastSeq(ctx, events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the watcher to read CHANGES to its end", func() bool { _, s := r.obs.seen(); return s >= last })
	ev.seen, _ = r.obs.seen()
	ev.heard = r.obs.heard()
	ev.receipts, ev.began = r.obs.heardReceipts(), r.began
	msgs, err := r.obs.readAll(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	policies, err := projection.NewRegistry().Policies("", r.policies())
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) > 0 {
		if ev.replayed, err = modelReplay(ctx, r.obs.js, t.TempDir(), policies, msgs[len(msgs)-1].Sequence); err != nil {
			t.Fatal(err)
		}
	}
	ev.events = map[string][]*events.Event{}
	for _, m := range msgs {
		e, err := events.DecodeEvent(m.Data, events.Limits{})
		if err != nil {
			t.Fatalf("EVENTS seq %d undecodable: %v", m.Sequence, err)
		}
		ev.events[e.ID] = append(ev.events[e.ID], e)
	}
	cmsgs, err := r.obs.readAll(ctx, events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	ev.changesNow = map[string]*events.Change{}
	for _, m := range cmsgs {
		c, err := events.DecodeChange(m.Data)
		if err != nil {
			ev.violate("changes", "CHANGES seq %d undecodable: %v", m.Sequence, err)
			continue
		}
		k := modelKey(c.Collection, c.Doc)
		if old := ev.changesNow[k]; old == nil || c.Version > old.Version {
			ev.changesNow[k] = c
		}
	}
	agentLogs := map[string]string{}
	for _, a := range r.agents {
		if err := a.quit(); err != nil {
			t.Errorf("quit agent: %v", err)
		}
		agentLogs[a.cfg.Client] = a.logs()
	}
	r.agents = nil
	if err := r.srv.stop(); err != nil {
		t.Errorf("%v", err)
	}
	if err := ev.readServerView(ctx, r.srv.data); err != nil {
		t.Fatal(err)
	}
	ev.verifyOut, ev.verifyErr = modelVerify(r.srv.bin, r.srv.data)

	ev.check()
	t.Logf("seed %d: checked %d acknowledged writes (%d maybe), %d events, %d changes seen, %d documents; verify: %s",
		r.seed, len(r.acked), r.maybe, len(msgs), len(ev.heard), len(ev.view), strings.TrimSpace(ev.verifyOut))
	perInvariant := map[string]int{}
	for _, v := range ev.violations {
		inv, _, _ := strings.Cut(v, "]")
		if perInvariant[inv]++; perInvariant[inv] <= 12 {
			t.Errorf("VIOLATION %s", v)
		}
	}
	for inv, n := range perInvariant {
		if n > 12 {
			t.Errorf("VIOLATION %s]: %d more not shown", inv, n-12)
		}
	}
	if len(ev.violations) > 0 {
		t.Logf("server logs (last start):\n%s", modelTail(r.srv.logs.String(), 60))
		for _, c := range slices.Sorted(maps.Keys(agentLogs)) {
			t.Logf("replica %s logs (its last process):\n%s", c, modelTail(agentLogs[c], 40))
		}
	}
}

func modelTail(s string, n int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}
