package projection_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// instance is one ebb server's projector group, on its own connection.
type instance struct {
	nc *nats.Conn
	g  *projection.Group
}

func startInstance(t *testing.T, e *env, store projection.Store, name string, gc projection.GroupConfig) *instance {
	t.Helper()
	nc := embeddedtest.MustConnect(t, e.srv)
	js := embeddedtest.MustJetStream(t, nc)
	gc.Holder = name
	g, err := projection.NewGroup(js, store, projection.Config{Logger: testLogger(t).With("instance", name)}, gc)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return &instance{nc: nc, g: g}
}

func held(i *instance) int { return len(i.g.Stats().Held) }

// TestGroup_Takeover runs two instances over one view, four partitions:
// the first takes every lease; killed (its connection gone: it can
// neither renew nor release) while events keep coming, the second takes
// every partition over within a bounded time, and every event is applied
// exactly once: none twice, none skipped.
func TestGroup_Takeover(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	gc := projection.GroupConfig{Partitions: 4, LeaseTTL: 2 * time.Second}
	a := startInstance(t, e, store, "a", gc)
	waitFor(t, 20*time.Second, "instance a to hold every partition", func() bool { return held(a) == 4 })
	b := startInstance(t, e, store, "b", gc)

	writers := []*writer{newWriter("acme", "dev1", 0), newWriter("acme", "dev2", 0), newWriter("globex", "dev1", 0)}
	var evs []*events.Event
	var mu sync.Mutex
	publishN := func(n int) {
		for k := range n {
			w := writers[k%len(writers)]
			mu.Lock()
			ev := w.event("notes", fmt.Sprintf("%s-%d", w.client, w.seq+1), events.OpPut, 0, map[string]any{"k": k})
			evs = append(evs, ev)
			mu.Unlock()
			publish(t, e.js, eventMsg(t, ev), ev.ID)
		}
	}
	applied := func() uint64 { return a.g.Stats().Applied + b.g.Stats().Applied }
	publishN(200)
	waitFor(t, 30*time.Second, "the first events applied", func() bool { return applied() == 200 })
	if held(b) != 0 {
		t.Fatalf("instance b holds %v while a holds every partition", b.g.Stats().Held)
	}

	// Kill a in the middle of a stream of events.
	done := make(chan struct{})
	go func() { defer close(done); publishN(300) }()
	waitFor(t, 30*time.Second, "some of the next events applied", func() bool { return applied() > 250 })
	killed := time.Now()
	a.nc.Close()
	waitFor(t, 30*time.Second, "instance b to hold every partition", func() bool { return held(b) == 4 })
	takeover := time.Since(killed)
	<-done
	last := lastSeq(t, e.js, events.StreamEvents)
	missing := func() int {
		n := 0
		for _, ev := range evs {
			d, err := store.Get(context.Background(), events.DocAddress{Tenant: ev.Tenant, Collection: ev.Collection, Doc: ev.Doc})
			if err != nil || d.Version == 0 {
				n++
			}
		}
		return n
	}
	waitFor(t, 30*time.Second, "every event in the view", func() bool { return missing() == 0 })
	caughtUp := time.Since(killed)
	waitFor(t, 30*time.Second, "instance a's projectors stopped", func() bool { return held(a) == 0 })
	t.Logf("instance a killed: b held every partition after %s, the view had every event after %s", takeover, caughtUp)
	if takeover > 3*gc.LeaseTTL {
		t.Errorf("takeover took %s, more than 3 lease TTLs (%s)", takeover, 3*gc.LeaseTTL)
	}

	// Applied counts batches published; a's last ones were committed (the
	// view has them) but not published before it died: b published them
	// from the partitions' outboxes, and applied none of them again.
	sa, sb := a.g.Stats(), b.g.Stats()
	if got := sa.Applied + sb.Applied; got > 500 || sa.Duplicates+sb.Duplicates != 0 || sa.Dead+sb.Dead != 0 {
		t.Errorf("applied %d+%d, duplicates %d+%d, dead %d+%d: want at most 500 applied, no duplicate, no dead letter",
			sa.Applied, sb.Applied, sa.Duplicates, sb.Duplicates, sa.Dead, sb.Dead)
	}
	for _, ev := range evs {
		d, err := store.Get(context.Background(), events.DocAddress{Tenant: ev.Tenant, Collection: ev.Collection, Doc: ev.Doc})
		if err != nil {
			t.Fatal(err)
		}
		if d.Version != 1 || d.Event != ev.ID {
			t.Fatalf("document %s/%s: version %d by %s, want version 1 by %s", ev.Tenant, ev.Doc, d.Version, d.Event, ev.ID)
		}
	}
	for i := range 4 {
		ps, err := store.Partition(context.Background(), projection.Partition{Index: i, Count: 4})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, fmt.Sprintf("partition %d at the end of EVENTS", i), func() bool {
			cp, err := ps.Checkpoint(context.Background())
			return err == nil && cp == last
		})
	}
	// Every change reached CHANGES: one per document.
	waitFor(t, 10*time.Second, "a change per document in CHANGES", func() bool { return msgCount(t, e.js, events.StreamChanges) == 500 })
}

// A projector of a partition that another committed past is fenced: it
// stops with ErrCheckpoint rather than apply again what was applied.
func TestProjector_PartitionFenced(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	ps, err := store.Partition(context.Background(), projection.Partition{Index: 0, Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	w := newWriter("acme", "dev1", 0)
	for k := range 20 {
		ev := w.event("notes", fmt.Sprintf("d%d", k), events.OpPut, 0, nil)
		publish(t, e.js, eventMsg(t, ev), ev.ID)
	}
	// Another holder of partition 0 commits after this one read the
	// checkpoint: simulated by committing directly once it has started.
	cfg := projection.Config{Partition: projection.Partition{Index: 0, Count: 2}, BatchSize: 1}
	p, err := projection.New(e.js, ps, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	prev := p.Stats().Checkpoint
	if err := ps.Commit(context.Background(), &projection.Batch{Checkpoint: 1000, Prev: &prev}); err != nil {
		// The projector may have committed first; then fence it from there.
		cp, _ := ps.Checkpoint(context.Background())
		if err := ps.Commit(context.Background(), &projection.Batch{Checkpoint: 1000, Prev: &cp}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the fenced projector did not stop")
	}
	if err := p.Err(); !errors.Is(err, projection.ErrCheckpoint) {
		t.Fatalf("fenced projector stopped with %v, want ErrCheckpoint", err)
	}
}

// gate pauses whoever waits on it while shut, as a stopped process would.
type gate struct {
	mu      sync.Mutex
	open    chan struct{}
	waiting atomic.Int64
}

func newGate() *gate {
	g := &gate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gate) shut() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

// wait blocks while the gate is shut, ignoring ctx: a paused process
// does not notice its deadlines passing. It reports whether it found the
// gate shut (and so was paused).
func (g *gate) wait() (paused bool) {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	select {
	case <-ch:
		return false
	default:
	}
	g.waiting.Add(1)
	<-ch
	g.waiting.Add(-1)
	return true
}

// pausedStore is a PartitionedStore whose partitions' Commits wait on a
// gate, and counts the commits refused by the fence.
type pausedStore struct {
	projection.PartitionedStore
	g      *gate
	fenced atomic.Int64
}

func (s *pausedStore) Partition(ctx context.Context, p projection.Partition) (projection.Store, error) {
	ps, err := s.PartitionedStore.Partition(ctx, p)
	if err != nil {
		return nil, err
	}
	return &pausedPartition{Store: ps, s: s}, nil
}

type pausedPartition struct {
	projection.Store
	s *pausedStore
}

func (p *pausedPartition) Commit(ctx context.Context, b *projection.Batch) error {
	p.s.g.wait()
	err := p.Store.Commit(ctx, b)
	if errors.Is(err, projection.ErrCheckpoint) {
		p.s.fenced.Add(1)
	}
	return err
}

// pausedJS is JetStream whose lease renewals wait on a gate.
type pausedJS struct {
	jetstream.JetStream
	g *gate
}

func (j *pausedJS) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := j.JetStream.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &pausedKV{KeyValue: kv, g: j.g}, nil
}

type pausedKV struct {
	jetstream.KeyValue
	g *gate
}

func (kv *pausedKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	kv.g.wait()
	return kv.KeyValue.Update(ctx, key, value, revision)
}

// TestGroup_PausedHolderFenced pauses the active instance (a GC pause, a
// stopped VM) while its projectors are in the middle of committing: its
// leases expire, the other instance takes every partition over and
// applies the events; when the first resumes, its stale commits are
// refused by the fence and it stops, and no event is applied twice.
func TestGroup_PausedHolderFenced(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	gc := projection.GroupConfig{Partitions: 4, LeaseTTL: 2 * time.Second}
	pause := newGate()
	ps := &pausedStore{PartitionedStore: store, g: pause}
	nca := embeddedtest.MustConnect(t, e.srv)
	gca := gc
	gca.Holder = "a"
	ga, err := projection.NewGroup(&pausedJS{JetStream: embeddedtest.MustJetStream(t, nca), g: pause}, ps,
		projection.Config{Logger: testLogger(t).With("instance", "a")}, gca)
	if err != nil {
		t.Fatal(err)
	}
	if err := ga.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pause.release(); ga.Close() })
	a := &instance{nc: nca, g: ga}
	waitFor(t, 20*time.Second, "instance a to hold every partition", func() bool { return held(a) == 4 })
	b := startInstance(t, e, store, "b", gc)

	w := newWriter("acme", "dev1", 0)
	var evs []*events.Event
	put := func(n int) {
		for range n {
			ev := w.event("notes", fmt.Sprintf("d%d", w.seq+1), events.OpPut, 0, nil)
			evs = append(evs, ev)
			publish(t, e.js, eventMsg(t, ev), ev.ID)
		}
	}
	put(40)
	waitFor(t, 30*time.Second, "the first events applied", func() bool { return a.g.Stats().Applied == 40 })

	pause.shut()
	paused := time.Now()
	put(40)
	waitFor(t, 10*time.Second, "instance a's projectors stuck in Commit", func() bool { return pause.waiting.Load() >= 1 })
	waitFor(t, 30*time.Second, "instance b to hold every partition", func() bool { return held(b) == 4 })
	t.Logf("instance a paused: b held every partition after %s", time.Since(paused))
	waitFor(t, 30*time.Second, "every event in the view", func() bool {
		for _, ev := range evs {
			d, err := store.Get(context.Background(), events.DocAddress{Tenant: ev.Tenant, Collection: ev.Collection, Doc: ev.Doc})
			if err != nil || d.Version == 0 {
				return false
			}
		}
		return true
	})
	pause.release()
	waitFor(t, 30*time.Second, "instance a to let go of every partition", func() bool { return held(a) == 0 })
	if ps.fenced.Load() == 0 {
		t.Errorf("no commit of the paused instance was fenced")
	}
	for _, ev := range evs {
		d, err := store.Get(context.Background(), events.DocAddress{Tenant: ev.Tenant, Collection: ev.Collection, Doc: ev.Doc})
		if err != nil {
			t.Fatal(err)
		}
		if d.Version != 1 || d.Event != ev.ID {
			t.Fatalf("document %s: version %d by %s, want version 1 by %s", ev.Doc, d.Version, d.Event, ev.ID)
		}
	}
	if st := b.g.Stats(); st.Duplicates != 0 || st.Dead != 0 {
		t.Errorf("instance b: %d duplicates, %d dead letters; want none", st.Duplicates, st.Dead)
	}
	t.Logf("fenced commits of the paused instance: %d", ps.fenced.Load())
}

// TestGroup_KillLoop is the long version of TestGroup_Takeover, run by
// hand: EBB_HA_KILL_LOOP=<rounds> go test -run TestGroup_KillLoop
// ./projection/. Three instances share one view of eight partitions
// while one writer goroutine writes; each round kills the instance that
// holds the most partitions and starts a new one. It logs every
// takeover and checks every event applied once.
func TestGroup_KillLoop(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("EBB_HA_KILL_LOOP"))
	if rounds <= 0 {
		t.Skip("set EBB_HA_KILL_LOOP to the number of rounds")
	}
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	gc := projection.GroupConfig{Partitions: 8, LeaseTTL: 2 * time.Second}
	var live []*instance
	for k := range 3 {
		live = append(live, startInstance(t, e, store, fmt.Sprintf("i%d", k), gc))
	}
	heldBy := func() int {
		n := 0
		for _, in := range live {
			n += held(in)
		}
		return n
	}
	waitFor(t, 30*time.Second, "every partition held", func() bool { return heldBy() == 8 })
	stop := make(chan struct{})
	done := make(chan struct{})
	var mu sync.Mutex
	var evs []*events.Event
	go func() {
		defer close(done)
		w := newWriter("acme", "dev1", 0)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ev := w.event("notes", fmt.Sprintf("d%d", w.seq+1), events.OpPut, 0, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := e.js.PublishMsg(ctx, eventMsg(t, ev), jetstream.WithMsgID(ev.ID))
			cancel()
			if err == nil {
				mu.Lock()
				evs = append(evs, ev)
				mu.Unlock()
			}
		}
	}()
	var worst time.Duration
	for r := range rounds {
		victim := 0
		for k, in := range live {
			if held(in) > held(live[victim]) {
				victim = k
			}
		}
		v := live[victim]
		n := held(v)
		killed := time.Now()
		v.nc.Close()
		live = append(live[:victim], live[victim+1:]...)
		waitFor(t, 30*time.Second, "every partition held again", func() bool { return heldBy() == 8 })
		d := time.Since(killed)
		worst = max(worst, d)
		t.Logf("round %d: killed an instance holding %d partitions; all held again after %s", r, n, d)
		v.g.Close()
		live = append(live, startInstance(t, e, store, fmt.Sprintf("i%d", 3+r), gc))
	}
	close(stop)
	<-done
	waitFor(t, 60*time.Second, "every event in the view", func() bool {
		for _, ev := range evs {
			d, err := store.Get(context.Background(), events.DocAddress{Tenant: ev.Tenant, Collection: ev.Collection, Doc: ev.Doc})
			if err != nil || d.Version == 0 {
				return false
			}
		}
		return true
	})
	for _, ev := range evs {
		d, _ := store.Get(context.Background(), events.DocAddress{Tenant: ev.Tenant, Collection: ev.Collection, Doc: ev.Doc})
		if d.Version != 1 || d.Event != ev.ID {
			t.Fatalf("document %s: version %d by %s, want version 1 by %s", ev.Doc, d.Version, d.Event, ev.ID)
		}
	}
	t.Logf("%d rounds, %d events, each applied once; worst takeover %s", rounds, len(evs), worst)
}
