package projection_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/pgtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

const pgProjectorHelperEnv = "EBB_PG_PROJECTOR_HELPER"

// TestPostgresProjectorHelper is the projector child of
// TestPostgresStore_ProjectorCrash. It runs until it is killed.
func TestPostgresProjectorHelper(t *testing.T) {
	if os.Getenv(pgProjectorHelperEnv) != "1" {
		t.Skip("helper process for TestPostgresStore_ProjectorCrash")
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
	store, err := projection.OpenPostgres(context.Background(), os.Getenv(pgURLEnv), projection.PostgresOptions{Schema: os.Getenv(pgSchemaEnv)})
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

// TestPostgresStore_ProjectorCrash is TestProjector_Crash on PostgreSQL:
// a projector child on a PostgresStore is SIGKILLed at random moments
// while it applies events under the four policies (stale bases, deletes,
// resolves, retries beyond the dedupe window, values jsonb cannot hold),
// then the view must equal its rebuild (into bbolt: the hashes match only
// if PostgreSQL gives back exactly what was committed), every event must
// have exactly one receipt, and CHANGES must hold every document's state.
func TestPostgresStore_ProjectorCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	e := newEnv(t)
	srv := pgtest.MustStart(t)
	schema := pgtest.Schema(t)

	const total = 1500
	ids := map[string]bool{}
	rng := rand.New(rand.NewPCG(7, 8))
	writers := []*writer{newWriter("acme", "w1", 0), newWriter("acme", "w2", -time.Hour), newWriter("beta", "w3", 0)}
	colls := []string{"notes", "profiles", "orders", "contracts"}
	writes := map[string]uint64{}
	conflicts := map[string][]string{}
	var sent []*nats.Msg
	for i := range total {
		if len(sent) > 0 && rng.IntN(20) == 0 { // a retry beyond the dedupe window
			old := sent[rng.IntN(len(sent))]
			if _, err := e.js.PublishMsgAsync(&nats.Msg{Subject: old.Subject, Data: old.Data}, jetstream.WithMsgID(fmt.Sprintf("retry-%d", i))); err != nil {
				t.Fatal(err)
			}
			continue
		}
		w := writers[rng.IntN(len(writers))]
		coll := colls[rng.IntN(len(colls))]
		doc := fmt.Sprintf("doc.%d", rng.IntN(10))
		key := w.tenant + "/" + coll + "/" + doc
		base := uint64(0)
		if n := writes[key]; n > 0 {
			base = n - uint64(rng.IntN(int(min(n, 3))+1)) + 1
		}
		var ev *events.Event
		switch r := rng.IntN(100); {
		case r < 45:
			ev = w.event(coll, doc, events.OpPatch, base, map[string]any{fmt.Sprintf("f%d", rng.IntN(4)): i})
		case r < 80:
			ev = w.event(coll, doc, events.OpPut, base, map[string]any{"f0": i, "f1": w.client})
		case r < 85:
			ev = w.event(coll, doc, events.OpPut, base, map[string]any{"f0": fmt.Sprintf("nul\x00%d", i)})
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
			t.Fatal(err)
		}
		if i%200 == 199 {
			<-e.js.PublishAsyncComplete()
		}
	}
	<-e.js.PublishAsyncComplete()
	end := lastSeq(t, e.js, events.StreamEvents)

	// Kill the projector at random moments until it has gone through
	// everything, at least 10 times.
	store := mustOpenPostgres(t, srv, schema)
	ctx := context.Background()
	checkpoint := func() uint64 {
		cp, err := store.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return cp
	}
	for kill := 0; ; kill++ {
		before := msgCount(t, e.js, events.StreamReceipts)
		cmd := exec.Command(os.Args[0], "-test.run=^TestPostgresProjectorHelper$")
		cmd.Env = append(os.Environ(), pgProjectorHelperEnv+"=1", helperURLEnv+"="+e.srv.ClientURL(), pgURLEnv+"="+srv.URL, pgSchemaEnv+"="+schema)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		target := before + uint64(rng.IntN(120)+1)
		deadline := time.Now().Add(10 * time.Second)
		for msgCount(t, e.js, events.StreamReceipts) < target && checkpoint() < end && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // polling interval, not synchronisation
		}
		<-time.After(time.Duration(rng.IntN(15)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if kill > 100 {
			t.Fatal("the projector never got through the stream")
		}
		if kill >= 10 && checkpoint() >= end {
			break
		}
	}

	// Finish in process (publishing what the outbox still holds) and check.
	cfg := projection.Config{Policies: testPolicies()}
	p := startProjector(t, e.js, store, cfg)
	waitCheckpoint(t, p, end)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := projection.Verify(ctx, e.js, store, cfg)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	t.Logf("verify: %d documents, checkpoint %d, hash %s", rep.Docs, rep.Checkpoint, rep.LiveHash[:12])

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

	chg, err := e.js.Stream(ctx, events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	out, err := store.Outbox(ctx, 0)
	if err != nil || len(out) != 0 {
		t.Fatalf("outbox after a clean close: %d entries (%v)", len(out), err)
	}
	docs := 0
	err = store.Scan(ctx, func(d projection.Doc) error {
		docs++
		subj := events.ChangeSubject(d.Tenant, d.Collection, d.ID)
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
