package projection_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

const (
	helperEnv      = "EBB_PROJECTION_HELPER"
	helperURLEnv   = "EBB_PROJECTION_NATS"
	helperStoreEnv = "EBB_PROJECTION_STORE"
)

// TestHelperProcess is the projector child of TestProjector_Crash. It runs
// until it is killed.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for TestProjector_Crash")
	}
	nc, err := nats.Connect(os.Getenv(helperURLEnv), nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		os.Exit(2)
	}
	store, err := projection.OpenBolt(os.Getenv(helperStoreEnv), projection.BoltOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	p, err := projection.New(js, store, projection.Config{Policies: testPolicies(), BatchSize: 64})
	if err != nil {
		os.Exit(2)
	}
	err = p.Run(context.Background()) // until SIGKILL
	fmt.Fprintln(os.Stderr, "projector stopped:", err)
	os.Exit(3)
}

// TestProjector_Crash kills a projector child process with SIGKILL at random
// moments while events stream in, then checks invariants 2, 4 and 5: the
// view equals its rebuild, every event has exactly one receipt, every
// document's versions rise by exactly one, and CHANGES holds every
// document's last state.
func TestProjector_Crash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	e := newEnv(t)
	storePath := filepath.Join(t.TempDir(), "view.db")

	// Every change published, including republished ones, seen on core NATS.
	type seen struct {
		version uint64
		event   string
	}
	var mu sync.Mutex
	observed := map[string][]seen{}
	sub, err := e.nc.Subscribe(events.ChangesPrefix+".>", func(m *nats.Msg) {
		c, err := events.DecodeChange(m.Data)
		if err != nil {
			t.Errorf("change on %s: %v", m.Subject, err)
			return
		}
		mu.Lock()
		observed[m.Subject] = append(observed[m.Subject], seen{c.Version, c.Event})
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)

	// The publisher: several clients (one with a clock an hour slow), four
	// collections under the four policies, stale bases, duplicates.
	const total = 3000
	ids := map[string]bool{} // every valid event id published
	pubDone := make(chan error, 1)
	go func() {
		pubDone <- func() error {
			rng := rand.New(rand.NewPCG(1, 2))
			writers := []*writer{newWriter("acme", "w1", 0), newWriter("acme", "w2", 0), newWriter("acme", "w3", -time.Hour), newWriter("beta", "w1", 0), newWriter("beta", "w4", time.Second)}
			colls := []string{"notes", "profiles", "orders", "contracts"}
			writes := map[string]uint64{} // rough count of writes per doc: the base versions clients guess from
			conflicts := map[string][]string{}
			var sent []*nats.Msg
			pending := 0
			for i := 0; i < total; i++ {
				w := writers[rng.IntN(len(writers))]
				if len(sent) > 0 && rng.IntN(20) == 0 { // a retry beyond the dedupe window
					old := sent[rng.IntN(len(sent))]
					if _, err := e.js.PublishMsgAsync(&nats.Msg{Subject: old.Subject, Data: old.Data}, jetstream.WithMsgID(fmt.Sprintf("retry-%d", i))); err != nil {
						return err
					}
					continue
				}
				coll := colls[rng.IntN(len(colls))]
				doc := fmt.Sprintf("doc.%d", rng.IntN(12))
				key := w.tenant + "/" + coll + "/" + doc
				n := writes[key]
				base := uint64(0)
				if n > 0 {
					base = n - uint64(rng.IntN(int(min(n, 3))+1)) + 1 // often current-ish, sometimes stale
				}
				var ev *events.Event
				switch r := rng.IntN(100); {
				case r < 45:
					ev = w.event(coll, doc, events.OpPatch, base, map[string]any{fmt.Sprintf("f%d", rng.IntN(4)): i})
				case r < 85:
					ev = w.event(coll, doc, events.OpPut, base, map[string]any{"f0": i, "f1": w.client})
				case r < 93 || len(conflicts[key]) == 0:
					ev = w.event(coll, doc, events.OpDelete, base, nil)
				default:
					ev = w.event(coll, doc, events.OpResolve, base, map[string]any{"f0": "resolved"})
					ev.Resolves = conflicts[key][rng.IntN(len(conflicts[key]))]
				}
				writes[key]++
				if coll == "contracts" {
					conflicts[key] = append(conflicts[key], ev.ID)
				}
				ids[ev.ID] = true
				m := eventMsg(t, ev)
				sent = append(sent, m)
				if _, err := e.js.PublishMsgAsync(m, jetstream.WithMsgID(ev.ID)); err != nil {
					return err
				}
				if pending++; pending == 100 {
					pending = 0
					select {
					case <-e.js.PublishAsyncComplete():
					case <-time.After(10 * time.Second):
						return fmt.Errorf("publish stalled")
					}
				}
			}
			select {
			case <-e.js.PublishAsyncComplete():
				return nil
			case <-time.After(10 * time.Second):
				return fmt.Errorf("publish stalled")
			}
		}()
	}()

	// Kill the projector at random moments, at least 20 times, and keep
	// going until the publisher is done.
	rng := rand.New(rand.NewPCG(3, 4))
	var pubErr error
	published := false
	for kills := 0; kills < 20 || !published; kills++ {
		if kills > 200 {
			t.Fatal("publisher never finished")
		}
		before := msgCount(t, e.js, events.StreamReceipts)
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), helperEnv+"=1", helperURLEnv+"="+e.srv.ClientURL(), helperStoreEnv+"="+storePath)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Let it make some progress (or find nothing to do), then kill it at a
		// random point.
		target := before + uint64(rng.IntN(150)+1)
		deadline := time.Now().Add(10 * time.Second)
		for msgCount(t, e.js, events.StreamReceipts) < target && time.Now().Before(deadline) {
			if published && lastSeq(t, e.js, events.StreamEvents) == 0 {
				break
			}
			if published && time.Until(deadline) < 9*time.Second { // nothing left to apply soon enough
				break
			}
			time.Sleep(time.Millisecond) // polling interval, not synchronisation
		}
		<-time.After(time.Duration(rng.IntN(15)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if !published {
			select {
			case pubErr = <-pubDone:
				published = true
			default:
			}
		}
	}
	if pubErr != nil {
		t.Fatal(pubErr)
	}

	// Finish in process and check the invariants.
	store := mustOpenBolt(t, storePath)
	p := startProjector(t, e.js, store, projection.Config{Policies: testPolicies()})
	waitCheckpoint(t, p, lastSeq(t, e.js, events.StreamEvents))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rep, err := projection.Verify(ctx, e.js, store, projection.Config{Policies: testPolicies()})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	t.Logf("verify: %d documents, checkpoint %d, hash %s", rep.Docs, rep.Checkpoint, rep.LiveHash[:12])

	// Exactly one receipt per event.
	receipts := map[string]int{}
	for _, m := range readAll(t, e.js, events.StreamReceipts) {
		r, err := events.DecodeReceipt(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		receipts[r.Event]++
	}
	for id := range ids {
		if receipts[id] != 1 {
			t.Errorf("event %s has %d receipts, want 1", id, receipts[id])
		}
	}
	if len(receipts) != len(ids) {
		t.Errorf("%d events have receipts, %d were published", len(receipts), len(ids))
	}

	// Versions per document rise by exactly one, each version from one event,
	// and CHANGES holds the last state of every document.
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	chg, err := e.js.Stream(ctx, events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	docs := 0
	err = store.Scan(ctx, func(d projection.Doc) error {
		docs++
		subj := events.ChangeSubject(d.Tenant, d.Collection, d.ID)
		waitFor(t, 5*time.Second, "changes of "+subj, func() bool {
			mu.Lock()
			defer mu.Unlock()
			s := observed[subj]
			return len(s) > 0 && s[len(s)-1].version == d.Version
		})
		mu.Lock()
		byVersion := map[uint64]string{}
		for _, s := range observed[subj] {
			if ev, ok := byVersion[s.version]; ok && ev != s.event {
				t.Errorf("%s version %d from two events: %s and %s", subj, s.version, ev, s.event)
			}
			byVersion[s.version] = s.event
		}
		mu.Unlock()
		for v := uint64(1); v <= d.Version; v++ {
			if _, ok := byVersion[v]; !ok {
				t.Errorf("%s: version %d never published (final %d)", subj, v, d.Version)
			}
		}
		if uint64(len(byVersion)) != d.Version {
			t.Errorf("%s: %d versions published, final version %d", subj, len(byVersion), d.Version)
		}
		last, err := chg.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			return fmt.Errorf("last change of %s: %w", subj, err)
		}
		c, err := events.DecodeChange(last.Data)
		if err != nil {
			return err
		}
		if c.Version != d.Version || c.Event != d.Event || c.Deleted != d.Deleted {
			t.Errorf("%s: CHANGES holds v%d (%s), view v%d (%s)", subj, c.Version, c.Event, d.Version, d.Event)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if docs == 0 {
		t.Fatal("no documents")
	}
}
