package producer

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

const (
	envHelper = "EBB_PRODUCER_HELPER"
	envLog    = "EBB_PRODUCER_LOG"
	envURL    = "EBB_PRODUCER_URL"
)

// TestHelperProcess is the child of TestCrash_NoAckedWriteLost: it appends
// events in a loop while a Publisher drains them to the server at envURL,
// printing each event id only after Append returned. It runs until killed.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(envHelper) != "crash" {
		t.Skip("helper process for TestCrash_NoAckedWriteLost")
	}
	l, err := Open(os.Getenv(envLog), LogConfig{Tenant: "t1"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	nc, err := nats.Connect(os.Getenv(envURL), nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	p, err := NewPublisher(l, js, nc, PublisherConfig{MaxInFlight: 32})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := p.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := range 100_000 { // bounded; the parent kills it long before
		doc := fmt.Sprintf("d%d", i%5)
		var e *events.Event
		if i%7 == 3 { // sometimes a small batch
			evs, err := l.AppendBatch(context.Background(), []Write{put("c", doc, i), put("c", "d9", i)})
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			if _, err := fmt.Fprintf(os.Stdout, "%s\n%s\n", evs[0].ID, evs[1].ID); err != nil {
				os.Exit(3)
			}
			continue
		}
		e, err = l.Append(context.Background(), put("c", doc, i))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if _, err := fmt.Fprintf(os.Stdout, "%s\n", e.ID); err != nil {
			os.Exit(3)
		}
	}
	os.Exit(0)
}

// TestCrash_NoAckedWriteLost kills a writing, publishing child process with
// SIGKILL at random moments, 25 times, on the same log file, then drains
// the log: every event the child reported (after Append returned) is in
// EVENTS exactly once, in client-sequence order per document.
func TestCrash_NoAckedWriteLost(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	const kills = 25
	s := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	mustEnsureStreams(t, js, events.StreamOptions{})
	path := filepath.Join(t.TempDir(), "log.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))

	reported := map[string]bool{}
	var order []string
	for k := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), envHelper+"=crash", envLog+"="+path, envURL+"="+s.ClientURL())
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill after a random number of reported appends; 0 kills it while
		// it opens the log and connects.
		killAfter := rng.IntN(80)
		sc := bufio.NewScanner(out)
		n := 0
		killed := false
		if killAfter == 0 {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
		for sc.Scan() {
			id := sc.Text()
			if !reported[id] {
				reported[id] = true
				order = append(order, id)
			}
			n++
			if !killed && n >= killAfter {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		_, _ = io.Copy(io.Discard, out)
		err = cmd.Wait()
		if !killed || err == nil {
			t.Fatalf("run %d: child ended on its own: %v\n%s", k, err, stderr.String())
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("run %d: child: %v\n%s", k, err, stderr.String())
		}
	}
	if len(reported) == 0 {
		t.Fatal("child reported no appends")
	}

	// Drain what the children left behind.
	l := mustOpen(t, path)
	before, err := l.Entries(t.Context(), StatePublished)
	if err != nil {
		t.Fatal(err)
	}
	p := mustPublisher(t, l, js, nc, PublisherConfig{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	es, err := l.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	inLog := map[string]Entry{}
	for i, e := range es {
		if e.Event.Seq != uint64(i+1) {
			t.Fatalf("log entry %d has seq %d", i, e.Event.Seq)
		}
		if e.State != StatePublished {
			t.Errorf("entry %d (%s) is %s", e.Event.Seq, e.Event.ID, e.State)
		}
		inLog[e.Event.ID] = e
	}
	stored := readEvents(t, js)
	copies := map[string]int{}
	for _, se := range stored {
		copies[se.MsgID]++
		if _, ok := inLog[se.MsgID]; !ok {
			t.Errorf("stream holds %s, which is not in the log", se.MsgID)
		}
	}
	for _, id := range order {
		if _, ok := inLog[id]; !ok {
			t.Errorf("reported event %s is not in the log", id)
		}
		if copies[id] != 1 {
			t.Errorf("reported event %s is in EVENTS %d times", id, copies[id])
		}
	}
	if len(stored) != len(es) {
		t.Errorf("stream holds %d events, log %d", len(stored), len(es))
	}
	checkOrder(t, stored, DefaultMaxInFlight)
	t.Logf("%d kills, %d events reported, %d in the log (%d published by the children), %d in EVENTS",
		kills, len(reported), len(es), len(before), len(stored))
}
