package consumer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// serverView is what the test expects the server view to be: doc id ->
// last change published.
type serverView map[string]*events.Change

// publishChanges publishes total changes spread round-robin over docs
// documents of collection "c" in tenant "t1", asynchronously, and returns the
// last change of every document.
func publishChanges(tb testing.TB, js jetstream.JetStream, docs, total int) serverView {
	tb.Helper()
	view := serverView{}
	versions := make([]uint64, docs)
	const window = 2000
	futures := make([]jetstream.PubAckFuture, 0, window)
	drain := func() {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				tb.Fatalf("publish change: %v", err)
			case <-time.After(30 * time.Second):
				tb.Fatal("publish change: no ack")
			}
		}
		futures = futures[:0]
	}
	for i := range total {
		d := i % docs
		versions[d]++
		ch := testChange("t1", "c", fmt.Sprintf("doc-%05d", d), versions[d], i)
		b, err := events.EncodeChange(ch)
		if err != nil {
			tb.Fatal(err)
		}
		f, err := js.PublishAsync(events.ChangeSubject(ch.Tenant, ch.Collection, ch.Doc), b)
		if err != nil {
			tb.Fatalf("publish change: %v", err)
		}
		futures = append(futures, f)
		if len(futures) == window {
			drain()
		}
		view[ch.Doc] = ch
	}
	drain()
	return view
}

// checkView fails tb unless r's view of collection "c" equals want.
func checkView(tb testing.TB, r *Replica, want serverView) {
	tb.Helper()
	docs, err := r.List(tb.Context(), "c", true)
	if err != nil {
		tb.Fatal(err)
	}
	if len(docs) != len(want) {
		tb.Fatalf("replica holds %d documents, server %d", len(docs), len(want))
	}
	for _, d := range docs {
		w := want[d.ID]
		if w == nil {
			tb.Fatalf("replica holds %s, server does not", d.ID)
		}
		if d.Version != w.Version || d.Deleted != w.Deleted || !fieldsEqual(d.Fields, w.Fields) || d.Pending != 0 {
			tb.Fatalf("doc %s: replica v%d %s pending %d, server v%d %s", d.ID, d.Version, d.Fields, d.Pending, w.Version, w.Fields)
		}
	}
}

func fieldsEqual(a, b events.Fields) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// TestReplica_CatchUpDownloadsEachDocOnce: a replica offline while 100k
// changes land on 10k documents receives exactly 10k messages when it comes
// back (CHANGES keeps the last change per document) and ends equal to the
// server view. The changes are published straight into CHANGES (running the
// projector on 100k events under -race would not fit the time budget).
func TestReplica_CatchUpDownloadsEachDocOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("100k changes")
	}
	_, nc, js := mustServer(t)
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want := publishChanges(t, js, 10_000, 100_000)
	publishChange(t, js, testChange("t2", "c", "other-tenant", 1, 0))

	if err := r.Attach(t.Context(), nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	rep, err := r.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := r.Status()
	if st.Changes.Applied != 10_000 {
		t.Errorf("received %d change messages, want 10000 (one per document)", st.Changes.Applied)
	}
	if rep.Pulled != 10_000 || !st.Changes.Done() {
		t.Errorf("sync report %+v, status %+v", rep, st.Changes)
	}
	checkView(t, r, want)
}

// TestReplica_ResumesAfterSIGKILL kills the replica process (a re-exec of
// this test binary) with SIGKILL at random points of its catch-up; each
// restart resumes from its stored sequence (never from before it), and the
// last run ends equal to the server view. The child reports the sequence
// it has stored after each commit, and the parent kills it once that passes
// a random target: so every kill lands mid-catch-up (the child is still
// applying and committing) however fast catch-up is.
func TestReplica_ResumesAfterSIGKILL(t *testing.T) {
	s, _, js := mustServer(t)
	const docs = 10_000
	const total = 2 * docs // the stream's last sequence
	want := publishChanges(t, js, docs, total)
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 7))

	// run starts the child and, if killAt > 0, kills it once it reports a
	// stored sequence of at least killAt.
	run := func(killAt uint64) (starts []uint64, finished bool) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
		cmd.Env = append(os.Environ(), "EBB_CONSUMER_HELPER=catchup", "EBB_DIR="+dir, "EBB_URL="+s.ClientURL())
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		killed := false
		for l := range lines {
			if v, ok := strings.CutPrefix(l, "start "); ok {
				n, _ := strconv.ParseUint(v, 10, 64)
				starts = append(starts, n)
			}
			if v, ok := strings.CutPrefix(l, "at "); ok && killAt > 0 && !killed {
				if n, _ := strconv.ParseUint(v, 10, 64); n >= killAt {
					_ = cmd.Process.Signal(syscall.SIGKILL)
					killed = true
				}
			}
			if l == "done" {
				finished = true
			}
		}
		_ = cmd.Wait()
		return starts, finished
	}

	var last uint64
	mid := false // some run started in the middle of catch-up
	killed := 0
	for i := range 5 {
		// A target in the first quarter of what is left, so plenty remains
		// to apply when the kill arrives.
		target := last + 1 + uint64(rng.IntN(int(total-last)/4+1))
		starts, finished := run(target)
		if len(starts) != 1 {
			t.Fatalf("run %d: starts %v", i, starts)
		}
		if starts[0] < last {
			t.Fatalf("run %d started at %d, before the %d stored earlier", i, starts[0], last)
		}
		last = starts[0]
		mid = mid || (last > 0 && last < total)
		if finished {
			t.Logf("run %d finished before the kill at %d", i, target)
			break
		}
		killed++
	}
	starts, finished := run(0)
	if !finished {
		t.Fatal("final run did not finish")
	}
	if len(starts) != 1 || starts[0] < last {
		t.Fatalf("final run started at %v, before the %d stored earlier", starts, last)
	}
	mid = mid || (starts[0] > 0 && starts[0] < total)
	t.Logf("%d kills; final run started at %d", killed, starts[0])
	if !mid {
		t.Errorf("no kill landed in the middle of catch-up (final start %d): the test proved nothing", starts[0])
	}
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: dir, Tenant: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkView(t, r, want)
}

// TestHelperProcess is the child of the crash test: it opens the replica,
// prints the stored sequence it starts from, syncs, and prints "done".
func TestHelperProcess(t *testing.T) {
	if os.Getenv("EBB_CONSUMER_HELPER") != "catchup" {
		t.Skip("helper process for TestReplica_ResumesAfterSIGKILL")
	}
	nc, err := nats.Connect(os.Getenv("EBB_URL"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r, err := OpenReplica(context.Background(), ReplicaConfig{Dir: os.Getenv("EBB_DIR"), Tenant: "t1", CatchUpBatch: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fmt.Printf("start %d\n", r.Status().Changes.Seq)
	if err := r.Attach(context.Background(), nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Report the stored sequence as it moves, for the parent to aim its
	// kill; polling a progress report, not synchronising anything.
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		var seq uint64
		for {
			if s := r.Status().Changes.Seq; s != seq {
				seq = s
				fmt.Printf("at %d\n", seq)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	_, err = r.Sync(ctx)
	cancel()
	<-reported
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("done")
}
