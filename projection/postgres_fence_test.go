package projection_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/pgtest"
	"github.com/ebbsync/ebb/projection"
)

// TestPostgresStore_Fence: a Store fenced by an older lease epoch can no
// longer commit once a newer one is recorded, nor be fenced again; the
// newer holder commits; partitions are fenced apart, the whole store
// too; a lease bucket created again is newer as a whole.
func TestPostgresStore_Fence(t *testing.T) {
	srv := pgtest.MustStart(t)
	ctx := context.Background()
	bucket := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	ep := func(rev uint64) projection.Epoch { return projection.Epoch{Bucket: bucket, Revision: rev} }

	t.Run("partition", func(t *testing.T) {
		store := mustOpenPostgres(t, srv, pgtest.Schema(t))
		p0, err := store.Partition(ctx, projection.Partition{Index: 0, Count: 2})
		if err != nil {
			t.Fatal(err)
		}
		p1, err := store.Partition(ctx, projection.Partition{Index: 1, Count: 2})
		if err != nil {
			t.Fatal(err)
		}
		old, err := p0.(projection.Fencer).Fence(ctx, ep(5))
		if err != nil {
			t.Fatal(err)
		}
		if err := old.Commit(ctx, &projection.Batch{Checkpoint: 3}); err != nil {
			t.Fatalf("commit of the only holder: %v", err)
		}
		// Partition 1's fence is its own.
		other, err := p1.(projection.Fencer).Fence(ctx, ep(9))
		if err != nil {
			t.Fatal(err)
		}
		if err := old.Commit(ctx, &projection.Batch{Checkpoint: 4}); err != nil {
			t.Fatalf("partition 0's holder fenced by partition 1's: %v", err)
		}
		newer, err := p0.(projection.Fencer).Fence(ctx, ep(7))
		if err != nil {
			t.Fatal(err)
		}
		prev := uint64(4)
		if err := old.Commit(ctx, &projection.Batch{Checkpoint: 6, Prev: &prev}); !errors.Is(err, projection.ErrFenced) {
			t.Fatalf("commit of the superseded holder: %v, want ErrFenced", err)
		}
		if cp, _ := p0.Checkpoint(ctx); cp != 4 {
			t.Fatalf("checkpoint %d after a fenced commit, want 4", cp)
		}
		if _, err := p0.(projection.Fencer).Fence(ctx, ep(6)); !errors.Is(err, projection.ErrFenced) {
			t.Fatalf("fence with an older epoch: %v, want ErrFenced", err)
		}
		if err := newer.Commit(ctx, &projection.Batch{Checkpoint: 6, Prev: &prev}); err != nil {
			t.Fatalf("commit of the newer holder: %v", err)
		}
		if err := other.Commit(ctx, &projection.Batch{Checkpoint: 2}); err != nil {
			t.Fatalf("partition 1: %v", err)
		}
		// Fencing again with the same epoch (the same holder) is allowed.
		if _, err := p0.(projection.Fencer).Fence(ctx, ep(7)); err != nil {
			t.Fatalf("fence again with the recorded epoch: %v", err)
		}
		// A lease bucket created again restarts its revisions: still newer.
		again, err := p0.(projection.Fencer).Fence(ctx, projection.Epoch{Bucket: bucket.Add(time.Hour), Revision: 1})
		if err != nil {
			t.Fatalf("fence from a newer bucket: %v", err)
		}
		if err := newer.Commit(ctx, &projection.Batch{Checkpoint: 7}); !errors.Is(err, projection.ErrFenced) {
			t.Fatalf("commit of the holder from the old bucket: %v, want ErrFenced", err)
		}
		if err := again.Commit(ctx, &projection.Batch{Checkpoint: 7}); err != nil {
			t.Fatal(err)
		}
		// Closing a fenced Store leaves the store open.
		if err := again.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := p0.Checkpoint(ctx); err != nil {
			t.Fatalf("partition after its fenced Store closed: %v", err)
		}
	})

	t.Run("whole", func(t *testing.T) {
		store := mustOpenPostgres(t, srv, pgtest.Schema(t))
		old, err := store.Fence(ctx, ep(1))
		if err != nil {
			t.Fatal(err)
		}
		newer, err := store.Fence(ctx, ep(2))
		if err != nil {
			t.Fatal(err)
		}
		if err := old.Commit(ctx, &projection.Batch{Checkpoint: 1}); !errors.Is(err, projection.ErrFenced) {
			t.Fatalf("commit of the superseded holder: %v, want ErrFenced", err)
		}
		if err := newer.Commit(ctx, &projection.Batch{Checkpoint: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Fence(ctx, projection.Epoch{}); !errors.Is(err, projection.ErrInvalidConfig) {
			t.Fatalf("fence with the zero epoch: %v, want ErrInvalidConfig", err)
		}
		if err := newer.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Checkpoint(ctx); err != nil {
			t.Fatalf("store after its fenced Store closed: %v", err)
		}
	})
}
