package projection_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/pgtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// probe counts what one instance's commits did, each waiting on a gate
// first. It counts the commits that began while armed or were paused by
// the gate; a commit already under way when the test shuts the gate and
// arms the probe is not one the test paused, so it is not counted.
type probe struct {
	g                 *gate
	ok, refused, done atomic.Int64
	armed             atomic.Bool
}

func (p *probe) commit(ctx context.Context, s projection.Store, b *projection.Batch) error {
	armed := p.armed.Load()
	paused := p.g.wait()
	err := s.Commit(ctx, b)
	if armed || paused {
		switch {
		case err == nil:
			p.ok.Add(1)
		case errors.Is(err, projection.ErrCheckpoint), errors.Is(err, projection.ErrFenced):
			p.refused.Add(1)
		}
		p.done.Add(1)
	}
	return err
}

// probedStore is a PartitionedStore (and a Fencer) whose partitions'
// commits go through a probe.
type probedStore struct {
	projection.PartitionedStore
	p *probe
}

func (s *probedStore) Partition(ctx context.Context, pt projection.Partition) (projection.Store, error) {
	ps, err := s.PartitionedStore.Partition(ctx, pt)
	if err != nil {
		return nil, err
	}
	return &probedPartition{Store: ps, p: s.p}, nil
}

type probedPartition struct {
	projection.Store
	p *probe
}

func (s *probedPartition) Commit(ctx context.Context, b *projection.Batch) error {
	return s.p.commit(ctx, s.Store, b)
}

func (s *probedPartition) Fence(ctx context.Context, e projection.Epoch) (projection.Store, error) {
	f, ok := s.Store.(projection.Fencer)
	if !ok {
		return s, nil
	}
	fs, err := f.Fence(ctx, e)
	if err != nil {
		return nil, err
	}
	return &probedPartition{Store: fs, p: s.p}, nil
}

// TestGroup_StaleHolderFencedOnPostgres pauses the active instance in the
// middle of a commit to the shared PostgreSQL view, past its lease TTL;
// the other instance takes every partition over, and the paused one
// resumes before the new holder has committed anything. The stale
// holder's commit must be refused (its lease epoch is older than the one
// the view records), and the new holder must go on: not be evicted by a
// checkpoint the stale one moved, every event applied once.
func TestGroup_StaleHolderFencedOnPostgres(t *testing.T) {
	srv := pgtest.MustStart(t)
	store := mustOpenPostgres(t, srv, pgtest.Schema(t))
	e := newEnv(t)
	gc := projection.GroupConfig{Partitions: 2, LeaseTTL: 2 * time.Second}

	pa := &probe{g: newGate()}
	kvPause := newGate()
	nca := embeddedtest.MustConnect(t, e.srv)
	gca := gc
	gca.Holder = "a"
	ga, err := projection.NewGroup(&pausedJS{JetStream: embeddedtest.MustJetStream(t, nca), g: kvPause}, &probedStore{store, pa},
		projection.Config{Logger: testLogger(t).With("instance", "a")}, gca)
	if err != nil {
		t.Fatal(err)
	}
	if err := ga.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pa.g.release(); kvPause.release(); ga.Close() })
	a := &instance{nc: nca, g: ga}
	waitFor(t, 20*time.Second, "instance a to hold every partition", func() bool { return held(a) == 2 })

	w := newWriter("acme", "dev1", 0)
	var evs []*events.Event
	put := func(n int) {
		for range n {
			ev := w.event("notes", fmt.Sprintf("d%d", w.seq+1), events.OpPut, 0, nil)
			evs = append(evs, ev)
			publish(t, e.js, eventMsg(t, ev), ev.ID)
		}
	}
	put(10)
	waitFor(t, 30*time.Second, "the first events applied", func() bool { return a.g.Stats().Applied == 10 })

	// Pause a: its commits and its lease renewals wait.
	pa.g.shut()
	kvPause.shut()
	pa.armed.Store(true)
	put(10)
	waitFor(t, 10*time.Second, "instance a's projectors stuck in Commit", func() bool { return pa.g.waiting.Load() == 2 })

	// b takes over; its commits wait too, so a's resume lands first.
	pb := &probe{g: newGate()}
	pb.g.shut()
	pb.armed.Store(true)
	b := startInstance(t, e, &probedStore{store, pb}, "b", gc)
	t.Cleanup(pb.g.release)
	waitFor(t, 30*time.Second, "instance b to hold every partition", func() bool { return held(b) == 2 })

	// a resumes: its projectors first, its lease renewals later.
	pa.g.release()
	waitFor(t, 20*time.Second, "instance a's paused commits to return", func() bool { return pa.done.Load() >= 2 })
	kvPause.release()
	waitFor(t, 30*time.Second, "instance a to let go of every partition", func() bool { return held(a) == 0 })
	if n := pa.ok.Load(); n != 0 {
		t.Errorf("instance a committed %d batches after b took its leases over; want every one refused", n)
	}

	pb.g.release()
	waitFor(t, 30*time.Second, "every event in the view", func() bool {
		for _, ev := range evs {
			d, err := store.Get(context.Background(), events.DocAddress{Tenant: ev.Tenant, Collection: ev.Collection, Doc: ev.Doc})
			if err != nil || d.Version == 0 {
				return false
			}
		}
		return true
	})
	for _, ev := range evs {
		d, err := store.Get(context.Background(), events.DocAddress{Tenant: ev.Tenant, Collection: ev.Collection, Doc: ev.Doc})
		if err != nil {
			t.Fatal(err)
		}
		if d.Version != 1 || d.Event != ev.ID {
			t.Fatalf("document %s: version %d by %s, want version 1 by %s", ev.Doc, d.Version, d.Event, ev.ID)
		}
	}
	st := b.g.Stats()
	if st.Lost != 0 || pb.refused.Load() != 0 || len(st.Held) != 2 {
		t.Errorf("instance b: %d leases lost, %d commits refused, holds %v; want it to keep every partition, none refused",
			st.Lost, pb.refused.Load(), st.Held)
	}
	if st.Duplicates != 0 || st.Dead != 0 {
		t.Errorf("instance b: %d duplicates, %d dead letters; want none", st.Duplicates, st.Dead)
	}
	waitFor(t, 10*time.Second, "a change per document in CHANGES", func() bool { return msgCount(t, e.js, events.StreamChanges) == uint64(len(evs)) })
}
