package producer

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/events"
)

// Buckets of the log. All are prefixed "producer." so the log can share a
// bbolt file with the consumer's local view.
var (
	bucketMeta      = []byte("producer.meta")      // key -> value, see meta keys
	bucketEvents    = []byte("producer.events")    // seq -> encoded event (immutable)
	bucketState     = []byte("producer.state")     // seq -> stateRecord (JSON)
	bucketPending   = []byte("producer.pending")   // seq -> outbound (JSON), entries not yet acked
	bucketUnsettled = []byte("producer.unsettled") // seq -> empty, entries without a receipt
	bucketIDs       = []byte("producer.ids")       // event id -> seq
	bucketReissued  = []byte("producer.reissued")  // event id -> the id of the event that wrote it again (Reissue)
	bucketCopies    = []byte("producer.copies")    // seq of a copy Reissue wrote -> seq of its original
	// bucketAwaiting holds seq -> empty for the entries that await their
	// fate: unsettled and not failed (pending or published). Added in
	// storeNew, removed where an entry fails (putState) or settles, in
	// those transactions.
	bucketAwaiting = []byte("producer.awaiting")

	allBuckets = [][]byte{bucketMeta, bucketEvents, bucketState, bucketPending, bucketUnsettled, bucketIDs, bucketReissued, bucketCopies, bucketAwaiting}
)

// Meta keys.
var (
	metaTenant = []byte("tenant")
	metaClient = []byte("client")
	// metaDevice is the id of the log's current device (a ULID), absent in a
	// log made before devices existed (its events carry no device).
	metaDevice = []byte("device")
	// metaDeviceBase is the local sequence at which the current device
	// started, 8 bytes big-endian (absent: 0): an event's device sequence
	// is its local sequence minus the base.
	metaDeviceBase = []byte("device_base")
	metaSeq        = []byte("seq")     // last assigned local sequence, 8 bytes big-endian
	metaLastID     = []byte("last_id") // last assigned event id, 16 bytes
	metaHLC        = []byte("hlc")     // last assigned HLC, 8 bytes wall + 4 bytes logical
	// metaKeyCheck is the sealed check value of an encrypted log
	// (keys.CheckStore); absent in a plaintext one.
	metaKeyCheck = []byte("key_check")
	// metaAwaiting is the version of producer.awaiting the file holds
	// (awaitingVersion): absent in a file written before it, which openDB
	// fills once.
	metaAwaiting = []byte("awaiting_index")
	// metaUnsettled is how many entries are unsettled, 8 bytes big-endian:
	// changed in the transactions that append (storeNew) and settle, and
	// recounted at every open.
	metaUnsettled = []byte("unsettled_count")
)

const awaitingVersion = 1

// stateRecord is the mutable part of an entry.
type stateRecord struct {
	State       State          `json:"state"`
	StreamSeq   uint64         `json:"stream_seq,omitempty"`
	Err         string         `json:"err,omitempty"`
	Outcome     events.Outcome `json:"outcome,omitempty"`
	Reason      string         `json:"reason,omitempty"`
	Conflict    string         `json:"conflict,omitempty"`
	Version     uint64         `json:"version,omitempty"`
	AppendedAt  time.Time      `json:"appended_at"`
	PublishedAt time.Time      `json:"published_at,omitzero"`
	SettledAt   time.Time      `json:"settled_at,omitzero"`
	Duplicate   bool           `json:"duplicate,omitempty"`
}

// outbound is what the publisher needs to send a pending entry without
// decoding the event: its id, its subject and the trace context captured
// when it was appended.
type outbound struct {
	ID      string            `json:"id"`
	Subject string            `json:"subject"`
	Trace   map[string]string `json:"trace,omitempty"`
}

func seqKey(seq uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return b[:]
}

func keySeqOf(k []byte) uint64 { return binary.BigEndian.Uint64(k) }

func encodeHLC(h events.HLC) []byte {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(h.Wall))
	binary.BigEndian.PutUint32(b[8:], h.Logical)
	return b[:]
}

func decodeHLC(b []byte) events.HLC {
	if len(b) != 12 {
		return events.HLC{}
	}
	return events.HLC{Wall: int64(binary.BigEndian.Uint64(b[:8])), Logical: binary.BigEndian.Uint32(b[8:])}
}

func (l *Log) getState(tx *bbolt.Tx, seq uint64) (stateRecord, error) {
	var r stateRecord
	k := seqKey(seq)
	v := tx.Bucket(bucketState).Get(k)
	if v == nil {
		return r, fmt.Errorf("read state of entry %d: missing", seq)
	}
	v, err := l.seal.OpenValue(bucketState, k, v)
	if err != nil {
		return r, fmt.Errorf("read state of entry %d: %w", seq, err)
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, fmt.Errorf("read state of entry %d: %w", seq, err)
	}
	return r, nil
}

func (l *Log) putState(tx *bbolt.Tx, seq uint64, r stateRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode state of entry %d: %w", seq, err)
	}
	k := seqKey(seq)
	if err := tx.Bucket(bucketState).Put(k, l.seal.SealValue(bucketState, k, b)); err != nil {
		return fmt.Errorf("write state of entry %d: %w", seq, err)
	}
	// An entry that failed or settled no longer awaits its fate; this is
	// where the publisher's failures reach the index.
	if r.State == StateFailed || r.State == StateSettled {
		if err := tx.Bucket(bucketAwaiting).Delete(k); err != nil {
			return fmt.Errorf("write state of entry %d: unmark awaiting: %w", seq, err)
		}
	}
	return nil
}

// readEntry reads entry seq inside tx.
func (l *Log) readEntry(tx *bbolt.Tx, seq uint64) (Entry, error) {
	k := seqKey(seq)
	raw := tx.Bucket(bucketEvents).Get(k)
	if raw == nil {
		return Entry{}, fmt.Errorf("read entry %d: event missing", seq)
	}
	raw, err := l.seal.OpenValue(bucketEvents, k, raw)
	if err != nil {
		return Entry{}, fmt.Errorf("read entry %d: %w", seq, err)
	}
	var e events.Event
	if err := json.Unmarshal(raw, &e); err != nil {
		return Entry{}, fmt.Errorf("read entry %d: decode event: %w", seq, err)
	}
	st, err := l.getState(tx, seq)
	if err != nil {
		return Entry{}, err
	}
	return entryOf(&e, st), nil
}

func entryOf(e *events.Event, st stateRecord) Entry {
	return Entry{
		Event:       e,
		State:       st.State,
		StreamSeq:   st.StreamSeq,
		Err:         st.Err,
		Outcome:     st.Outcome,
		Reason:      st.Reason,
		Conflict:    st.Conflict,
		Version:     st.Version,
		AppendedAt:  st.AppendedAt,
		PublishedAt: st.PublishedAt,
		SettledAt:   st.SettledAt,
		Duplicate:   st.Duplicate,
	}
}

func jsonMarshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return b, nil
}
