package consumer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"

	"fmt"
	"time"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
	"github.com/ebbsync/ebb/projection"
)

// Buckets of the local view. All are prefixed "consumer." so the view
// shares one bbolt file with the producer's log ("producer.*") and one
// transaction can change both.
var (
	// docKey -> 8-byte big-endian version + the synced record: compact
	// (synced.go), or the change payload as received if it did not decode.
	bucketDocs = []byte("consumer.docs")
	// cursor names and "scope" -> JSON.
	bucketMeta = []byte("consumer.meta")
	// docKey + 0x00 + event id -> receipt JSON: an applied/merged/conflict
	// receipt whose change has not arrived yet; the event stays pending
	// (and on top of the view) until it does.
	bucketAwaiting = []byte("consumer.awaiting")
	// event id -> Rejection JSON, until dismissed.
	bucketRejections = []byte("consumer.rejections")
	// docKey -> empty, for synced documents with open conflicts.
	bucketConflicts = []byte("consumer.conflicts")

	// docKey -> 8-byte version: the version of the last Left notice of a
	// document (sync rules, rules.go): it left the user's view there, so
	// a receipt naming that version or an older one waits for no change.
	bucketLeft = []byte("consumer.left")

	allBuckets = [][]byte{bucketDocs, bucketMeta, bucketAwaiting, bucketRejections, bucketConflicts, bucketQuarantine, bucketRelog, bucketLeft}
	// scopeBuckets are what a full resync clears.
	scopeBuckets = [][]byte{bucketDocs, bucketAwaiting, bucketConflicts, bucketLeft}
)

var metaScope = []byte("scope")

// cursor is how far the view has read one stream, and which incarnation of
// the stream that was (by its creation time), so a reset stream is noticed.
type cursor struct {
	Seq     uint64 `json:"seq"`
	Created int64  `json:"created"` // the stream's creation time, Unix ns
}

func cursorKey(stream string) []byte { return []byte("cursor." + stream) }

func getCursor(tx *producer.Tx, stream string) (cursor, error) {
	var c cursor
	v := tx.Bucket(bucketMeta).Get(cursorKey(stream))
	if v == nil {
		return c, nil
	}
	if err := json.Unmarshal(v, &c); err != nil {
		return c, fmt.Errorf("read cursor of %s: %w", stream, err)
	}
	return c, nil
}

func putCursor(tx *producer.Tx, stream string, c cursor) error {
	b, _ := json.Marshal(c) // a struct of two integers always encodes
	if err := tx.Bucket(bucketMeta).Put(cursorKey(stream), b); err != nil {
		return fmt.Errorf("write cursor of %s: %w", stream, err)
	}
	return nil
}

func createdNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// docKey is the key of a document in the view: collection, 0x00, id. Names
// cannot hold control characters (events.ValidateName), so keys are
// unambiguous and a collection's documents share the prefix collection+0x00.
func docKey(collection, id string) []byte {
	k := make([]byte, len(collection)+1+len(id))
	putDocKey(k, collection, id)
	return k
}

// putDocKey writes docKey(collection, id) into k, which has its length.
func putDocKey(k []byte, collection, id string) {
	n := copy(k, collection)
	k[n] = 0
	copy(k[n+1:], id)
}

func collectionPrefix(collection string) []byte { return append([]byte(collection), 0) }

func splitDocKey(k []byte) (collection, id string) {
	c, d, _ := bytes.Cut(k, []byte{0})
	return string(c), string(d)
}

// syncedVersion returns the version of the synced state of key (0: none).
func syncedVersion(tx *producer.Tx, key []byte) uint64 {
	return versionOf(tx.Bucket(bucketDocs).Get(key))
}

// seenVersion is the newest version of key the replica has seen: its
// synced state's, or the one at which it left the user's view (a Left
// notice), whichever is newer. A receipt at or below it waits for nothing.
func seenVersion(tx *producer.Tx, key []byte) uint64 {
	v := syncedVersion(tx, key)
	if b := tx.Bucket(bucketLeft); b != nil {
		if l := b.Get(key); len(l) == 8 {
			v = max(v, binary.BigEndian.Uint64(l))
		}
	}
	return v
}

func versionOf(v []byte) uint64 {
	if len(v) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v[:8])
}

// putSyncedValue writes into v (of length 8+len(payload)) what bucketDocs
// holds for a change payload at version: a synced value, the version
// (big-endian) then the payload.
func putSyncedValue(v []byte, version uint64, payload []byte) {
	binary.BigEndian.PutUint64(v, version)
	copy(v[8:], payload)
}

// view is the view's buckets inside one write transaction that applies
// changes, with what it knows about them at the start: changes never add
// awaiting receipts, so an empty bucketAwaiting stays empty, and an empty
// bucketConflicts needs no delete until a change puts a key there.
type view struct {
	tx        *producer.Tx
	seal      *keys.Cipher // nil: plaintext
	docs      *producer.Bucket
	conflicts *producer.Bucket
	anyOpen   bool // bucketConflicts may hold keys
	awaiting  bool // bucketAwaiting may hold keys
	// last is the greatest key in bucketDocs: a key after it is not there.
	// appending stays true while every put is a new key after last.
	last      []byte
	appending bool
}

// appendFill is the fill percent of bucketDocs' pages in a transaction
// that only appended: a page behind the last is never written again by
// appends, so it is packed nearly full rather than bbolt's default half
// (which suits random inserts), leaving room for a document to grow a
// little. Fewer pages to write make the commit cheaper.
const appendFill = 0.9

func openView(tx *producer.Tx, seal *keys.Cipher) *view {
	v := &view{tx: tx, seal: seal, docs: tx.Bucket(bucketDocs), conflicts: tx.Bucket(bucketConflicts), appending: true}
	v.anyOpen = !emptyBucket(v.conflicts)
	v.awaiting = !emptyBucket(tx.Bucket(bucketAwaiting))
	v.last, _ = v.docs.Cursor().Last()
	return v
}

func emptyBucket(b *producer.Bucket) bool {
	k, _ := b.Cursor().First()
	return k == nil
}

// version returns the version of the synced state of key (0: none),
// without a lookup for a key after the last.
func (v *view) version(key []byte) uint64 {
	if bytes.Compare(key, v.last) > 0 {
		return 0
	}
	return versionOf(v.docs.Get(key))
}

// put stores value (a synced value) as the synced state of key. bbolt keeps
// key and value until the transaction ends: neither may change before.
func (v *view) put(key []byte, version uint64, value []byte) error {
	if bytes.Compare(key, v.last) > 0 {
		v.last = key
	} else {
		v.appending = false
	}
	if v.seal != nil {
		value = sealSynced(v.seal, key, value)
	}
	if err := v.docs.Put(key, value); err != nil {
		return fmt.Errorf("store change of %q v%d: %w", key, version, err)
	}
	return nil
}

// close readies the buckets for the commit.
func (v *view) close() {
	if v.appending {
		v.docs.SetFillPercent(appendFill)
	}
}

// indexConflicts records whether key has open conflicts after ch.
func (v *view) indexConflicts(key []byte, ch *changeHead) error {
	open := false
	for _, c := range ch.Conflicts {
		open = open || c.Status == events.ConflictOpen
	}
	switch {
	case open:
		v.anyOpen = true
		if err := v.conflicts.Put(key, nil); err != nil {
			return fmt.Errorf("index conflicts of %q: %w", key, err)
		}
	case v.anyOpen:
		if err := v.conflicts.Delete(key); err != nil {
			return fmt.Errorf("index conflicts of %q: %w", key, err)
		}
	}
	return nil
}

// sealSynced encrypts a synced value: the version stays in the clear (the
// view compares versions without decrypting), the change payload is sealed
// bound to the bucket, the key and that version.
func sealSynced(seal *keys.Cipher, key, value []byte) []byte {
	out := make([]byte, 8, 8+len(value)-8+keys.Overhead)
	copy(out, value[:8])
	return append(out, seal.SealValue(bucketDocs, syncedAAD(key, value[:8]), value[8:])...)
}

// syncedAAD is the associated data key of a synced value: the document key
// and the version the value starts with.
func syncedAAD(key, version []byte) []byte {
	return append(append(make([]byte, 0, len(key)+1+len(version)), key...), append([]byte{0}, version...)...)
}

// syncedDoc returns the synced state of key as a projection.Doc of tenant
// (the zero Doc when the view has none), decrypting with seal unless it is
// nil.
func syncedDoc(tx *producer.Tx, seal *keys.Cipher, tenant string, key []byte) (projection.Doc, error) {
	return decodeSynced(seal, tenant, key, tx.Bucket(bucketDocs).Get(key))
}

// decodeSynced reads v, a synced value of key: a compact record
// (synced.go) or, as received, a change payload.
func decodeSynced(seal *keys.Cipher, tenant string, key, v []byte) (projection.Doc, error) {
	if v == nil {
		return projection.Doc{}, nil
	}
	if len(v) < 8 {
		return projection.Doc{}, fmt.Errorf("read synced %q: short record", key)
	}
	payload, err := seal.OpenValue(bucketDocs, syncedAAD(key, v[:8]), v[8:])
	if err != nil {
		return projection.Doc{}, fmt.Errorf("read synced %q: %w", key, err)
	}
	if len(payload) > 0 && payload[0] == syncedCompact {
		return decodeCompact(tenant, key, versionOf(v), payload[1:])
	}
	ch, err := events.DecodeChange(payload)
	if err != nil {
		return projection.Doc{}, fmt.Errorf("read synced %q: %w", key, err)
	}
	return projection.DocFromChange(ch), nil
}

// clearScope forgets the synced state, the receipts awaiting their change,
// the CHANGES cursor and its quarantined messages. Pending writes (the producer's log) and rejections
// stay. Use Replica.resetScope, which settles the awaiting receipts first.
func clearScope(tx *producer.Tx) error {
	for _, name := range scopeBuckets {
		if err := tx.DeleteBucket(name); err != nil {
			return fmt.Errorf("reset %s: %w", name, err)
		}
		if _, err := tx.CreateBucket(name); err != nil {
			return fmt.Errorf("reset %s: %w", name, err)
		}
	}
	if err := tx.Bucket(bucketMeta).Delete(cursorKey(events.StreamChanges)); err != nil {
		return fmt.Errorf("reset changes cursor: %w", err)
	}
	return clearQuarantine(tx, events.StreamChanges)
}

// Rejection is a local write the server did not apply: a rejected or
// invalid receipt. The app's view of the document has reverted to the
// server's state; the rejection stays until DismissRejection.
type Rejection struct {
	Event      string         `json:"event"`
	Collection string         `json:"collection"`
	Doc        string         `json:"doc"`
	Op         events.Op      `json:"op"`
	Fields     events.Fields  `json:"fields,omitempty"`
	Outcome    events.Outcome `json:"outcome"`
	Reason     string         `json:"reason"`
}

// putJSON stores v as JSON under key in bucket, sealed with seal unless it
// is nil.
func putJSON(tx *producer.Tx, seal *keys.Cipher, bucket, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %T: %w", v, err)
	}
	if err := tx.Bucket(bucket).Put(key, seal.SealValue(bucket, key, b)); err != nil {
		return fmt.Errorf("store %q in %s: %w", key, bucket, err)
	}
	return nil
}

// getJSON decodes raw, the value of key in bucket, into dst, opening it
// with seal unless it is nil.
func getJSON(seal *keys.Cipher, bucket, key, raw []byte, dst any) error {
	b, err := seal.OpenValue(bucket, key, raw)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, dst); err != nil {
		return fmt.Errorf("decode %q in %s: %w", key, bucket, err)
	}
	return nil
}
