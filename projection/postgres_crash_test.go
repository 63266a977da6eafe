package projection_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/pgtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

const (
	pgHelperEnv    = "EBB_PG_COMMIT_HELPER"
	pgURLEnv       = "EBB_PG_URL"
	pgSchemaEnv    = "EBB_PG_SCHEMA"
	crashDocs      = 64 // documents every crash batch rewrites
	crashKeepBatch = 3  // a batch's outbox entries are published by the batch this many later
)

var crashMarksCreated = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// crashBatch is batch n of the commit crash test: every document at
// version n with field n = n, the writer's mark at n with a hole at n-1
// when n is even, the stream marks counting n, two outbox entries of its
// own, and the removal of batch n-crashKeepBatch's entries. Whatever the
// store holds after a crash must be exactly one such batch's state.
func crashBatch(n uint64, published []uint64) *projection.Batch {
	b := &projection.Batch{
		Checkpoint: n,
		Streams: &projection.StreamMarks{Events: projection.StreamMark{Created: crashMarksCreated, FirstSeq: 1},
			Changes: projection.StreamMark{Created: crashMarksCreated, LastSeq: n, Msgs: n}},
		HighWater: map[projection.ClientKey]projection.HighWater{{Tenant: "t", Client: "w"}: crashMark(n)},
		Published: published,
	}
	for i := range crashDocs {
		b.Docs = append(b.Docs, projection.Doc{Tenant: "t", Collection: "c", ID: fmt.Sprintf("d%02d", i), Version: n,
			Fields: events.Fields{"n": json.RawMessage(strconv.FormatUint(n, 10)), "pad": json.RawMessage(`"` + fmt.Sprintf("%0200d", i) + `"`)},
			Event:  fmt.Sprintf("e%d", n), Client: "w", Seq: n, HLC: events.HLC{Wall: int64(n)}})
	}
	for i := range 2 {
		b.Outbox = append(b.Outbox, projection.OutboxEntry{Subject: "s", MsgID: fmt.Sprintf("%d-%d", n, i), Data: []byte(strconv.FormatUint(n, 10))})
	}
	return b
}

func crashMark(n uint64) projection.HighWater {
	h := projection.HighWater{Seq: n}
	if n%2 == 0 && n > 1 {
		h.Holes = []projection.SeqRange{{From: n - 1, To: n - 1}}
	}
	return h
}

// TestPostgresCommitHelper is the child of TestPostgresStore_CrashCommit:
// it commits crashBatch after crashBatch, from the store's checkpoint on,
// until it is killed.
func TestPostgresCommitHelper(t *testing.T) {
	if os.Getenv(pgHelperEnv) != "1" {
		t.Skip("helper process for TestPostgresStore_CrashCommit")
	}
	ctx := context.Background()
	s, err := projection.OpenPostgres(ctx, os.Getenv(pgURLEnv), projection.PostgresOptions{Schema: os.Getenv(pgSchemaEnv)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	n, err := s.Checkpoint(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for n++; ; n++ {
		// Publish the entries of batch n-crashKeepBatch (and anything
		// older a crash left): what the projector's next batch does.
		out, err := s.Outbox(ctx, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		var pub []uint64
		for _, e := range out {
			if b, _ := strconv.ParseUint(string(e.Data), 10, 64); b+crashKeepBatch <= n {
				pub = append(pub, e.Key)
			}
		}
		if err := s.Commit(ctx, crashBatch(n, pub)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
}

// TestPostgresStore_CrashCommit kills a process committing large batches
// with SIGKILL at random moments, 12 times, and checks after each kill
// that the store holds exactly one batch's state: checkpoint, documents,
// high-water mark, stream marks and outbox agree.
func TestPostgresStore_CrashCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	srv := pgtest.MustStart(t)
	schema := pgtest.Schema(t)
	s := mustOpenPostgres(t, srv, schema)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	var last uint64
	for kill := range 12 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPostgresCommitHelper$")
		cmd.Env = append(os.Environ(), pgHelperEnv+"=1", pgURLEnv+"="+srv.URL, pgSchemaEnv+"="+schema)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		target := last + uint64(rng.IntN(10)+1)
		waitFor(t, 60*time.Second, fmt.Sprintf("checkpoint %d (kill %d)", target, kill), func() bool {
			select {
			case err := <-exited:
				t.Fatalf("helper exited by itself: %v", err)
			default:
			}
			cp, err := s.Checkpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return cp >= target
		})
		<-time.After(time.Duration(rng.IntN(20)) * time.Millisecond) // a random point in a later commit
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-exited
		// The server may still be rolling back the killed connection's
		// transaction; reads see committed state only, so check now.
		cp := checkCrashState(t, s)
		if cp < last {
			t.Fatalf("kill %d: checkpoint went back from %d to %d", kill, last, cp)
		}
		t.Logf("kill %d at checkpoint %d", kill, cp)
		last = cp
	}
}

// checkCrashState checks that s holds exactly crashBatch(cp)'s state, cp
// its checkpoint, and returns cp.
func checkCrashState(t *testing.T, s projection.Store) uint64 {
	t.Helper()
	ctx := context.Background()
	cp, err := s.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp == 0 {
		t.Fatal("nothing committed")
	}
	docs := 0
	err = s.Scan(ctx, func(d projection.Doc) error {
		docs++
		if d.Version != cp || string(d.Fields["n"]) != strconv.FormatUint(cp, 10) || d.Seq != cp {
			t.Errorf("checkpoint %d, document %s at v%d n=%s seq %d", cp, d.ID, d.Version, d.Fields["n"], d.Seq)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if docs != crashDocs {
		t.Errorf("checkpoint %d: %d documents, want %d", cp, docs, crashDocs)
	}
	hw, err := s.HighWater(ctx, "t", "w")
	if err != nil {
		t.Fatal(err)
	}
	if want := crashMark(cp); hw.Seq != want.Seq || len(hw.Holes) != len(want.Holes) {
		t.Errorf("checkpoint %d: high-water %+v, want %+v", cp, hw, want)
	}
	m, err := s.Streams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Changes.LastSeq != cp || !m.Events.Created.Equal(crashMarksCreated) {
		t.Errorf("checkpoint %d: stream marks %+v", cp, m)
	}
	out, err := s.Outbox(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Batches cp-crashKeepBatch+1 .. cp, two entries each, in order.
	var want []string
	for n := cp - min(cp, crashKeepBatch-1); n <= cp; n++ {
		if n > 0 {
			want = append(want, fmt.Sprintf("%d-0", n), fmt.Sprintf("%d-1", n))
		}
	}
	var got []string
	for i, e := range out {
		got = append(got, e.MsgID)
		if i > 0 && e.Key <= out[i-1].Key {
			t.Errorf("outbox keys %d then %d", out[i-1].Key, e.Key)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("checkpoint %d: outbox %v, want %v", cp, got, want)
	}
	if t.Failed() {
		t.FailNow()
	}
	return cp
}
