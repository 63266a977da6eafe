package consumer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// Buckets of the local view. All are prefixed "consumer." so the view
// shares one bbolt file with the producer's log ("producer.*") and one
// transaction can change both.
var (
	// docKey -> 8-byte big-endian version + the change payload as received.
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

	allBuckets = [][]byte{bucketDocs, bucketMeta, bucketAwaiting, bucketRejections, bucketConflicts}
	// scopeBuckets are what a full resync clears.
	scopeBuckets = [][]byte{bucketDocs, bucketAwaiting, bucketConflicts}
)

var metaScope = []byte("scope")

// cursor is how far the view has read one stream, and which incarnation of
// the stream that was (by its creation time), so a reset stream is noticed.
type cursor struct {
	Seq     uint64 `json:"seq"`
	Created int64  `json:"created"` // the stream's creation time, Unix ns
}

func cursorKey(stream string) []byte { return []byte("cursor." + stream) }

func getCursor(tx *bbolt.Tx, stream string) (cursor, error) {
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

func putCursor(tx *bbolt.Tx, stream string, c cursor) error {
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
	k := make([]byte, 0, len(collection)+1+len(id))
	k = append(k, collection...)
	k = append(k, 0)
	return append(k, id...)
}

func collectionPrefix(collection string) []byte { return append([]byte(collection), 0) }

func splitDocKey(k []byte) (collection, id string) {
	c, d, _ := bytes.Cut(k, []byte{0})
	return string(c), string(d)
}

// syncedVersion returns the version of the synced state of key (0: none).
func syncedVersion(tx *bbolt.Tx, key []byte) uint64 {
	v := tx.Bucket(bucketDocs).Get(key)
	if len(v) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v[:8])
}

// putSynced stores a change payload as the synced state of key.
func putSynced(tx *bbolt.Tx, key []byte, version uint64, payload []byte) error {
	v := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint64(v, version)
	copy(v[8:], payload)
	if err := tx.Bucket(bucketDocs).Put(key, v); err != nil {
		return fmt.Errorf("store change of %q v%d: %w", key, version, err)
	}
	return nil
}

// syncedDoc returns the synced state of key as a projection.Doc (the zero
// Doc when the view has none).
func syncedDoc(tx *bbolt.Tx, key []byte) (projection.Doc, error) {
	return decodeSynced(key, tx.Bucket(bucketDocs).Get(key))
}

func decodeSynced(key, v []byte) (projection.Doc, error) {
	if v == nil {
		return projection.Doc{}, nil
	}
	if len(v) < 8 {
		return projection.Doc{}, fmt.Errorf("read synced %q: short record", key)
	}
	ch, err := events.DecodeChange(v[8:])
	if err != nil {
		return projection.Doc{}, fmt.Errorf("read synced %q: %w", key, err)
	}
	return projection.DocFromChange(ch), nil
}

// resetScope forgets the synced state and the CHANGES cursor (a full
// resync). Pending writes (the producer's log) and rejections stay.
func resetScope(tx *bbolt.Tx) error {
	for _, name := range scopeBuckets {
		if err := tx.DeleteBucket(name); err != nil && !errors.Is(err, bbolt.ErrBucketNotFound) {
			return fmt.Errorf("reset %s: %w", name, err)
		}
		if _, err := tx.CreateBucket(name); err != nil {
			return fmt.Errorf("reset %s: %w", name, err)
		}
	}
	if err := tx.Bucket(bucketMeta).Delete(cursorKey(events.StreamChanges)); err != nil {
		return fmt.Errorf("reset changes cursor: %w", err)
	}
	return nil
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

// changeHead is the part of a change payload the view needs to file it; the
// full, strictly checked decode (events.DecodeChange) happens when a
// document is read. Decoding only this much keeps catch-up fast.
type changeHead struct {
	Schema     int        `json:"schema"`
	Tenant     string     `json:"tenant"`
	Collection string     `json:"collection"`
	Doc        string     `json:"doc"`
	Version    uint64     `json:"version"`
	HLC        events.HLC `json:"hlc"`
	Event      string     `json:"event"`
	Client     string     `json:"client"`
	Seq        uint64     `json:"seq"`
	Conflicts  []struct {
		Status events.ConflictStatus `json:"status"`
	} `json:"conflicts"`
	Settled *struct {
		ID     string                `json:"id"`
		Policy events.Policy         `json:"policy"`
		Status events.ConflictStatus `json:"status"`
	} `json:"settled"`
}

// decodeHead decodes and checks the head of a change payload.
func decodeHead(data []byte) (*changeHead, error) {
	var h changeHead
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("decode change: %w", err)
	}
	switch {
	case h.Schema != events.SchemaVersion:
		return nil, fmt.Errorf("decode change: %w: schema %d", events.ErrUnknownSchema, h.Schema)
	case h.Tenant == "" || h.Collection == "" || h.Doc == "" || h.Version == 0:
		return nil, fmt.Errorf("decode change: %w: tenant, collection, doc and version are required", events.ErrInvalid)
	}
	return &h, nil
}
