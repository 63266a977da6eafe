package consumer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/producer"
)

const envOnlineCrash = "EBB_ONLINE_CRASH_HELPER"

// TestHelperProcessOnlineCrash: an attached replica whose 6 goroutines Put
// fresh documents, so every append shares its group commit with acks,
// receipts and changes (Log.Batch). "P doc n" is printed after Put returned.
func TestHelperProcessOnlineCrash(t *testing.T) {
	if os.Getenv(envOnlineCrash) != "run" {
		t.Skip("helper")
	}
	nc, err := nats.Connect(os.Getenv("EBB_URL"))
	if err != nil {
		os.Exit(2)
	}
	r, err := OpenReplica(context.Background(), ReplicaConfig{Dir: os.Getenv("EBB_DIR"), Tenant: "t1", Client: "alice", Conn: nc, Policies: testPolicies()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	run := os.Getenv("EBB_RUN")
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100_000 {
				doc := fmt.Sprintf("r%s-g%d-%d", run, g, i)
				if _, err := r.Put(context.Background(), "lww", doc, num(i)); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Printf("P %s %d\n", doc, i)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	os.Exit(0)
}

// TestCrash_OnlineWritesSurviveSharedCommits kills the child at random
// while its writes, acks, receipts and changes share commits, restarts it,
// then syncs: every write that returned is stored once, applied once
// (version 1) and settled; no write of the log is left pending.
func TestCrash_OnlineWritesSurviveSharedCommits(t *testing.T) {
	s, nc, js := mustServer(t)
	mustProjector(t, js, testPolicies())
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	reported := map[string]int{}
	for k := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessOnlineCrash$")
		cmd.Env = append(os.Environ(), envOnlineCrash+"=run", "EBB_DIR="+dir, "EBB_URL="+s.ClientURL(), fmt.Sprintf("EBB_RUN=%d", k))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 100 + rng.IntN(400)
		killed := false
		sc := bufio.NewScanner(out)
		for n := 1; sc.Scan(); n++ {
			f := strings.Fields(sc.Text())
			if len(f) == 3 && f[0] == "P" {
				var i int
				fmt.Sscan(f[2], &i)
				reported[f[1]] = i
			}
			if !killed && n >= killAfter {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		_ = cmd.Wait()
		if !killed {
			t.Fatalf("run %d ended by itself: %s", k, stderr.String())
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: dir, Tenant: "t1", Client: "alice", Conn: nc, Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	es, err := r.Log().Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	perDoc := map[string]int{}
	unsettled := 0
	for _, e := range es {
		perDoc[e.Event.Doc]++
		if e.State != producer.StateSettled {
			unsettled++
		}
	}
	if unsettled > 0 {
		t.Errorf("%d entries unsettled after Sync", unsettled)
	}
	bad := 0
	for doc, i := range reported {
		if perDoc[doc] != 1 {
			bad++
			t.Errorf("doc %s: %d log entries, want 1", doc, perDoc[doc])
			continue
		}
		d, err := r.Get(ctx, "lww", doc)
		if err != nil {
			bad++
			t.Errorf("doc %s: %v", doc, err)
			continue
		}
		var n int
		_ = json.Unmarshal(d.Fields["n"], &n)
		if d.Version != 1 || d.Pending != 0 || n != i {
			bad++
			t.Errorf("doc %s: version %d pending %d n %d, want 1, 0, %d", doc, d.Version, d.Pending, n, i)
		}
	}
	t.Logf("%d writes reported, %d log entries, %d bad", len(reported), len(es), bad)
}
