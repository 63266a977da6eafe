package projection

import (
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// bucketSeqEvents holds, per writer, the event ids applied at the
// sequences inside its dedupe window: one nested bucket per writer, named
// by hwmKey, mapping uint64 big endian sequence -> event id (sealed like a
// document when the store is encrypted, bound to the writer and sequence).
// Created by the first Commit that remembers an id; a store without it
// holds none.
var bucketSeqEvents = []byte("seq_events")

// writerKey is hwmKey of k.
func writerKey(k ClientKey) []byte { return hwmKey(nil, k.Tenant, k.Client, k.Device) }

// seqEventAAD binds a remembered id to its writer and sequence.
func seqEventAAD(writer []byte, seq uint64) []byte {
	return appendSeqEventAAD(nil, writer, seq)
}

// appendSeqEventAAD appends seqEventAAD(writer, seq) to b.
func appendSeqEventAAD(b, writer []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, writer...), seq)
}

// WriterHighWater implements Store.
func (s *BoltStore) WriterHighWater(ctx context.Context, k ClientKey) (HighWater, error) {
	var h HighWater
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		h, err = decodeHighWater(tx.Bucket(s.bHWM).Get(writerKey(k)))
		return err
	})
	if err != nil {
		return HighWater{}, fmt.Errorf("read high-water mark of %s: %w", k, err)
	}
	return h, nil
}

// SeqEvent implements Store.
func (s *BoltStore) SeqEvent(ctx context.Context, k ClientKey, seq uint64) (string, error) {
	var id string
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(s.bSeq)
		if b == nil {
			return nil
		}
		wk := writerKey(k)
		if b = b.Bucket(wk); b == nil {
			return nil
		}
		v := b.Get(u64(seq))
		if v == nil {
			return nil
		}
		plain, err := s.seal.OpenValue(s.bSeq, seqEventAAD(wk, seq), v)
		if err != nil {
			return err
		}
		id = string(plain)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read the event at sequence %d of %s: %w", seq, k, err)
	}
	return id, nil
}

// commitSeqEvents writes b.SeqEvents and drops what b.ForgetSeqEvents lets
// go, inside Commit's transaction, building keys and values in c. Each
// forgotten id is deleted once, from the low end of its writer's bucket, so
// forgetting costs a seek per writer and batch plus the ids it removes.
func (s *BoltStore) commitSeqEvents(tx *bolt.Tx, b *Batch, c *commitBuf) error {
	if len(b.SeqEvents) == 0 && len(b.ForgetSeqEvents) == 0 {
		return nil
	}
	root, err := tx.CreateBucketIfNotExists(s.bSeq)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketSeqEvents, err)
	}
	// A batch's ids come in runs of one writer: its bucket and key are
	// looked up once a run, and once a batch with buckets.
	var (
		buckets map[ClientKey]*bolt.Bucket
		wb      *bolt.Bucket
		writer  ClientKey
		wk      []byte
	)
	for i := range b.SeqEvents {
		e := &b.SeqEvents[i]
		if wb == nil || e.Writer != writer {
			writer, wk = e.Writer, writerKey(e.Writer)
			if wb = buckets[writer]; wb == nil {
				if wb, err = root.CreateBucketIfNotExists(wk); err != nil {
					return fmt.Errorf("event ids of %s: %w", e.Writer, err)
				}
				wb.FillPercent = appendFill // a writer's sequences rise, but for the late ones of its holes
				if buckets == nil {
					buckets = make(map[ClientKey]*bolt.Bucket)
				}
				buckets[writer] = wb
			}
		}
		k := c.key(binary.BigEndian.AppendUint64(c.k[:0], e.Seq))
		var aad []byte // what an encrypted store binds the id to, built after the key: SealValue keeps neither
		if s.seal != nil {
			aad = appendSeqEventAAD(k[len(k):], wk, e.Seq)
		}
		v := c.finish(s.seal, append(c.start(s.seal), e.Event...), s.bSeq, aad)
		if err := wb.Put(k, v); err != nil {
			return fmt.Errorf("remember event %s at sequence %d of %s: %w", e.Event, e.Seq, e.Writer, err)
		}
	}
	for k, floor := range b.ForgetSeqEvents {
		wb := root.Bucket(writerKey(k))
		if wb == nil {
			continue
		}
		c := wb.Cursor()
		for key, _ := c.First(); key != nil && readU64(key) <= floor; key, _ = c.First() {
			if err := c.Delete(); err != nil {
				return fmt.Errorf("forget event ids of %s up to %d: %w", k, floor, err)
			}
		}
	}
	return nil
}
