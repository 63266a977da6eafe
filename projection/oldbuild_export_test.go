package projection

import (
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/deploy/keys"
)

// OldBuildPut writes docs into the bbolt view at path as a build of ebb
// without the field index does, while this build has the file closed: the
// transaction of its OpenBolt (the buckets created if missing, nothing
// else), then one commit of docs into the docs bucket only: no index, no
// stamp. c seals them as an encrypted store does (nil: plaintext). With
// no docs it is an old build that opens the file and writes nothing.
func OldBuildPut(path string, c *keys.Cipher, docs ...Doc) error {
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return fmt.Errorf("old build: open %s: %w", path, err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketDocs, bucketConflicts, bucketHWM, bucketMeta, bucketOutbox} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || len(docs) == 0 {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		for i := range docs {
			v, err := encodeDocState(&docs[i])
			if err != nil {
				return err
			}
			k := addrKey(docs[i].Address())
			if err := tx.Bucket(bucketDocs).Put(k, c.SealValue(bucketDocs, k, v)); err != nil {
				return err
			}
		}
		return nil
	})
}
