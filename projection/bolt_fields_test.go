package projection

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
)

func fieldDoc(id string, v uint64, list string) Doc {
	return Doc{Tenant: "t", Collection: "todos", ID: id, Version: v, Fields: events.Fields{"list": []byte(`"` + list + `"`)}}
}

func idsWithField(t *testing.T, s *BoltStore, list string) []string {
	t.Helper()
	got, err := s.DocsWithField(context.Background(), "t", "todos", "list", list)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range got {
		ids = append(ids, d.ID)
	}
	return ids
}

// TestBoltFieldIndex_KeptReopenedAndRebuilt: the field index is built the
// first time a field is asked for, survives a reopen without a rebuild,
// is rebuilt when a write transaction that did not keep it (an older
// build of ebb) changed the documents, and when its buckets are gone; in
// an encrypted store it holds no field value in the clear.
func TestBoltFieldIndex_KeptReopenedAndRebuilt(t *testing.T) {
	ctx := context.Background()
	for _, sealed := range []bool{false, true} {
		t.Run(map[bool]string{false: "plaintext", true: "encrypted"}[sealed], func(t *testing.T) {
			var c *keys.Cipher
			if sealed {
				var err error
				if c, err = keys.RandomCipher(); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(t.TempDir(), "view.db")
			s, err := OpenBolt(path, BoltOptions{Cipher: c})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { s.Close() }()
			if err := s.Commit(ctx, &Batch{Checkpoint: 1, Docs: []Doc{fieldDoc("a", 1, "secret-list"), fieldDoc("b", 1, "other")}}); err != nil {
				t.Fatal(err)
			}
			if got := idsWithField(t, s, "secret-list"); !slices.Equal(got, []string{"a"}) {
				t.Fatalf("first ask: %q", got)
			}
			if err := s.Commit(ctx, &Batch{Checkpoint: 2, Docs: []Doc{fieldDoc("b", 2, "secret-list")}}); err != nil {
				t.Fatal(err)
			}
			if got := idsWithField(t, s, "secret-list"); !slices.Equal(got, []string{"a", "b"}) {
				t.Fatalf("after a move: %q", got)
			}
			s.Close()
			if s, err = OpenBolt(path, BoltOptions{Cipher: c}); err != nil {
				t.Fatal(err)
			}
			err = s.db.View(func(tx *bolt.Tx) error {
				if !fieldsCurrent(tx) {
					t.Error("the index is taken for stale after a reopen: every open would rebuild it")
				}
				if sealed {
					return tx.Bucket(bucketFieldDocs).ForEach(func(k, _ []byte) error {
						if bytes.Contains(k, []byte("secret-list")) {
							t.Errorf("an encrypted store's index holds a field value in the clear: %q", k)
						}
						return nil
					})
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// An older build writes a document without keeping the index,
			// with this build closed, as it happens: a downgrade, then an
			// upgrade again.
			s.Close()
			if err := OldBuildPut(path, c, fieldDoc("c", 1, "secret-list")); err != nil {
				t.Fatal(err)
			}
			if s, err = OpenBolt(path, BoltOptions{Cipher: c}); err != nil {
				t.Fatal(err)
			}
			if got := idsWithField(t, s, "secret-list"); !slices.Equal(got, []string{"a", "b", "c"}) {
				t.Fatalf("after a write that did not keep the index and a reopen: %q", got)
			}
			err = s.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketFieldDocs) })
			if err != nil {
				t.Fatal(err)
			}
			if got := idsWithField(t, s, "secret-list"); !slices.Equal(got, []string{"a", "b", "c"}) {
				t.Fatalf("after the index's bucket is gone: %q", got)
			}
		})
	}
}
