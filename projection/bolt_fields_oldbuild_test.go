package projection

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// oldBuildWrite writes a document the way a build without the field index
// does: straight into the docs bucket, no index, no stamp.
func oldBuildWrite(t *testing.T, path string, d Doc) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		v, err := encodeDocState(&d)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketDocs).Put(addrKey(d.Address()), v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBoltFieldIndex_OldBuildWriteBetweenOpens: an older build (no index)
// moves a follower under list l1; the new build reopens the file. OpenBolt
// stamps keyFieldTx in its own write transaction, so the stale index is
// taken as current and DocsWithField misses the follower that a scan finds.
func TestBoltFieldIndex_OldBuildWriteBetweenOpens(t *testing.T) {
	for _, how := range []string{"reopen", "reopen+commit-elsewhere"} {
		t.Run(how, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "view.db")
			s, err := OpenBolt(path, BoltOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(ctx, &Batch{Checkpoint: 1, Docs: []Doc{fieldDoc("a", 1, "l1")}}); err != nil {
				t.Fatal(err)
			}
			if got := idsWithField(t, s, "l1"); !slices.Equal(got, []string{"a"}) {
				t.Fatalf("first ask: %q", got)
			}
			s.Close()
			// Downgrade: the old build applies an event that moves c under l1.
			oldBuildWrite(t, path, fieldDoc("c", 1, "l1"))
			// Upgrade again.
			if s, err = OpenBolt(path, BoltOptions{}); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if how != "reopen" {
				if err := s.Commit(ctx, &Batch{Checkpoint: 2, Docs: []Doc{fieldDoc("z", 1, "l9")}}); err != nil {
					t.Fatal(err)
				}
			}
			if got := idsWithField(t, s, "l1"); !slices.Equal(got, []string{"a", "c"}) {
				t.Fatalf("DocsWithField(l1) after an old build's write and a reopen = %q, a scan finds [a c]", got)
			}
		})
	}
}
