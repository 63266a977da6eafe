package projection_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/pgtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestVerify_MissingHistory: Verify (and the Rebuild under it) fails, fast,
// with ErrHistoryGone and a message saying what is missing, whenever
// EVENTS cannot give back the history up to the view's checkpoint; it
// never waits for events that will not come.
func TestVerify_MissingHistory(t *testing.T) {
	cases := []struct {
		name string
		// break removes part of the history of a view projected from 20
		// events (EVENTS 1..20, checkpoint 20).
		breakIt func(t *testing.T, e *env)
		want    string // in the error
	}{
		{"stream deleted", func(t *testing.T, e *env) {
			if err := e.js.DeleteStream(context.Background(), events.StreamEvents); err != nil {
				t.Fatal(err)
			}
		}, "EVENTS"},
		{"stream purged", func(t *testing.T, e *env) {
			s, err := e.js.Stream(context.Background(), events.StreamEvents)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Purge(context.Background()); err != nil {
				t.Fatal(err)
			}
		}, "starts at sequence 21"},
		{"first events expired", func(t *testing.T, e *env) {
			s, err := e.js.Stream(context.Background(), events.StreamEvents)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Purge(context.Background(), jetstream.WithPurgeSequence(5)); err != nil {
				t.Fatal(err)
			}
		}, "starts at sequence 5"},
		{"tail deleted", func(t *testing.T, e *env) {
			s, err := e.js.Stream(context.Background(), events.StreamEvents)
			if err != nil {
				t.Fatal(err)
			}
			for seq := uint64(16); seq <= 20; seq++ {
				if err := s.DeleteMsg(context.Background(), seq); err != nil {
					t.Fatal(err)
				}
			}
		}, "checkpoint 20"},
		{"stream recreated shorter", func(t *testing.T, e *env) {
			recreateStream(t, e, events.StreamEvents)
			publishPuts(t, e, newWriter("acme", "other", 0), 5)
		}, "checkpoint 20"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			store := mustOpenBolt(t, "")
			_, last := publishPuts(t, e, newWriter("acme", "phone", 0), 20)
			p := startProjector(t, e.js, store, projection.Config{})
			waitCheckpoint(t, p, last)
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			c.breakIt(t, e)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			_, err := projection.Verify(ctx, e.js, store, projection.Config{})
			if !errors.Is(err, projection.ErrHistoryGone) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Verify = %v after %s, want ErrHistoryGone mentioning %q", err, time.Since(start).Round(time.Millisecond), c.want)
			}
		})
	}
}

// TestVerify_Reanchored: a view re-anchored on a new EVENTS holds what the
// old one applied: Verify refuses it rather than report a divergence or
// pass on the part it can see.
func TestVerify_Reanchored(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	w := newWriter("acme", "phone", 0)
	_, last := publishPuts(t, e, w, 20)
	p := startProjector(t, e.js, store, projection.Config{})
	waitCheckpoint(t, p, last)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	recreateStream(t, e, events.StreamEvents)
	_, last = publishPuts(t, e, w, 30) // past the old checkpoint
	p = startProjector(t, e.js, store, projection.Config{})
	waitCheckpoint(t, p, last)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := projection.Verify(ctx, e.js, store, projection.Config{})
	if !errors.Is(err, projection.ErrHistoryGone) || !strings.Contains(err.Error(), "re-anchored") {
		t.Fatalf("Verify of a re-anchored view = %v, want ErrHistoryGone saying it was re-anchored", err)
	}
}

// TestVerify_PartitionedPostgres: a PostgreSQL view applied by two
// partitions' projectors, each to its own checkpoint, verifies against
// EVENTS partition by partition, both when it was partitioned from the
// start and when a whole-stream projector applied its first events
// before the split; a document changed behind the projectors' back is
// named as a divergence.
func TestVerify_PartitionedPostgres(t *testing.T) {
	srv := pgtest.MustStart(t)
	const n = 2
	for _, whole := range []int{0, 15} {
		t.Run(fmt.Sprintf("%d events before the split", whole), func(t *testing.T) {
			e := newEnv(t)
			store := mustOpenPostgres(t, srv, pgtest.Schema(t))
			cfg := projection.Config{Policies: testPolicies()}
			w1, w2 := newWriter("acme", "phone", 0), newWriter("acme", "laptop", time.Millisecond)
			var last uint64
			put := func(from, to int) {
				for k := from; k < to; k++ {
					// Both writers create the same document: the second
					// is stale (lww), an overwritten conflict record.
					for _, w := range []*writer{w1, w2} {
						ev := w.event("notes", fmt.Sprintf("d%d", k), events.OpPut, 0, map[string]any{"by": w.client, "k": k})
						last = publish(t, e.js, eventMsg(t, ev), ev.ID)
					}
				}
			}
			if whole > 0 {
				put(0, whole)
				p := startProjector(t, e.js, store, cfg)
				waitCheckpoint(t, p, last)
				if err := p.Close(); err != nil {
					t.Fatal(err)
				}
			}
			put(whole, whole+30)
			var ps []*projection.Projector
			for i := range n {
				pt := projection.Partition{Index: i, Count: n}
				part, err := store.Partition(context.Background(), pt)
				if err != nil {
					t.Fatal(err)
				}
				pcfg := cfg
				pcfg.Partition = pt
				ps = append(ps, startProjector(t, e.js, part, pcfg))
			}
			for _, p := range ps {
				waitCheckpoint(t, p, last)
			}
			// One partition stops behind the other: more events, only
			// partition 0 applies them.
			if err := ps[1].Close(); err != nil {
				t.Fatal(err)
			}
			behind := last
			put(whole+30, whole+40)
			waitCheckpoint(t, ps[0], last)
			if err := ps[0].Close(); err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			rep, err := projection.Verify(ctx, e.js, store, cfg)
			if err != nil {
				t.Fatalf("Verify of the partitioned view: %v", err)
			}
			if len(rep.Partitions) != n || rep.Partitions[0] != last || rep.Partitions[1] != behind || rep.Checkpoint != last {
				t.Fatalf("report: checkpoint %d, partitions %v; want %d, [%d %d]", rep.Checkpoint, rep.Partitions, last, last, behind)
			}
			if rep.Docs == 0 || rep.LiveHash != rep.RebuiltHash {
				t.Fatalf("report: %d documents, hashes %s and %s", rep.Docs, rep.LiveHash, rep.RebuiltHash)
			}

			// Tamper with one document: Verify names it.
			conn := mustConnect(t, srv)
			if _, err := conn.Exec(ctx, `UPDATE `+store.Schema()+`.docs SET version = version + 1,
				state = convert_to(jsonb_set(convert_from(state, 'UTF8')::jsonb, '{version}', to_jsonb((convert_from(state, 'UTF8')::jsonb->>'version')::int + 1))::text, 'UTF8')
				WHERE doc = 'd3'`); err != nil {
				t.Fatal(err)
			}
			_, err = projection.Verify(ctx, e.js, store, cfg)
			if !errors.Is(err, projection.ErrDiverged) || !strings.Contains(err.Error(), "d3") {
				t.Fatalf("Verify of a tampered partitioned view = %v, want ErrDiverged naming d3", err)
			}
		})
	}
}
