package projection

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/events"
)

// The field index of the bbolt view (DocsWithField): for each (collection,
// field) pair it was asked about, which live documents hold which string
// in the field. It is kept by Commit in the same transaction as the
// documents, so it never disagrees with them; a pair is indexed the first
// time DocsWithField asks for it (one scan of that collection), and the
// whole index is rebuilt when a write transaction that did not keep it
// (another build of ebb, older than the index) touched the file since:
// every write transaction of this build first checks that the one before
// it kept the index (checkFields) and drops the entries if not, and only a
// transaction that kept them stamps them (stampFields).
//
// In an encrypted store the field's value is not in the clear: the index
// holds an HMAC-SHA-256 of it (16 bytes) under a random key the store
// keeps sealed in its meta bucket. A match is always checked against the
// document itself, so a collision costs a decode, never a wrong answer.
var (
	// bucketFieldDocs: fieldPrefix(tenant, collection, field, token) + doc id -> empty.
	bucketFieldDocs = []byte("field_docs")
	// bucketFieldValues: fieldKey(tenant, collection, field) + doc id -> token,
	// what bucketFieldDocs holds for the document (so a commit moves it without
	// decoding the state it replaces).
	bucketFieldValues = []byte("field_values")
	// bucketFieldPairs: lp(collection) lp(field) -> empty, the pairs indexed.
	bucketFieldPairs = []byte("field_pairs")
	// keyFieldTx (in bucketMeta) is the id of the last write transaction
	// that kept the index: if it is not the id of the last write
	// transaction, one since did not keep it.
	keyFieldTx = []byte("field_index_tx")
	// keyFieldKey (in bucketMeta) is the sealed HMAC key of an encrypted
	// store's tokens.
	keyFieldKey = []byte("field_index_key")
)

// lp appends s to b, length-prefixed (uvarint), so that no component of a
// key can run into the next whatever bytes it holds.
func lp(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// fieldKey is the prefix of the index entries of one field of one
// collection of one tenant in bucketFieldValues.
func fieldKey(tenant, collection, field string) []byte {
	return lp(lp(lp(nil, tenant), collection), field)
}

// fieldPrefix is the prefix of the documents whose field holds token in
// bucketFieldDocs.
func fieldPrefix(tenant, collection, field string, token []byte) []byte {
	return lp(fieldKey(tenant, collection, field), string(token))
}

// token is what the index holds for a field's string value: the value
// itself in a plaintext store, its keyed hash in an encrypted one.
func (s *BoltStore) token(value string) []byte {
	if s.root.fieldKey == nil {
		return []byte(value)
	}
	m := hmac.New(sha256.New, s.root.fieldKey)
	m.Write([]byte(value))
	return m.Sum(nil)[:16]
}

// openFieldKey reads (or, on an encrypted store without one, makes) the
// HMAC key of the index's tokens; a new key drops the index, whose tokens
// it cannot have made. Called by OpenBolt inside its transaction.
func openFieldKey(tx *bolt.Tx, s *BoltStore) error {
	if s.seal == nil {
		return nil
	}
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyFieldKey); v != nil {
		k, err := s.seal.OpenValue(bucketMeta, keyFieldKey, v)
		if err != nil {
			return fmt.Errorf("field index key: %w", err)
		}
		s.fieldKey = k
		return nil
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return fmt.Errorf("field index key: %w", err)
	}
	for _, b := range [][]byte{bucketFieldDocs, bucketFieldValues, bucketFieldPairs} {
		if err := tx.DeleteBucket(b); err != nil && err != bolt.ErrBucketNotFound {
			return err
		}
	}
	s.fieldKey = k
	return meta.Put(keyFieldKey, s.seal.SealValue(bucketMeta, keyFieldKey, k))
}

// indexedFields returns the fields indexed per collection; nil when none.
func indexedFields(tx *bolt.Tx) map[string][]string {
	pairs := tx.Bucket(bucketFieldPairs)
	if pairs == nil {
		return nil
	}
	var out map[string][]string
	_ = pairs.ForEach(func(k, _ []byte) error {
		c, n := binary.Uvarint(k)
		if n <= 0 || uint64(len(k)-n) < c {
			return nil
		}
		coll, rest := string(k[n:n+int(c)]), k[n+int(c):]
		f, m := binary.Uvarint(rest)
		if m <= 0 || uint64(len(rest)-m) != f {
			return nil
		}
		if out == nil {
			out = map[string][]string{}
		}
		out[coll] = append(out[coll], string(rest[m:]))
		return nil
	})
	return out
}

// fieldsBuilt reports whether tx holds a built field index: the pairs
// asked for and their entries.
func fieldsBuilt(tx *bolt.Tx) bool {
	return tx.Bucket(bucketFieldPairs) != nil && tx.Bucket(bucketFieldDocs) != nil && tx.Bucket(bucketFieldValues) != nil
}

// checkFields is the first thing every write transaction of this build
// does (OpenBolt, BoltStore.update), before it writes anything: unless the
// transaction before it kept the field index (the stamp is that
// transaction's id, see keyFieldTx), some write since the index was last
// kept did not keep it (another build of ebb, older than the index, or one
// that opened the file and wrote nothing: the id moves all the same), so
// its entries are dropped. The pairs asked for stay: the next
// DocsWithField rebuilds them all in one scan, and until then no commit
// keeps (nor stamps) entries that are not there.
func checkFields(tx *bolt.Tx) error {
	if tx.Bucket(bucketFieldDocs) == nil && tx.Bucket(bucketFieldValues) == nil {
		return nil
	}
	var stamp uint64
	if meta := tx.Bucket(bucketMeta); meta != nil {
		stamp = readU64(meta.Get(keyFieldTx))
	}
	if stamp == uint64(tx.ID())-1 {
		return nil
	}
	for _, b := range [][]byte{bucketFieldDocs, bucketFieldValues} {
		if err := tx.DeleteBucket(b); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return fmt.Errorf("drop the stale field index: %w", err)
		}
	}
	return nil
}

// stampFields records that the write transaction tx kept the field index
// (see keyFieldTx); a no-op while no index is built, so a stamp is only
// ever advanced by a transaction that began with checkFields and kept the
// index. Every write transaction of the store calls it last
// (BoltStore.update).
func stampFields(tx *bolt.Tx) error {
	if !fieldsBuilt(tx) {
		return nil
	}
	return tx.Bucket(bucketMeta).Put(keyFieldTx, u64(uint64(tx.ID())))
}

// fieldsCurrent reports whether the index is what the last write
// transaction left: every write since kept it.
func fieldsCurrent(tx *bolt.Tx) bool {
	return readU64(tx.Bucket(bucketMeta).Get(keyFieldTx)) == uint64(tx.ID())
}

// indexDocs keeps the field index of the documents a commit writes, the
// docs[i] for each i of order (the last state of each address): the
// indexed fields of each one's collection move to the new state's string
// values (none for a tombstone or a value that is no string). fields is
// indexedFields(tx).
func (s *BoltStore) indexDocs(tx *bolt.Tx, fields map[string][]string, docs []Doc, order []int) error {
	if len(fields) == 0 || !fieldsBuilt(tx) {
		return nil // none, or dropped by checkFields: built again when asked
	}
	for _, i := range order {
		for _, f := range fields[docs[i].Collection] {
			if err := s.indexDoc(tx, &docs[i], f); err != nil {
				return err
			}
		}
	}
	return nil
}

// indexDoc moves d's entry of field f in the index to its value.
func (s *BoltStore) indexDoc(tx *bolt.Tx, d *Doc, f string) error {
	fdocs, vals := tx.Bucket(bucketFieldDocs), tx.Bucket(bucketFieldValues)
	var tok []byte
	if d.Exists() {
		if raw, ok := d.Fields[f]; ok {
			var v string
			if json.Unmarshal(raw, &v) == nil {
				tok = s.token(v)
			}
		}
	}
	vk := append(fieldKey(d.Tenant, d.Collection, f), d.ID...)
	old := vals.Get(vk)
	if old != nil && tok != nil && bytes.Equal(old, tok) {
		return nil
	}
	if old != nil {
		if err := fdocs.Delete(append(fieldPrefix(d.Tenant, d.Collection, f, old), d.ID...)); err != nil {
			return err
		}
	}
	if tok == nil {
		if old == nil {
			return nil
		}
		return vals.Delete(vk)
	}
	if err := fdocs.Put(append(fieldPrefix(d.Tenant, d.Collection, f, tok), d.ID...), nil); err != nil {
		return err
	}
	return vals.Put(vk, tok)
}

// buildFields (re)builds the field index from the documents: the pairs
// already indexed and (collection, field). One scan of the documents of
// the collections concerned.
func (s *BoltStore) buildFields(tx *bolt.Tx, collection, field string) error {
	fields := indexedFields(tx)
	if fields == nil {
		fields = map[string][]string{}
	}
	add := true
	for _, f := range fields[collection] {
		add = add && f != field
	}
	if add {
		fields[collection] = append(fields[collection], field)
	}
	for _, b := range [][]byte{bucketFieldDocs, bucketFieldValues, bucketFieldPairs} {
		if err := tx.DeleteBucket(b); err != nil && err != bolt.ErrBucketNotFound {
			return err
		}
		if _, err := tx.CreateBucket(b); err != nil {
			return err
		}
	}
	pairs := tx.Bucket(bucketFieldPairs)
	for c, fs := range fields {
		for _, f := range fs {
			if err := pairs.Put(lp(lp(nil, c), f), nil); err != nil {
				return err
			}
		}
	}
	return tx.Bucket(bucketDocs).ForEach(func(k, v []byte) error {
		addr, ok := parseAddrKey(k)
		if !ok || len(fields[addr.Collection]) == 0 {
			return nil
		}
		d, err := s.decodeDoc(k, v)
		if err != nil {
			return fmt.Errorf("%q: %w", k, err)
		}
		for _, f := range fields[addr.Collection] {
			if err := s.indexDoc(tx, &d, f); err != nil {
				return err
			}
		}
		return nil
	})
}

// DocsWithField implements Store, through the field index: its cost is
// the documents found, plus one scan of the collection the first time a
// field is asked for (and after another build of ebb wrote the file).
func (s *BoltStore) DocsWithField(ctx context.Context, tenant, collection, field, value string) ([]Doc, error) {
	var out []Doc
	for built := false; ; built = true {
		ready := false
		err := s.view(ctx, func(tx *bolt.Tx) error {
			ready = fieldsCurrent(tx) && fieldsBuilt(tx) && slices.Contains(indexedFields(tx)[collection], field)
			if !ready {
				return nil
			}
			prefix := fieldPrefix(tenant, collection, field, s.token(value))
			docs := tx.Bucket(bucketDocs)
			c := tx.Bucket(bucketFieldDocs).Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				if err := ctx.Err(); err != nil {
					return err
				}
				dk := addrKey(events.DocAddress{Tenant: tenant, Collection: collection, Doc: string(k[len(prefix):])})
				v := docs.Get(dk)
				if v == nil {
					return fmt.Errorf("the field index names %q, which the view does not hold", dk)
				}
				d, err := s.decodeDoc(dk, v)
				if err != nil {
					return fmt.Errorf("%q: %w", dk, err)
				}
				if d.Exists() && fieldIs(d.Fields, field, value) { // a keyed hash may collide
					out = append(out, d)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("find %s/%s documents by field %s: %w", tenant, collection, field, err)
		}
		if ready {
			return out, nil
		}
		if built {
			return nil, fmt.Errorf("find %s/%s documents by field %s: the field index was not kept after its build", tenant, collection, field)
		}
		if err := s.update(ctx, func(tx *bolt.Tx) error { return s.buildFields(tx, collection, field) }); err != nil {
			return nil, fmt.Errorf("index %s documents by field %s: %w", collection, field, err)
		}
	}
}
