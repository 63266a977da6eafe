package projection

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
)

var _ PartitionedStore = (*BoltStore)(nil)

// Bucket names of the bbolt view store.
var (
	bucketDocs      = []byte("docs")      // address key -> encoded state (docstate.go: the events.Change, Settled nil, and the audience)
	bucketConflicts = []byte("conflicts") // address key \x00 conflict id -> encoded events.Conflict
	bucketHWM       = []byte("hwm")       // hwmKey -> encoded HighWater (see encodeHighWater)
	bucketMeta      = []byte("meta")      // "checkpoint" -> uint64 big endian
	bucketOutbox    = []byte("outbox")    // uint64 big endian -> encodeOutboxEntry's record (or a JSON outboxRecord, before)
	keyCheckpoint   = []byte("checkpoint")
	keyStreams      = []byte("streams") // (in bucketMeta) JSON StreamMarks, in the clear like the checkpoint
	// keyKeyCheck (in bucketMeta) is the sealed check value of an
	// encrypted store (keys.CheckStore); absent in a plaintext one.
	keyKeyCheck = []byte("key_check")
	// keyPartitions (in bucketMeta) is the partition count of a store
	// partitioned by Partition (uint64 big endian); absent in a whole one.
	keyPartitions = []byte("partitions")
)

// partitionBuckets are the buckets of partition p: "p<count>.<index>."
// then meta, hwm or outbox, laid out as the whole store's.
func partitionBuckets(p Partition) (meta, hwm, outbox []byte) {
	pre := fmt.Sprintf("p%d.%d.", p.Count, p.Index)
	return []byte(pre + "meta"), []byte(pre + "hwm"), []byte(pre + "outbox")
}

// BoltStore is the embedded view store: one bbolt file. Every Commit is one
// bbolt read-write transaction, fsynced before it returns.
type BoltStore struct {
	db   *bolt.DB
	seal *keys.Cipher // nil: plaintext

	// root is the whole store (itself, or the one a partition's Store was
	// made from): its mu and closed guard the file.
	root *BoltStore
	part Partition // the zero Partition for the whole store
	// The buckets of the progress this Store keeps (the whole store's,
	// or a partition's).
	bMeta, bHWM, bOutbox []byte
	// bSeq holds the remembered event ids per writer and sequence
	// (bolt_writers.go): bucketSeqEvents, or the partition's own.
	bSeq []byte

	// fieldKey is the HMAC key of the field index's tokens in an
	// encrypted store (root only; bolt_fields.go); nil in plaintext.
	fieldKey []byte

	mu      sync.RWMutex
	closed  bool
	pclosed bool // a partition's Store closed (under root.mu)
}

// BoltOptions tune OpenBolt. The zero value works.
type BoltOptions struct {
	// Timeout bounds the wait for the file lock another process holds; zero
	// means 5 s.
	Timeout time.Duration
	// NoSync skips fsync on commit. Only for rebuilds into a throw-away file
	// (Verify): a crash can corrupt the file.
	NoSync bool
	// Cipher, if set, encrypts the store at rest with AES-256-GCM: every
	// document, conflict record and outbox entry is sealed, bound to its
	// bucket and key. Keys (tenant, collection and document names, client
	// ids), the checkpoint and high-water marks stay in the clear (see
	// doc.go). nil keeps the store in plaintext. Opening an encrypted store
	// without its key or with another, or a plaintext store with a key,
	// fails with an error wrapping keys.ErrWrongKey naming the file.
	Cipher *keys.Cipher
}

// OpenBolt opens (creating if needed) the bbolt view store at path.
func OpenBolt(path string, opts BoltOptions) (*BoltStore, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout, NoSync: opts.NoSync, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open view store %s: %w", path, err)
	}
	s := &BoltStore{db: db, seal: opts.Cipher, bMeta: bucketMeta, bHWM: bucketHWM, bOutbox: bucketOutbox, bSeq: bucketSeqEvents}
	s.root = s
	err = db.Update(func(tx *bolt.Tx) error {
		// Before this build writes anything: did the last write keep the
		// field index (bolt_fields.go)?
		if err := checkFields(tx); err != nil {
			return err
		}
		existed := tx.Bucket(bucketMeta) != nil
		for _, b := range [][]byte{bucketDocs, bucketConflicts, bucketHWM, bucketMeta, bucketOutbox} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create buckets: %w", err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		check, err := keys.CheckStore(opts.Cipher, meta.Get(keyKeyCheck), existed)
		if err != nil {
			return err
		}
		if check != nil {
			if err := meta.Put(keyKeyCheck, check); err != nil {
				return err
			}
		}
		if err := openFieldKey(tx, s); err != nil { // bolt_fields.go
			return err
		}
		return stampFields(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open view store %s: %w", path, err)
	}
	return s, nil
}

// Partition implements PartitionedStore.
func (s *BoltStore) Partition(ctx context.Context, p Partition) (Store, error) {
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("partition view store: %w", err)
	}
	if p.whole() {
		return nil, fmt.Errorf("partition view store: %w: Partition.Count %d, want 2 or more", ErrInvalidConfig, p.Count)
	}
	if s.root != s {
		return nil, fmt.Errorf("partition view store: %w: a partition of a partition", ErrInvalidConfig)
	}
	meta, hwm, outbox := partitionBuckets(p)
	err := s.update(ctx, func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketMeta)
		if n := readU64(root.Get(keyPartitions)); n != 0 && n != uint64(p.Count) {
			return fmt.Errorf("%w: the view is partitioned in %d, not %d", ErrInvalidConfig, n, p.Count)
		}
		if err := root.Put(keyPartitions, u64(uint64(p.Count))); err != nil {
			return err
		}
		if tx.Bucket(meta) != nil {
			return nil
		}
		pm, err := tx.CreateBucket(meta)
		if err != nil {
			return err
		}
		ph, err := tx.CreateBucket(hwm)
		if err != nil {
			return err
		}
		po, err := tx.CreateBucket(outbox)
		if err != nil {
			return err
		}
		// Start where the whole store is.
		for _, k := range [][]byte{keyCheckpoint, keyStreams} {
			if v := root.Get(k); v != nil {
				if err := pm.Put(k, bytes.Clone(v)); err != nil {
					return err
				}
			}
		}
		if err := tx.Bucket(bucketHWM).ForEach(func(k, v []byte) error { return ph.Put(bytes.Clone(k), bytes.Clone(v)) }); err != nil {
			return err
		}
		if p.Index != 0 {
			return nil
		}
		return tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
			v, err := s.seal.OpenValue(bucketOutbox, k, v)
			if err != nil {
				return fmt.Errorf("outbox entry %d: %w", readU64(k), err)
			}
			seq, err := po.NextSequence()
			if err != nil {
				return err
			}
			nk := u64(seq)
			return po.Put(nk, s.seal.SealValue(outbox, nk, v))
		})
	})
	if err != nil {
		return nil, fmt.Errorf("partition %s of view store %s: %w", p, s.db.Path(), err)
	}
	// A partition remembers the event ids of its own writers' sequences
	// from its start on; the whole store's are not copied (a sequence reused
	// across that moment is answered duplicate, as below the window).
	seqb := []byte(fmt.Sprintf("p%d.%d.seq_events", p.Count, p.Index))
	return &BoltStore{db: s.db, seal: s.seal, root: s, part: p, bMeta: meta, bHWM: hwm, bOutbox: outbox, bSeq: seqb}, nil
}

// Path returns the file the store lives in.
func (s *BoltStore) Path() string { return s.db.Path() }

// Close closes the file. It is safe to call more than once.
func (s *BoltStore) Close() error {
	if s.root != s {
		s.root.mu.Lock()
		s.pclosed = true
		s.root.mu.Unlock()
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close view store %s: %w", s.db.Path(), err)
	}
	return nil
}

func (s *BoltStore) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.root.mu.RLock()
	defer s.root.mu.RUnlock()
	if s.root.closed || s.pclosed {
		return ErrClosed
	}
	return s.db.View(fn)
}

func (s *BoltStore) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.root.mu.RLock()
	defer s.root.mu.RUnlock()
	if s.root.closed || s.pclosed {
		return ErrClosed
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		// Every write transaction keeps the field index (bolt_fields.go):
		// first drop it if the last write did not, last stamp it kept.
		if err := checkFields(tx); err != nil {
			return err
		}
		if err := fn(tx); err != nil {
			return err
		}
		return stampFields(tx)
	})
}

func addrKey(a events.DocAddress) []byte {
	return appendAddrKey(make([]byte, 0, len(a.Tenant)+len(a.Collection)+len(a.Doc)+2), a.Tenant, a.Collection, a.Doc)
}

// appendAddrKey appends the address key (addrKey) of a document.
func appendAddrKey(k []byte, tenant, collection, doc string) []byte {
	k = append(k, tenant...)
	k = append(k, 0)
	k = append(k, collection...)
	k = append(k, 0)
	return append(k, doc...)
}

func parseAddrKey(k []byte) (events.DocAddress, bool) {
	p := bytes.SplitN(k, []byte{0}, 3)
	if len(p) != 3 {
		return events.DocAddress{}, false
	}
	return events.DocAddress{Tenant: string(p[0]), Collection: string(p[1]), Doc: string(p[2])}, true
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func readU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// decodeDoc decodes v, the value of key in bucketDocs.
func (s *BoltStore) decodeDoc(key, v []byte) (Doc, error) {
	v, err := s.seal.OpenValue(bucketDocs, key, v)
	if err != nil {
		return Doc{}, err
	}
	return decodeDocState(v)
}

// Get implements Store.
func (s *BoltStore) Get(ctx context.Context, addr events.DocAddress) (Doc, error) {
	d := Doc{Tenant: addr.Tenant, Collection: addr.Collection, ID: addr.Doc}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		k := addrKey(addr)
		v := tx.Bucket(bucketDocs).Get(k)
		if v == nil {
			return nil
		}
		var err error
		d, err = s.decodeDoc(k, v)
		return err
	})
	if err != nil {
		return Doc{}, fmt.Errorf("get document %s/%s/%s: %w", addr.Tenant, addr.Collection, addr.Doc, err)
	}
	return d, nil
}

// hwmKey appends to k the name of a writer in bucketHWM: tenant \x00
// client, then \x00 device when it has one, so a legacy log (device "")
// keeps the key it had before devices. Names hold no control character,
// so no key is another's.
func hwmKey(k []byte, tenant, client, device string) []byte {
	k = append(append(append(k, tenant...), 0), client...)
	if device != "" {
		k = append(append(k, 0), device...)
	}
	return k
}

// encodeHighWater encodes h as its Seq (uint64 big endian, first, so a
// reader can compare marks without decoding the rest) followed by its holes
// in whichever of two forms is smaller:
//
//   - ranges: From and To of every hole, each uint64 big endian (16 bytes a
//     range). A mark without holes is 8 bytes. This is the only format of
//     stores written before the bitmap; its length is 8 + 16n.
//   - bitmap: the byte 1, the first hole's sequence lo (uint64 big endian),
//     then one bit per sequence lo .. Seq-1, set for a hole (byte i/8, bit
//     i%8 from the least significant), and one zero byte of padding when the
//     length would otherwise be 8 + 16n. At most 18 + window/8 bytes.
func encodeHighWater(h HighWater) []byte {
	n := len(h.Holes)
	if n > 0 {
		lo := h.Holes[0].From
		nb := (h.Seq - lo + 7) / 8
		if lo > 0 && lo < h.Seq && 18+nb < uint64(16*n) {
			return encodeHoleBitmap(h, lo, nb)
		}
	}
	b := make([]byte, 0, 8+16*n)
	b = binary.BigEndian.AppendUint64(b, h.Seq)
	for _, r := range h.Holes {
		b = binary.BigEndian.AppendUint64(b, r.From)
		b = binary.BigEndian.AppendUint64(b, r.To)
	}
	return b
}

func encodeHoleBitmap(h HighWater, lo, nb uint64) []byte {
	size := 17 + nb
	if (size-8)%16 == 0 {
		size++ // padding: never mistaken for the ranges form
	}
	b := make([]byte, size)
	binary.BigEndian.PutUint64(b, h.Seq)
	b[8] = 1
	binary.BigEndian.PutUint64(b[9:], lo)
	bits := b[17 : 17+nb]
	for _, r := range h.Holes {
		for s := r.From; s <= r.To; s++ {
			i := s - lo
			bits[i/8] |= 1 << (i % 8)
		}
	}
	return b
}

func decodeHighWater(b []byte) (HighWater, error) {
	var h HighWater
	if len(b) == 0 {
		return h, nil
	}
	if len(b) < 8 {
		return h, fmt.Errorf("high-water record of %d bytes", len(b))
	}
	h.Seq = binary.BigEndian.Uint64(b)
	if (len(b)-8)%16 == 0 {
		for b = b[8:]; len(b) > 0; b = b[16:] {
			h.Holes = append(h.Holes, SeqRange{From: binary.BigEndian.Uint64(b), To: binary.BigEndian.Uint64(b[8:])})
		}
		return h, nil
	}
	if len(b) < 18 || b[8] != 1 {
		return HighWater{}, fmt.Errorf("high-water record of %d bytes in no known format", len(b))
	}
	lo := binary.BigEndian.Uint64(b[9:])
	if lo == 0 || lo >= h.Seq {
		return HighWater{}, fmt.Errorf("high-water bitmap from %d with mark %d", lo, h.Seq)
	}
	nb := (h.Seq - lo + 7) / 8
	if rest := uint64(len(b) - 17); rest != nb && !(rest == nb+1 && (17+nb-8)%16 == 0) {
		return HighWater{}, fmt.Errorf("high-water bitmap of %d bytes, want %d for sequences %d to %d", rest, nb, lo, h.Seq-1)
	}
	bits := b[17 : 17+nb]
	for i := uint64(0); lo+i < h.Seq; {
		if bits[i/8] == 0 && i%8 == 0 {
			i += 8
			continue
		}
		if bits[i/8]&(1<<(i%8)) == 0 {
			i++
			continue
		}
		from := lo + i
		for lo+i < h.Seq && bits[i/8]&(1<<(i%8)) != 0 {
			i++
		}
		h.Holes = append(h.Holes, SeqRange{From: from, To: lo + i - 1})
	}
	return h, nil
}

// HighWater implements Store.
func (s *BoltStore) HighWater(ctx context.Context, tenant, client string) (HighWater, error) {
	return s.WriterHighWater(ctx, ClientKey{Tenant: tenant, Client: client})
}

// Checkpoint implements Store.
func (s *BoltStore) Checkpoint(ctx context.Context) (uint64, error) {
	var v uint64
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v = readU64(tx.Bucket(s.bMeta).Get(keyCheckpoint))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read checkpoint: %w", err)
	}
	return v, nil
}

// Streams implements Store.
func (s *BoltStore) Streams(ctx context.Context) (StreamMarks, error) {
	var m StreamMarks
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(s.bMeta).Get(keyStreams)
		if v == nil {
			return nil
		}
		return json.Unmarshal(v, &m)
	})
	if err != nil {
		return StreamMarks{}, fmt.Errorf("read stream marks: %w", err)
	}
	return m, nil
}

// outboxRecord is an outbox entry as stores written before the binary
// form (bolt_outbox.go) hold it; they still read.
type outboxRecord struct {
	Subject string              `json:"s"`
	MsgID   string              `json:"m"`
	Header  map[string][]string `json:"h,omitempty"`
	Data    []byte              `json:"d"`
}

// Commit implements Store.
func (s *BoltStore) Commit(ctx context.Context, b *Batch) error {
	if b.Reanchor && b.Streams == nil {
		return fmt.Errorf("commit batch up to %d: %w: a re-anchor without stream marks", b.Checkpoint, ErrCheckpoint)
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		meta := tx.Bucket(s.bMeta)
		old := readU64(meta.Get(keyCheckpoint))
		if b.Checkpoint < old && !b.Reanchor {
			return fmt.Errorf("%w: %d is below %d", ErrCheckpoint, b.Checkpoint, old)
		}
		if b.Prev != nil && *b.Prev != old {
			return fmt.Errorf("%w: the batch was decided from checkpoint %d, the store is at %d (another projector of partition %s committed)", ErrCheckpoint, *b.Prev, old, s.part)
		}
		if s.root == s {
			if n := readU64(meta.Get(keyPartitions)); n != 0 {
				return fmt.Errorf("%w: the view is partitioned in %d: commit through its partitions", ErrCheckpoint, n)
			}
		}
		if err := meta.Put(keyCheckpoint, u64(b.Checkpoint)); err != nil {
			return err
		}
		if b.Streams != nil {
			v, err := json.Marshal(b.Streams)
			if err != nil {
				return err
			}
			if err := meta.Put(keyStreams, v); err != nil {
				return err
			}
		}
		var c commitBuf
		docs := c.docOrder(b.Docs)
		if err := s.indexDocs(tx, indexedFields(tx), b.Docs, docs); err != nil { // bolt_fields.go
			return err
		}
		bdocs := tx.Bucket(bucketDocs)
		for _, i := range docs {
			k := c.docs.key(i)
			v, err := appendDocState(c.start(s.seal), &b.Docs[i])
			if err != nil {
				return err
			}
			if err := bdocs.Put(k, c.finish(s.seal, v, bucketDocs, k)); err != nil {
				return err
			}
		}
		confs := tx.Bucket(bucketConflicts)
		for _, i := range c.conflictOrder(b.Conflicts) {
			k := c.confs.key(i)
			v, err := appendConflict(c.start(s.seal), &b.Conflicts[i].Conflict) // json.Marshal's bytes (jsonenc.go)
			if err != nil {
				return err
			}
			if err := confs.Put(k, c.finish(s.seal, v, bucketConflicts, k)); err != nil {
				return err
			}
		}
		hwm := tx.Bucket(s.bHWM)
		for w, h := range b.HighWater {
			k := c.key(hwmKey(c.k[:0], w.Tenant, w.Client, w.Device))
			if old := hwm.Get(k); len(old) >= 8 && binary.BigEndian.Uint64(old) > h.Seq {
				continue // a mark never goes back
			}
			if err := hwm.Put(k, encodeHighWater(h)); err != nil {
				return err
			}
		}
		if err := s.commitSeqEvents(tx, b, &c); err != nil { // bolt_writers.go
			return err
		}
		out := tx.Bucket(s.bOutbox)
		out.FillPercent = appendFill // keys only ever rise
		published := b.Published
		if !slices.IsSorted(published) {
			published = slices.Sorted(slices.Values(published))
		}
		if len(published) > 0 {
			cur := out.Cursor()           // one for all: Bucket.Delete makes one per key
			for _, k := range published { // in key order: each delete lands beside the last
				key := c.key(binary.BigEndian.AppendUint64(c.k[:0], k))
				if at, _ := cur.Seek(key); !bytes.Equal(at, key) {
					continue // unknown keys are ignored
				}
				if err := cur.Delete(); err != nil {
					return err
				}
			}
		}
		for i := range b.Outbox {
			e := &b.Outbox[i]
			seq, err := out.NextSequence()
			if err != nil {
				return err
			}
			k := c.key(binary.BigEndian.AppendUint64(c.k[:0], seq))
			v := appendOutboxEntry(c.start(s.seal), e) // bolt_outbox.go
			if err := out.Put(k, c.finish(s.seal, v, s.bOutbox, k)); err != nil {
				return err
			}
			e.Key = seq
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit batch up to %d: %w", b.Checkpoint, err)
	}
	return nil
}

// appendFill is the FillPercent of a bucket whose keys only ever rise
// (the outbox, a writer's remembered event ids): bbolt then splits a full
// page where it ends instead of in half, so such a bucket takes about
// half the pages, and a commit writes about half as many, that the
// default 0.5 would leave half empty.
const appendFill = 1.0

// commitBuf holds what one Commit builds. bbolt copies a key on Put but
// keeps the value itself until the transaction ends, so the values of a
// plaintext store are appended to chunks shared by many values (one
// allocation for many, none ever written again once put), keys are built
// in one scratch buffer, and a value to seal is encoded in a scratch
// buffer of its own (the sealed copy is what is kept).
type commitBuf struct {
	chunk []byte   // the values put so far share it; a new one starts when it runs low
	plain []byte   // scratch: the value being encoded, to be sealed
	k     []byte   // scratch: the key being built
	docs  keyOrder // the keys of the docs put, and their order
	confs keyOrder // the keys of the conflict records put, and their order
}

// Sizes of commitBuf's chunks: a new chunk starts when the current one
// has less than chunkLow bytes free.
const (
	chunkSize = 64 << 10
	chunkLow  = 4 << 10
)

// start returns the buffer a value is to be appended to: a chunk's free
// end, or the scratch of a value to seal (seal non-nil).
func (c *commitBuf) start(seal *keys.Cipher) []byte {
	if seal != nil {
		return c.plain[:0]
	}
	if cap(c.chunk)-len(c.chunk) < chunkLow {
		c.chunk = make([]byte, 0, chunkSize)
	}
	return c.chunk
}

// finish returns the value v (start's buffer with the value appended)
// ready to be put under key in bucket: sealed, or the chunk's new bytes,
// which no later value overwrites.
func (c *commitBuf) finish(seal *keys.Cipher, v, bucket, key []byte) []byte {
	if seal != nil {
		c.plain = v
		return seal.SealValue(bucket, key, v)
	}
	val := v[len(c.chunk):len(v):len(v)]
	c.chunk = v // a value that outgrew the chunk moved it: later ones follow it
	return val
}

// key keeps k (built in c.k) as c.k's buffer for the next key and returns
// it; bbolt's Put, Get and Delete do not keep a key.
func (c *commitBuf) key(k []byte) []byte {
	c.k = k
	return k
}

// docOrder returns the order in which Commit puts docs: by key, the last
// of the entries of one address only (a later entry wins, and putting the
// earlier ones would only write what the last replaces).
func (c *commitBuf) docOrder(docs []Doc) []int {
	for i := range docs {
		d := &docs[i]
		c.docs.add(appendAddrKey(c.docs.buf, d.Tenant, d.Collection, d.ID))
	}
	return c.docs.sorted()
}

// conflictOrder is docOrder for conflict records (address, then id).
func (c *commitBuf) conflictOrder(confs []ConflictRecord) []int {
	for i := range confs {
		r := &confs[i]
		k := appendAddrKey(c.confs.buf, r.Address.Tenant, r.Address.Collection, r.Address.Doc)
		c.confs.add(append(append(k, 0), r.Conflict.ID...))
	}
	return c.confs.sorted()
}

// keyOrder sorts the keys of a bucket's puts: bbolt puts keys in order
// for less, each beside the last in the pages it has already read.
type keyOrder struct {
	buf   []byte // the keys, one after the other
	ends  []int  // where each ends in buf
	order []int
}

// add records the next key: buf is o.buf with it appended.
func (o *keyOrder) add(buf []byte) {
	o.buf = buf
	o.ends = append(o.ends, len(buf))
}

// key returns the key added i-th.
func (o *keyOrder) key(i int) []byte {
	start := 0
	if i > 0 {
		start = o.ends[i-1]
	}
	return o.buf[start:o.ends[i]:o.ends[i]]
}

// sorted returns the indexes of the keys added, in key order, and of
// equal keys only the one added last. Called once, after the last add.
func (o *keyOrder) sorted() []int {
	inOrder := true
	for i := range o.ends {
		o.order = append(o.order, i)
		inOrder = inOrder && (i == 0 || bytes.Compare(o.key(i-1), o.key(i)) < 0)
	}
	if inOrder {
		return o.order
	}
	slices.SortStableFunc(o.order, func(a, b int) int { return bytes.Compare(o.key(a), o.key(b)) })
	out := o.order[:0]
	for j, i := range o.order {
		if j+1 < len(o.order) && bytes.Equal(o.key(i), o.key(o.order[j+1])) {
			continue // a later entry has the same key
		}
		out = append(out, i)
	}
	return out
}

// Outbox implements Store.
func (s *BoltStore) Outbox(ctx context.Context, limit int) ([]OutboxEntry, error) {
	var out []OutboxEntry
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(s.bOutbox).Cursor()
		for k, v := c.First(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			v, err := s.seal.OpenValue(s.bOutbox, k, v)
			if err != nil {
				return fmt.Errorf("outbox entry %d: %w", readU64(k), err)
			}
			e, err := decodeOutboxEntry(v)
			if err != nil {
				return fmt.Errorf("outbox entry %d: %w", readU64(k), err)
			}
			e.Key = readU64(k)
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// RemoveOutbox implements Store.
func (s *BoltStore) RemoveOutbox(ctx context.Context, keys []uint64) error {
	if len(keys) == 0 {
		return nil
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		out := tx.Bucket(s.bOutbox)
		for _, k := range keys {
			if err := out.Delete(u64(k)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove %d outbox entries: %w", len(keys), err)
	}
	return nil
}

// Conflicts implements Store.
func (s *BoltStore) Conflicts(ctx context.Context, addr events.DocAddress) ([]events.Conflict, error) {
	var out []events.Conflict
	prefix := append(addrKey(addr), 0)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketConflicts).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if bytes.IndexByte(k[len(prefix):], 0) >= 0 {
				continue // a longer doc id sharing the prefix cannot hold \x00, but be strict
			}
			v, err := s.seal.OpenValue(bucketConflicts, k, v)
			if err != nil {
				return err
			}
			var cf events.Conflict
			if err := json.Unmarshal(v, &cf); err != nil {
				return err
			}
			out = append(out, cf)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read conflicts of %s/%s/%s: %w", addr.Tenant, addr.Collection, addr.Doc, err)
	}
	return out, nil
}

// Scan implements Store.
func (s *BoltStore) Scan(ctx context.Context, fn func(Doc) error) error {
	return s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDocs).ForEach(func(k, v []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			d, err := s.decodeDoc(k, v)
			if err != nil {
				return fmt.Errorf("scan documents: %q: %w", k, err)
			}
			return fn(d)
		})
	})
}

// ScanConflicts implements Store.
func (s *BoltStore) ScanConflicts(ctx context.Context, fn func(ConflictRecord) error) error {
	return s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketConflicts).ForEach(func(k, v []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			i := bytes.LastIndexByte(k, 0)
			addr, ok := parseAddrKey(k[:max(i, 0)])
			if i < 0 || !ok {
				return fmt.Errorf("scan conflicts: malformed key %q", k)
			}
			v, err := s.seal.OpenValue(bucketConflicts, k, v)
			if err != nil {
				return fmt.Errorf("scan conflicts: %w", err)
			}
			var cf events.Conflict
			if err := json.Unmarshal(v, &cf); err != nil {
				return fmt.Errorf("scan conflicts: %q: %w", k, err)
			}
			return fn(ConflictRecord{Address: addr, Conflict: cf})
		})
	})
}
