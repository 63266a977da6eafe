package producer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

const (
	envGroupHelper = "EBB_PRODUCER_GROUP_HELPER"
	envGroupRun    = "EBB_PRODUCER_GROUP_RUN"
)

// TestHelperProcessGroup is the child of TestCrash_GroupCommit: 8
// goroutines append batches of 1 to 3 writes, tagged "<run>-<writer>-<n>-<size>",
// and settle some of them; each line it prints ("A id..." or "S id") comes
// after the call returned. It runs until killed.
func TestHelperProcessGroup(t *testing.T) {
	if os.Getenv(envGroupHelper) != "crash" {
		t.Skip("helper process for TestCrash_GroupCommit")
	}
	l, err := Open(os.Getenv(envLog), LogConfig{Tenant: "t1"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	say := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if _, err := fmt.Fprintln(os.Stdout, s); err != nil {
			os.Exit(3)
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 100_000 { // bounded; the parent kills it long before
				size := 1 + (n+g)%3
				tag := fmt.Sprintf("%s-%d-%d-%d", os.Getenv(envGroupRun), g, n, size)
				ws := make([]Write, size)
				for i := range ws {
					ws[i] = put("c", fmt.Sprintf("d%d", (n+i)%10), tag)
				}
				evs, err := l.AppendBatch(context.Background(), ws)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				ids := make([]string, len(evs))
				for i, e := range evs {
					ids[i] = e.ID
				}
				say("A " + strings.Join(ids, " "))
				if n%4 == 1 {
					e := evs[0]
					err := l.Update(context.Background(), func(tx *Tx) error {
						return tx.Settle(&events.Receipt{Event: e.ID, Tenant: e.Tenant, Client: e.Client, Seq: e.Seq, Outcome: events.OutcomeApplied, Version: 1})
					})
					if err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(2)
					}
					say("S " + e.ID)
				}
			}
		}()
	}
	wg.Wait()
	os.Exit(0)
}

// TestCrash_GroupCommit kills a child whose 8 writers are group-committed,
// 8 times at random moments, on one log file: every batch the child
// reported is stored whole, no batch is stored in part, every reported
// settle holds, sequences have no holes, and the unsettled index agrees
// with a full scan.
func TestCrash_GroupCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	const kills = 8
	path := filepath.Join(t.TempDir(), "log.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	appended, settled := map[string]bool{}, map[string]bool{}
	for k := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessGroup$")
		cmd.Env = append(os.Environ(), envGroupHelper+"=crash", envLog+"="+path, fmt.Sprintf("%s=%d", envGroupRun, k))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := rng.IntN(300)
		killed := false
		if killAfter == 0 {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
		sc := bufio.NewScanner(out)
		for n := 1; sc.Scan(); n++ {
			f := strings.Fields(sc.Text())
			for _, id := range f[1:] {
				if f[0] == "A" {
					appended[id] = true
				} else {
					settled[id] = true
				}
			}
			if !killed && n >= killAfter {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		_, _ = io.Copy(io.Discard, out)
		err = cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !killed || !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("run %d: child: %v\n%s", k, err, stderr.String())
		}
	}
	if len(appended) == 0 {
		t.Fatal("child reported no appends")
	}

	l := mustOpen(t, path)
	es, err := l.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	inLog := map[string]Entry{}
	tags := map[string]int{}
	var evs []*events.Event
	for i, e := range es {
		if e.Event.Seq != uint64(i+1) {
			t.Fatalf("log entry %d has seq %d: a hole", i, e.Event.Seq)
		}
		inLog[e.Event.ID] = e
		evs = append(evs, e.Event)
		var tag string
		if err := json.Unmarshal(e.Event.Fields["v"], &tag); err != nil {
			t.Fatal(err)
		}
		tags[tag]++
	}
	for tag, n := range tags {
		var run, g, i, size int
		if _, err := fmt.Sscanf(tag, "%d-%d-%d-%d", &run, &g, &i, &size); err != nil {
			t.Fatal(err)
		}
		if n != size {
			t.Errorf("batch %s: %d of its %d writes stored", tag, n, size)
		}
	}
	for id := range appended {
		if _, ok := inLog[id]; !ok {
			t.Errorf("reported event %s is not in the log", id)
		}
	}
	for id := range settled {
		if inLog[id].State != StateSettled {
			t.Errorf("reported settled event %s is %s", id, inLog[id].State)
		}
	}
	checkIndex(t, l, evs)
	t.Logf("%d kills, %d events reported, %d settled, %d in the log", kills, len(appended), len(settled), len(es))
}
