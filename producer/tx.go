package producer

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/events"
)

// The local store's one owner. A Log owns its bbolt file and every bucket
// in it: its own ("producer.*") and those of the packages that keep their
// state beside the log so one transaction can change both (the consumer's
// view, "consumer.*"; the gateway's writer, "gateway.*"). Nothing outside
// this package holds a *bbolt.DB or a *bbolt.Tx: they run a transaction
// with View or Update and get a *Tx, whose log methods are typed
// (UnsettledFor, Settle, ...) and whose Bucket gives a *Bucket of their own
// namespace only: a name starting "producer." is refused, so the log's
// buckets change only through the log's methods.

// ErrReservedBucket: a bucket name starting "producer." was given to
// Tx.Bucket, CreateBucket or DeleteBucket; those buckets are the log's.
var ErrReservedBucket = errors.New(`bucket names starting "producer." are the log's`)

const reservedPrefix = "producer."

// Tx is one transaction on the local store, passed to the function given
// to Log.View or Log.Update and valid only until it returns. Its log
// methods read (and, in Update, change) the log in that transaction, so a
// view and the log are read consistently and changed atomically.
type Tx struct {
	l  *Log
	tx *bbolt.Tx
}

// View runs fn in a read-only transaction on the local store. fn must not
// keep tx, a Bucket or a value read from it after it returns (copy what it
// keeps). It fails with ErrClosed after Close.
func (l *Log) View(ctx context.Context, fn func(tx *Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return l.mapClosed(l.db.View(func(tx *bbolt.Tx) error { return fn(&Tx{l: l, tx: tx}) }))
}

// Update runs fn in a read-write transaction on the local store and
// commits it (one fsync) if fn returns nil; an error rolls every change of
// fn back, the log's included. Update transactions are serialised with
// each other and with appends. fn runs once, in a transaction of its own;
// Batch shares the appends' group commit instead. It fails with ErrClosed
// after Close.
func (l *Log) Update(ctx context.Context, fn func(tx *Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return l.mapClosed(l.update(func(tx *bbolt.Tx) error { return fn(&Tx{l: l, tx: tx}) }))
}

func (l *Log) mapClosed(err error) error {
	if errors.Is(err, bbolt.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// Writable reports whether tx is an Update's.
func (t *Tx) Writable() bool { return t.tx.Writable() }

// OnCommit calls fn once tx has committed (never if it rolls back).
func (t *Tx) OnCommit(fn func()) { t.tx.OnCommit(fn) }

// Bucket returns the bucket name, or nil if it does not exist or name is
// one of the log's ("producer.*").
func (t *Tx) Bucket(name []byte) *Bucket {
	if reserved(name) {
		return nil
	}
	b := t.tx.Bucket(name)
	if b == nil {
		return nil
	}
	return &Bucket{b: b}
}

// CreateBucket creates bucket name; it fails if it exists (bbolt's
// ErrBucketExists) or name is reserved (ErrReservedBucket).
func (t *Tx) CreateBucket(name []byte) (*Bucket, error) {
	if reserved(name) {
		return nil, fmt.Errorf("create bucket %s: %w", name, ErrReservedBucket)
	}
	b, err := t.tx.CreateBucket(name)
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", name, err)
	}
	return &Bucket{b: b}, nil
}

// CreateBucketIfNotExists returns bucket name, creating it if needed.
func (t *Tx) CreateBucketIfNotExists(name []byte) (*Bucket, error) {
	if reserved(name) {
		return nil, fmt.Errorf("create bucket %s: %w", name, ErrReservedBucket)
	}
	b, err := t.tx.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", name, err)
	}
	return &Bucket{b: b}, nil
}

// DeleteBucket deletes bucket name and everything in it; deleting a bucket
// that does not exist is not an error.
func (t *Tx) DeleteBucket(name []byte) error {
	if reserved(name) {
		return fmt.Errorf("delete bucket %s: %w", name, ErrReservedBucket)
	}
	if err := t.tx.DeleteBucket(name); err != nil && !errors.Is(err, bbolt.ErrBucketNotFound) {
		return fmt.Errorf("delete bucket %s: %w", name, err)
	}
	return nil
}

func reserved(name []byte) bool { return bytes.HasPrefix(name, []byte(reservedPrefix)) }

// Bucket is a key/value bucket of a caller's namespace inside one Tx.
// Values returned by Get and by a Cursor are valid only inside the
// transaction; a key or value given to Put must not change until it ends.
type Bucket struct{ b *bbolt.Bucket }

// Get returns the value of key, or nil.
func (b *Bucket) Get(key []byte) []byte { return b.b.Get(key) }

// Put stores value under key.
func (b *Bucket) Put(key, value []byte) error { return b.b.Put(key, value) }

// Delete removes key; a missing key is not an error.
func (b *Bucket) Delete(key []byte) error { return b.b.Delete(key) }

// ForEach calls fn for every key in order; an error stops it and is
// returned. fn must not change the bucket.
func (b *Bucket) ForEach(fn func(k, v []byte) error) error { return b.b.ForEach(fn) }

// Cursor returns a cursor over the bucket's keys, in byte order.
func (b *Bucket) Cursor() *Cursor { return &Cursor{c: b.b.Cursor()} }

// Empty reports whether the bucket holds no key, reading one page.
func (b *Bucket) Empty() bool {
	k, _ := b.b.Cursor().First()
	return k == nil
}

// KeyN counts the keys: it walks every page of the bucket (no values are
// decoded), so it is for small buckets.
func (b *Bucket) KeyN() int { return b.b.Stats().KeyN }

// SetFillPercent sets how full the bucket's pages are split at commit
// (bbolt's FillPercent, default 0.5): near 1 for a bucket only appended to.
func (b *Bucket) SetFillPercent(f float64) { b.b.FillPercent = f }

// Cursor walks a Bucket; a nil key means the walk ended.
type Cursor struct{ c *bbolt.Cursor }

// First moves to the first key.
func (c *Cursor) First() (k, v []byte) { return c.c.First() }

// Last moves to the last key.
func (c *Cursor) Last() (k, v []byte) { return c.c.Last() }

// Next moves to the next key.
func (c *Cursor) Next() (k, v []byte) { return c.c.Next() }

// Prev moves to the previous key.
func (c *Cursor) Prev() (k, v []byte) { return c.c.Prev() }

// Seek moves to key, or the first key after it.
func (c *Cursor) Seek(key []byte) (k, v []byte) { return c.c.Seek(key) }

// Delete removes the key the cursor is at.
func (c *Cursor) Delete() error { return c.c.Delete() }

// Settle records receipt r on the event it names, in tx (an Update's): the
// entry becomes settled with the receipt's outcome, reason, conflict,
// version and stream sequence, leaves the unsettled index and is no longer
// published (even if it was still pending). A receipt for an event this
// log does not hold, or for one already settled, changes nothing and is
// not an error.
func (t *Tx) Settle(r *events.Receipt) error { return t.l.settle(t.tx, r) }

// UnsettledFor returns the unsettled entries (pending, published and
// failed) of one document, in log order. It reads only that document's
// entries: its cost is the writes on the document, not the backlog.
func (t *Tx) UnsettledFor(collection, doc string) ([]Entry, error) {
	return t.l.unsettledFor(t.tx, collection, doc)
}

// UnsettledIn returns the unsettled entries of every document of
// collection, grouped by document (each document's in log order; the
// documents in no promised order). It reads only that collection's
// entries.
func (t *Tx) UnsettledIn(collection string) ([]Entry, error) {
	return t.l.unsettledIn(t.tx, collection)
}

// UnsettledEntry returns the entry of event id if it is unsettled
// (pending, published or failed); false if the log holds no such event or
// it is settled. It costs one lookup and one entry read.
func (t *Tx) UnsettledEntry(id string) (Entry, bool, error) {
	return t.l.unsettledEntry(t.tx, id)
}

// Awaiting returns the first entry at local sequence from or after that
// awaits its fate (unsettled and not failed: pending or published), with
// its local sequence; false if there is none. It costs one seek in an
// index of the awaiting entries (producer.awaiting) and one entry read,
// whatever the backlog and however many failed entries precede it: a
// caller that walks the awaiting writes calls it again from seq+1. Local
// sequences are the log's own numbering (Log.LastSeq), across devices.
func (t *Tx) Awaiting(from uint64) (seq uint64, e Entry, ok bool, err error) {
	return t.l.awaiting(t.tx, from)
}

// Holds reports whether the log holds event id, in any state (the event
// was appended to this log, under any of its devices). It costs one lookup.
func (t *Tx) Holds(id string) bool {
	ids := t.tx.Bucket(bucketIDs)
	return ids != nil && ids.Get([]byte(id)) != nil
}

// UnsettledCount returns how many entries are unsettled (pending,
// published or failed) as tx sees the log: a stored count, O(1).
func (t *Tx) UnsettledCount() int { return unsettledCount(t.tx) }

// EachUnsettled calls fn for every unsettled entry, in log order, until fn
// returns false or an error. It reads the whole backlog: it is for the
// rare recoveries that must judge every unsettled write (a stream reset, a
// gap in RECEIPTS), never for a per-operation path.
func (t *Tx) EachUnsettled(fn func(e Entry) (more bool, err error)) error {
	return t.l.eachUnsettled(t.tx, fn)
}

// Copy is an event Reissue wrote again: Seq is the copy's local sequence,
// Of the original's.
type Copy struct{ Seq, Of uint64 }

// CopiesAfter returns the copies Reissue wrote at local sequences after
// after, in log order. It reads only those.
func (t *Tx) CopiesAfter(after uint64) ([]Copy, error) {
	return t.l.copiesAfter(t.tx, after)
}
