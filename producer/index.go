package producer

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"go.etcd.io/bbolt"
)

// The unsettled-by-document index. producer.bydoc holds one empty value per
// unsettled entry under docIndex(collection, doc) + seq, so the unsettled
// writes of one document (or one collection) are a prefix scan, in log
// order, instead of a scan of every unsettled write. The value of an entry
// in producer.unsettled is its docIndex prefix, so Settle removes the index
// entry without decoding the event. Both change only in storeNew (add) and
// Settle (remove), in the transaction that appends or settles.
//
// A docIndex prefix is the collection then the document, each as a uvarint
// length and its bytes; with a cipher, each is instead the first 16 bytes of
// HMAC-SHA256 under a random key kept sealed in producer.meta, so the index
// keys show no names the log did not show before. A lookup checks the
// decoded event's collection and document, so a truncated-hash collision
// costs a read, never a wrong answer.
var (
	bucketByDoc = []byte("producer.bydoc") // docIndex(collection, doc) + seq -> empty

	// metaIndex is the version of the index the file holds (indexVersion):
	// absent in a file written before the index existed, which openDB
	// indexes once.
	metaIndex = []byte("unsettled_index")
	// metaIndexKey is the sealed HMAC key of an encrypted log's index.
	metaIndexKey = []byte("index_key")
)

const indexVersion = 1

// hashedPart is the length of a hashed collection or document in a key.
const hashedPart = 16

// indexPart appends one part (collection or document) of a docIndex prefix.
func (l *Log) indexPart(dst []byte, s string) []byte {
	if l.indexMAC == nil {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		return append(dst, s...)
	}
	m := hmac.New(sha256.New, l.indexMAC)
	m.Write([]byte(s))
	return append(dst, m.Sum(nil)[:hashedPart]...)
}

// collectionIndex is the prefix of every index key of collection.
func (l *Log) collectionIndex(collection string) []byte {
	return l.indexPart(nil, collection)
}

// docIndex is the prefix of the index keys of one document.
func (l *Log) docIndex(collection, doc string) []byte {
	return l.indexPart(l.collectionIndex(collection), doc)
}

// loadIndexKey reads (creating it, in a new or migrated encrypted log) the
// index's HMAC key inside tx; a plaintext log has none.
func (l *Log) loadIndexKey(tx *bbolt.Tx) error {
	if l.seal == nil {
		return nil
	}
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(metaIndexKey); v != nil {
		k, err := l.seal.OpenValue(bucketMeta, metaIndexKey, v)
		if err != nil {
			return fmt.Errorf("read index key: %w", err)
		}
		l.indexMAC = k
		return nil
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return fmt.Errorf("make index key: %w", err)
	}
	if err := meta.Put(metaIndexKey, l.seal.SealValue(bucketMeta, metaIndexKey, k)); err != nil {
		return fmt.Errorf("store index key: %w", err)
	}
	// A new key invalidates whatever index the file holds.
	if err := meta.Delete(metaIndex); err != nil {
		return err
	}
	l.indexMAC = k
	return nil
}

// ensureIndex builds the index inside tx if the file has none (a log
// written before it existed, or whose key was just made), or if the one it
// has disagrees with producer.unsettled (a version without the index wrote
// to the file since: its appends leave empty markers, its settles leave
// index entries behind): once, over every unsettled entry. The check reads
// keys and values only, no entry.
func (l *Log) ensureIndex(tx *bbolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(metaIndex); len(v) == 1 && v[0] == indexVersion {
		if indexAgrees(tx) {
			return nil
		}
		l.logger.Warn("the unsettled index disagrees with the log (written by an older version?): rebuilding it")
	}
	if tx.Bucket(bucketByDoc) != nil {
		if err := tx.DeleteBucket(bucketByDoc); err != nil {
			return fmt.Errorf("drop stale index: %w", err)
		}
	}
	byDoc, err := tx.CreateBucket(bucketByDoc)
	if err != nil {
		return fmt.Errorf("create index: %w", err)
	}
	unb := tx.Bucket(bucketUnsettled)
	type item struct{ k, prefix []byte }
	var items []item
	c := unb.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		e, err := l.readEntry(tx, keySeqOf(k))
		if err != nil {
			return fmt.Errorf("index unsettled entry: %w", err)
		}
		items = append(items, item{bytes.Clone(k), l.docIndex(e.Event.Collection, e.Event.Doc)})
	}
	for _, it := range items { // not while the cursor walks the bucket
		if err := unb.Put(it.k, it.prefix); err != nil {
			return fmt.Errorf("index entry %d: %w", keySeqOf(it.k), err)
		}
		if err := byDoc.Put(append(bytes.Clone(it.prefix), it.k...), []byte{}); err != nil {
			return fmt.Errorf("index entry %d: %w", keySeqOf(it.k), err)
		}
	}
	if len(items) > 0 {
		l.logger.Info("indexed the unsettled writes of a log made before the index", "count", len(items))
	}
	return meta.Put(metaIndex, []byte{indexVersion})
}

// indexAgrees reports whether every unsettled marker names its index
// prefix and the index holds as many entries as there are markers.
func indexAgrees(tx *bbolt.Tx) bool {
	byDoc := tx.Bucket(bucketByDoc)
	if byDoc == nil {
		return false
	}
	n := 0
	c := tx.Bucket(bucketUnsettled).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(v) == 0 || byDoc.Get(append(bytes.Clone(v), k...)) == nil {
			return false
		}
		n++
	}
	m := 0
	ic := byDoc.Cursor()
	for k, _ := ic.First(); k != nil; k, _ = ic.Next() {
		m++
	}
	return n == m
}

// indexAdd marks entry k (a seqKey) of document collection/doc unsettled.
func (l *Log) indexAdd(tx *bbolt.Tx, k []byte, collection, doc string) error {
	prefix := l.docIndex(collection, doc)
	if err := tx.Bucket(bucketUnsettled).Put(k, prefix); err != nil {
		return err
	}
	if err := tx.Bucket(bucketAwaiting).Put(k, []byte{}); err != nil {
		return err
	}
	return tx.Bucket(bucketByDoc).Put(append(prefix, k...), []byte{})
}

// indexRemove marks entry k settled: out of producer.unsettled and the index.
func (l *Log) indexRemove(tx *bbolt.Tx, k []byte) error {
	unb := tx.Bucket(bucketUnsettled)
	prefix := unb.Get(k)
	if prefix == nil {
		return nil
	}
	if len(prefix) == 0 { // cannot happen once indexed; stay correct anyway
		e, err := l.readEntry(tx, keySeqOf(k))
		if err != nil {
			return err
		}
		prefix = l.docIndex(e.Event.Collection, e.Event.Doc)
	}
	ik := append(bytes.Clone(prefix), k...)
	if err := tx.Bucket(bucketByDoc).Delete(ik); err != nil {
		return err
	}
	if err := tx.Bucket(bucketAwaiting).Delete(k); err != nil {
		return err
	}
	return unb.Delete(k)
}

// unsettledFor is Tx.UnsettledFor inside tx.
func (l *Log) unsettledFor(tx *bbolt.Tx, collection, doc string) ([]Entry, error) {
	es, err := l.unsettledUnder(tx, l.docIndex(collection, doc), func(e *Entry) bool {
		return e.Event.Collection == collection && e.Event.Doc == doc
	})
	if err != nil {
		return nil, fmt.Errorf("list unsettled entries of %s/%s: %w", collection, doc, err)
	}
	return es, nil
}

// unsettledIn is Tx.UnsettledIn inside tx.
func (l *Log) unsettledIn(tx *bbolt.Tx, collection string) ([]Entry, error) {
	es, err := l.unsettledUnder(tx, l.collectionIndex(collection), func(e *Entry) bool {
		return e.Event.Collection == collection
	})
	if err != nil {
		return nil, fmt.Errorf("list unsettled entries of %s: %w", collection, err)
	}
	return es, nil
}

func (l *Log) unsettledUnder(tx *bbolt.Tx, prefix []byte, match func(*Entry) bool) ([]Entry, error) {
	b := tx.Bucket(bucketByDoc)
	if b == nil {
		return nil, fmt.Errorf("bucket %s missing: not the log's database", bucketByDoc)
	}
	var out []Entry
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(k) < len(prefix)+8 {
			continue
		}
		e, err := l.readEntry(tx, keySeqOf(k[len(k)-8:]))
		if err != nil {
			return nil, err
		}
		if match(&e) {
			out = append(out, e)
		}
	}
	return out, nil
}

// unsettledEntry is Tx.UnsettledEntry inside tx.
func (l *Log) unsettledEntry(tx *bbolt.Tx, id string) (Entry, bool, error) {
	ids := tx.Bucket(bucketIDs)
	if ids == nil {
		return Entry{}, false, fmt.Errorf("read unsettled entry %s: bucket %s missing: not the log's database", id, bucketIDs)
	}
	k := ids.Get([]byte(id))
	if k == nil || tx.Bucket(bucketUnsettled).Get(k) == nil {
		return Entry{}, false, nil
	}
	e, err := l.readEntry(tx, keySeqOf(k))
	if err != nil {
		return Entry{}, false, fmt.Errorf("read unsettled entry %s: %w", id, err)
	}
	return e, true, nil
}

// awaiting is Tx.Awaiting inside tx.
func (l *Log) awaiting(tx *bbolt.Tx, from uint64) (uint64, Entry, bool, error) {
	k, _ := tx.Bucket(bucketAwaiting).Cursor().Seek(seqKey(from))
	if k == nil {
		return 0, Entry{}, false, nil
	}
	seq := keySeqOf(k)
	e, err := l.readEntry(tx, seq)
	if err != nil {
		return 0, Entry{}, false, fmt.Errorf("find the first write awaiting its fate: %w", err)
	}
	return seq, e, true, nil
}

// ensureAwaiting fills producer.awaiting inside tx from seqs, the
// unsettled entries that are not failed in order (read by openDB), unless
// the file holds it already with exactly those keys: a file written before
// it existed, or written since by a version that did not keep it (which may
// settle one write and append another, so a count of keys would not tell),
// is indexed again. The check walks the index once, as openDB walked the
// unsettled entries.
func ensureAwaiting(tx *bbolt.Tx, seqs []uint64) error {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(metaAwaiting); len(v) == 1 && v[0] == awaitingVersion && sameKeys(tx.Bucket(bucketAwaiting), seqs) {
		return nil
	}
	if err := tx.DeleteBucket(bucketAwaiting); err != nil {
		return fmt.Errorf("drop stale awaiting index: %w", err)
	}
	b, err := tx.CreateBucket(bucketAwaiting)
	if err != nil {
		return fmt.Errorf("create awaiting index: %w", err)
	}
	b.FillPercent = 0.9 // filled in key order
	for _, seq := range seqs {
		if err := b.Put(seqKey(seq), []byte{}); err != nil {
			return fmt.Errorf("index awaiting entry %d: %w", seq, err)
		}
	}
	return meta.Put(metaAwaiting, []byte{awaitingVersion})
}

// sameKeys reports whether b's keys are exactly seqs (in order).
func sameKeys(b *bbolt.Bucket, seqs []uint64) bool {
	if b == nil {
		return false
	}
	c := b.Cursor()
	i := 0
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if i == len(seqs) || keySeqOf(k) != seqs[i] {
			return false
		}
		i++
	}
	return i == len(seqs)
}

// addUnsettled adds d to the stored count of unsettled entries in tx.
func addUnsettled(tx *bbolt.Tx, d int64) error {
	meta := tx.Bucket(bucketMeta)
	n := int64(0)
	if v := meta.Get(metaUnsettled); len(v) == 8 {
		n = int64(keySeqOf(v))
	}
	if err := meta.Put(metaUnsettled, seqKey(uint64(max(n+d, 0)))); err != nil {
		return fmt.Errorf("count unsettled entries: %w", err)
	}
	return nil
}

// unsettledCount is Tx.UnsettledCount inside tx.
func unsettledCount(tx *bbolt.Tx) int {
	if v := tx.Bucket(bucketMeta).Get(metaUnsettled); len(v) == 8 {
		return int(keySeqOf(v))
	}
	return 0
}

// eachUnsettled is Tx.EachUnsettled inside tx.
func (l *Log) eachUnsettled(tx *bbolt.Tx, fn func(Entry) (bool, error)) error {
	c := tx.Bucket(bucketUnsettled).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		e, err := l.readEntry(tx, keySeqOf(k))
		if err != nil {
			return fmt.Errorf("list unsettled entries: %w", err)
		}
		more, err := fn(e)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// copiesAfter is Tx.CopiesAfter inside tx.
func (l *Log) copiesAfter(tx *bbolt.Tx, after uint64) ([]Copy, error) {
	var out []Copy
	c := tx.Bucket(bucketCopies).Cursor()
	for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
		if len(k) != 8 || len(v) != 8 {
			return nil, fmt.Errorf("read copies: bad record %x", k)
		}
		out = append(out, Copy{Seq: keySeqOf(k), Of: keySeqOf(v)})
	}
	return out, nil
}

// Counts is how many entries of the log stand where, as of the last
// commit.
type Counts struct {
	Unsettled int // without a receipt: pending, published or failed
	Pending   int // not yet acknowledged by JetStream
	Failed    int // refused for good, without a receipt
}

// Published is how many entries were acknowledged and await their receipt.
func (c Counts) Published() int { return c.Unsettled - c.Pending - c.Failed }

// Counts returns the log's counts, kept in memory: O(1), no transaction.
// They follow each commit, just after it: a reader may see a commit's
// entries before Counts does (Tx.UnsettledCount is exact within a
// transaction), so they suit decisions that are checked again, not
// assertions about one commit.
func (l *Log) Counts() Counts {
	l.countMu.Lock()
	defer l.countMu.Unlock()
	return Counts{Unsettled: l.unsettledN, Pending: l.pendingN, Failed: l.failedN}
}
