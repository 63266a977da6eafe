package consumer

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// Devices.
//
// The writer the server deduplicates is a device's log, not a client: a
// client (a user, under auth) may have any number of devices, and a store
// that is restored from a backup or copied goes on as a new device once it
// learns that its sequences are taken. The replica's part:
//
//   - its RECEIPTS follower reads every receipt subject of its client with
//     one filter (receiptFilter), so NATS permissions can confine it to its
//     own client's receipts; a receipt of an event the log does not hold
//     unsettled (another device's, or one already settled) changes nothing;
//   - a "reused" receipt hands the event to producer.Log.Reissue, which
//     writes it again as a new device and settles the original;
//   - a receipt of the current device for an event the log does not hold
//     goes to producer.Log.ObserveReceipt, which forks the log if the
//     server applied a sequence the log never wrote (a restored backup).
//
// Both are transactions of the log's own, so they cannot run inside the
// receipts transaction: that transaction records them in bucketRelog (in
// stream order) with the cursor, and relog hands them to the log after it
// commits, dropping each once done. Both are idempotent, so a crash in
// between repeats at most a call that changes nothing; relog runs again
// at every open and follower start.

// bucketRelog: 8-byte big-endian RECEIPTS sequence + event id -> receipt
// JSON: a receipt the log still has to be told of (Reissue for "reused",
// ObserveReceipt otherwise).
var bucketRelog = []byte("consumer.relog")

// receiptFilter is the one subject filter of a log's RECEIPTS follower:
// every device's subject of the client, or, for a legacy log (device ""),
// the client's own subject, which is where its receipts travel.
func receiptFilter(tenant, client, device string) string {
	if device == "" {
		return events.ReceiptSubject(tenant, client)
	}
	return events.ReceiptSubject(tenant, client) + ".>"
}

// metaForkedAt (consumer.meta) is the RECEIPTS sequence of the receipt
// that forked a legacy log to its first device (8 bytes, big-endian),
// until the follower reads the device's subject from there.
var metaForkedAt = []byte("receipts_forked_at")

// wantReceiptFilter is the filter the RECEIPTS follower should read with:
// the log's current device's (receiptFilter), except that a legacy log
// that forked keeps the client's subject while a legacy write it sent
// still awaits its receipt there. Its device's receipts wait in the
// stream meanwhile: rewindToFork reads them from the fork on.
func (r *Replica) wantReceiptFilter(ctx context.Context) (string, error) {
	want := r.receiptFilter()
	legacy := events.ReceiptSubject(r.tenant, r.client)
	if want == legacy {
		return want, nil
	}
	waiting := false
	err := r.log.View(ctx, func(tx *producer.Tx) error {
		if tx.Bucket(bucketMeta).Get(metaForkedAt) == nil {
			return nil // not a legacy log that forked, or switched already
		}
		// The legacy writes come first in the log: a legacy write awaits
		// its fate if and only if the first write awaiting one is legacy.
		_, e, ok, err := tx.Awaiting(1)
		waiting = ok && e.Event.Device == ""
		return err
	})
	if err != nil {
		return "", fmt.Errorf("choose receipts filter: %w", err)
	}
	if waiting {
		return legacy, nil
	}
	return want, nil
}

// rewindToFork moves the RECEIPTS cursor back to where a legacy log forked
// (metaForkedAt), if it did, when its follower first reads the device's
// subject: none of the device's receipts was read by the legacy filter,
// and every one of them came after the fork. It returns where to start.
// A log that did not fork (every log made with devices) writes nothing.
func (r *Replica) rewindToFork(ctx context.Context, next uint64) (uint64, error) {
	forked := false
	if err := r.log.View(ctx, func(tx *producer.Tx) error {
		forked = tx.Bucket(bucketMeta).Get(metaForkedAt) != nil
		return nil
	}); err != nil {
		return 0, fmt.Errorf("rewind receipts to the fork: %w", err)
	}
	if !forked {
		return next, nil
	}
	err := r.log.Update(ctx, func(tx *producer.Tx) error {
		meta := tx.Bucket(bucketMeta)
		v := meta.Get(metaForkedAt)
		if len(v) != 8 {
			return nil
		}
		at := binary.BigEndian.Uint64(v)
		c, err := getCursor(tx, events.StreamReceipts)
		if err != nil {
			return err
		}
		if at < c.Seq {
			c.Seq = at
			if err := putCursor(tx, events.StreamReceipts, c); err != nil {
				return err
			}
		}
		next = c.Seq + 1
		return meta.Delete(metaForkedAt)
	})
	if err != nil {
		return 0, fmt.Errorf("rewind receipts to the fork: %w", err)
	}
	r.startedAt(&r.receiptsP, next-1)
	return next, nil
}

// deferRelog records rc, read at RECEIPTS sequence seq, inside the
// receipts transaction tx, for relog to hand to the log after the commit.
func (r *Replica) deferRelog(tx *producer.Tx, seq uint64, rc *events.Receipt) error {
	k := make([]byte, 8, 8+len(rc.Event))
	binary.BigEndian.PutUint64(k, seq)
	k = append(k, rc.Event...)
	return putJSON(tx, r.seal, bucketRelog, k, rc)
}

// relog hands the receipts deferRelog recorded to the log, in stream
// order: Reissue for a "reused" one, ObserveReceipt for the others. Each
// is dropped once the log has it. It wakes Sync waiters and watchers for
// the documents written again.
func (r *Replica) relog(ctx context.Context) error {
	type item struct {
		key []byte
		rc  events.Receipt
	}
	var items []item
	err := r.log.View(ctx, func(tx *producer.Tx) error {
		return tx.Bucket(bucketRelog).ForEach(func(k, v []byte) error {
			it := item{key: append([]byte(nil), k...)}
			if err := getJSON(r.seal, bucketRelog, k, v, &it.rc); err != nil {
				return fmt.Errorf("read deferred receipt %x: %w", k, err)
			}
			items = append(items, it)
			return nil
		})
	})
	if err != nil || len(items) == 0 {
		return err
	}
	var touched [][]byte
	for _, it := range items {
		rc := &it.rc
		legacy := r.log.Device() == ""
		if rc.Outcome == events.OutcomeReused {
			ne, err := r.log.Reissue(ctx, rc)
			if err != nil {
				return err
			}
			if ne != nil {
				touched = append(touched, docKey(ne.Collection, ne.Doc))
			}
		} else if _, err := r.log.ObserveReceipt(ctx, rc); err != nil {
			return err
		}
		forked := legacy && r.log.Device() != ""
		err := r.log.Update(ctx, func(tx *producer.Tx) error {
			if forked {
				// The device's receipts are read from here (rewindToFork).
				if err := tx.Bucket(bucketMeta).Put(metaForkedAt, it.key[:8]); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketRelog).Delete(it.key)
		})
		if err != nil {
			return fmt.Errorf("drop deferred receipt of %s: %w", rc.Event, err)
		}
	}
	r.committed(touched)
	return nil
}
