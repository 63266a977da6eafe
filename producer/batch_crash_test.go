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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

const envBatchHelper = "EBB_BATCH_CRASH_HELPER"

var batchCrashBucket = []byte("test.batch.crash")

// TestHelperProcessBatchCrash: 6 goroutines append one write, then settle it
// through Log.Batch (as the receipt and change followers now do), then put
// a key through Log.Batch; each line is printed after the call returned.
func TestHelperProcessBatchCrash(t *testing.T) {
	if os.Getenv(envBatchHelper) != "crash" {
		t.Skip("helper")
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
	run := os.Getenv(envGroupRun)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 100_000 {
				e, err := l.Append(context.Background(), put("c", fmt.Sprintf("d%d", n%7), n))
				if err != nil {
					os.Exit(2)
				}
				say("A " + e.ID)
				if n%2 == 0 {
					err := l.Batch(context.Background(), func(tx *Tx) error {
						return tx.Settle(&events.Receipt{Event: e.ID, Tenant: e.Tenant, Client: e.Client, Seq: e.Seq, Outcome: events.OutcomeApplied, Version: 1})
					})
					if err != nil {
						os.Exit(2)
					}
					say("S " + e.ID)
				}
				key := fmt.Sprintf("%s-%d-%d", run, g, n)
				err = l.Batch(context.Background(), func(tx *Tx) error {
					b, err := tx.CreateBucketIfNotExists(batchCrashBucket)
					if err != nil {
						return err
					}
					return b.Put([]byte(key), []byte("v"))
				})
				if err != nil {
					os.Exit(2)
				}
				say("K " + key)
			}
		}()
	}
	wg.Wait()
	os.Exit(0)
}

// TestCrash_BatchDurableOnReturn: whatever a Batch reported (its call
// returned nil) survives a SIGKILL: settles hold, keys are stored.
func TestCrash_BatchDurableOnReturn(t *testing.T) {
	const kills = 8
	path := filepath.Join(t.TempDir(), "log.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	appended, settled, keys := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for k := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessBatchCrash$")
		cmd.Env = append(os.Environ(), envBatchHelper+"=crash", envLog+"="+path, fmt.Sprintf("%s=%d", envGroupRun, k))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 50 + rng.IntN(600)
		killed := false
		sc := bufio.NewScanner(out)
		for n := 1; sc.Scan(); n++ {
			f := strings.Fields(sc.Text())
			switch f[0] {
			case "A":
				appended[f[1]] = true
			case "S":
				settled[f[1]] = true
			case "K":
				keys[f[1]] = true
			}
			if !killed && n >= killAfter {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		if !killed {
			t.Fatalf("run %d: child ended by itself: %s", k, stderr.String())
		}
	}
	l := mustOpen(t, path)
	es, err := l.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	inLog := map[string]Entry{}
	var evs []*events.Event
	for _, e := range es {
		inLog[e.Event.ID] = e
		evs = append(evs, e.Event)
	}
	lost := 0
	for id := range appended {
		if _, ok := inLog[id]; !ok {
			lost++
			t.Errorf("reported append %s lost", id)
		}
	}
	for id := range settled {
		if inLog[id].State != StateSettled {
			lost++
			t.Errorf("reported Batch settle of %s lost: %s", id, inLog[id].State)
		}
	}
	stored := storedKeysIn(t, l)
	for k := range keys {
		if !stored[k] {
			lost++
			t.Errorf("reported Batch key %s lost", k)
		}
	}
	checkIndex(t, l, evs)
	t.Logf("%d kills: %d appends, %d Batch settles, %d Batch keys reported; %d lost", kills, len(appended), len(settled), len(keys), lost)
}

func storedKeysIn(t *testing.T, l *Log) map[string]bool {
	got := map[string]bool{}
	err := l.View(t.Context(), func(tx *Tx) error {
		b := tx.Bucket(batchCrashBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error { got[string(k)] = true; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
