package producer

import (
	"path/filepath"
	"slices"
	"testing"

	"go.etcd.io/bbolt"
)

// TestEnsureAwaiting_SameCountOtherKeys: an older release that keeps no
// awaiting index may settle one write and append another, leaving an
// index with as many keys as there are writes awaiting their fate, but
// other ones. Open must rebuild it (a hostile review found Sync waiting
// forever on the settled write it still named).
func TestEnsureAwaiting_SameCountOtherKeys(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keys := func() []uint64 {
		var out []uint64
		_ = db.View(func(tx *bbolt.Tx) error {
			return tx.Bucket(bucketAwaiting).ForEach(func(k, _ []byte) error {
				out = append(out, keySeqOf(k))
				return nil
			})
		})
		return out
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketMeta); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketAwaiting); err != nil {
			return err
		}
		return ensureAwaiting(tx, []uint64{1, 2})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return ensureAwaiting(tx, []uint64{1, 3}) }); err != nil {
		t.Fatal(err)
	}
	if got := keys(); !slices.Equal(got, []uint64{1, 3}) {
		t.Fatalf("awaiting index %v after open with writes 1 and 3 awaiting, want [1 3]", got)
	}
}
