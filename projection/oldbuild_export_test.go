package projection

import bolt "go.etcd.io/bbolt"

// OldBuildPut writes d into the bbolt view at path as a build without
// the field index does: the docs bucket only, no index, no stamp.
func OldBuildPut(path string, d Doc) error {
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Update(func(tx *bolt.Tx) error {
		v, err := encodeDocState(&d)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketDocs).Put(addrKey(d.Address()), v)
	})
}
