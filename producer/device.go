package producer

import (
	"context"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/events"
)

// Device returns the log's current device id: the writer, with the tenant
// and client, that the projector deduplicates by. Empty in a log made
// before devices existed.
func (l *Log) Device() string {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	return l.device
}

// fork gives the log a new device inside tx, starting after the last local
// sequence, and returns the device and its base; the caller (holding
// appendMu) adopts them once tx commits. Events already written keep their
// device; every event appended from now on has the new one, numbered from 1.
func (l *Log) fork(tx *bbolt.Tx) (device string, base uint64, err error) {
	device, base = l.ids.New().String(), l.seq
	meta := tx.Bucket(bucketMeta)
	if err := meta.Put(metaDevice, []byte(device)); err != nil {
		return "", 0, err
	}
	if err := meta.Put(metaDeviceBase, seqKey(base)); err != nil {
		return "", 0, err
	}
	return device, base, nil
}

// ObserveReceipt checks a receipt addressed to this log's client for a
// sequence the current device never issued: the server applied sequence
// r.Seq of this device, but the log has not written that far. The log was
// restored from an older backup (or a copy of it ran ahead), so its next
// sequences are taken; it forks to a new device before it writes any of
// them. It reports whether it forked.
func (l *Log) ObserveReceipt(ctx context.Context, r *events.Receipt) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("observe receipt %s: %w", r.Event, err)
	}
	release, err := l.use()
	if err != nil {
		return false, fmt.Errorf("observe receipt %s: %w", r.Event, err)
	}
	defer release()
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if r.Device == "" || r.Device != l.device || r.Seq <= l.seq-l.deviceBase {
		return false, nil
	}
	var device string
	var base uint64
	err = l.update(func(tx *bbolt.Tx) (err error) {
		device, base, err = l.fork(tx)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("observe receipt %s: fork device %s: %w", r.Event, l.device, err)
	}
	l.logger.WarnContext(ctx, "the server applied a sequence this log never wrote (restored from a backup, or copied): writing as a new device",
		keyEvent, r.Event, keySeq, r.Seq, "new_device", device)
	l.device, l.deviceBase = device, base
	return true, nil
}

// Reissue handles a receipt with outcome events.OutcomeReused: the server
// holds another event under the sequence of event r.Event, so that event
// was not applied, and the device it was written by shares its sequences
// with another copy of this log. In one transaction Reissue forks the log
// to a new device (if the event's device is still the current one), writes
// the event again there (a new id and sequence, the same change, After
// mapped along the chain of events that re-wrote its predecessor, if any),
// keeping the original's HLC, and settles the original with the receipt,
// its reason naming the new event. Keeping the HLC keeps the write where
// its writer put it in time: a later write of the same document that the
// server applied meanwhile still wins lww and merge against it, rather
// than being reverted by a copy that arrived last. It returns the new
// event, or nil if the log holds no such unsettled event. The entry is
// never lost: a crash leaves either both changes or neither. (Whether the
// copy wins against writes applied since is the policy's, as for any
// stale write.)
func (l *Log) Reissue(ctx context.Context, r *events.Receipt) (*events.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reissue event %s: %w", r.Event, err)
	}
	release, err := l.use()
	if err != nil {
		return nil, fmt.Errorf("reissue event %s: %w", r.Event, err)
	}
	defer release()
	l.appendMu.Lock()
	defer l.appendMu.Unlock()

	var (
		ne     *events.Event
		device = l.device
		base   = l.deviceBase
		forked bool
	)
	err = l.update(func(tx *bbolt.Tx) error {
		k := tx.Bucket(bucketIDs).Get([]byte(r.Event))
		if k == nil {
			return nil
		}
		seq := keySeqOf(k)
		old, err := l.readEntry(tx, seq)
		if err != nil {
			return err
		}
		if old.State == StateSettled {
			return nil
		}
		if old.Event.Device == l.device {
			if device, base, err = l.fork(tx); err != nil {
				return fmt.Errorf("fork device %s: %w", l.device, err)
			}
			forked = true
		}
		w := Write{Collection: old.Event.Collection, Doc: old.Event.Doc, Op: old.Event.Op, Fields: old.Event.Fields,
			BaseVersion: old.Event.BaseVersion, Resolves: old.Event.Resolves, After: old.Event.After}
		// The predecessor may have been written again itself, perhaps more
		// than once: follow the chain to the event that stands for it now.
		for hops := 0; w.After != "" && hops < 64; hops++ {
			v := tx.Bucket(bucketReissued).Get([]byte(w.After))
			if v == nil {
				break
			}
			w.After = string(v)
		}
		// newEvent numbers from the log's device fields: point them at the
		// new device for this one event; they are adopted on commit.
		prevDevice, prevBase := l.device, l.deviceBase
		l.device, l.deviceBase = device, base
		e, b, err := l.newEventAt(w, l.seq+1, old.Event.HLC)
		l.device, l.deviceBase = prevDevice, prevBase
		if err != nil {
			return err
		}
		if err := l.storeNew(tx, l.seq+1, []*events.Event{e}, [][]byte{b}, nil, l.now()); err != nil {
			return err
		}
		if err := tx.Bucket(bucketReissued).Put([]byte(r.Event), []byte(e.ID)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketCopies).Put(seqKey(l.seq+1), seqKey(seq)); err != nil {
			return err
		}
		settled := *r
		settled.Reason = fmt.Sprintf("%s; written again as event %s", r.Reason, e.ID)
		if err := l.settle(tx, &settled); err != nil {
			return err
		}
		ne = e
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reissue event %s: %w", r.Event, err)
	}
	if ne == nil {
		return nil, nil
	}
	l.seq++
	l.device, l.deviceBase = device, base
	l.countMu.Lock()
	l.pendingN++
	l.unsettledN++ // the copy; the original's settle took one off
	l.countMu.Unlock()
	l.appended.notify()
	if forked {
		l.logger.WarnContext(ctx, "a sequence of this device was taken by another event (a restored or copied store): writing as a new device",
			keyEvent, r.Event, keySeq, r.Seq, "new_device", device)
	}
	l.logger.InfoContext(ctx, "event written again", keyEvent, r.Event, "new_event", ne.ID, keyDevice, ne.Device, keySeq, ne.Seq)
	return ne, nil
}

// Entry returns the entry of event id, or false if the log holds none.
func (l *Log) Entry(ctx context.Context, id string) (Entry, bool, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, false, fmt.Errorf("read entry %s: %w", id, err)
	}
	release, err := l.use()
	if err != nil {
		return Entry{}, false, fmt.Errorf("read entry %s: %w", id, err)
	}
	defer release()
	var e Entry
	var ok bool
	err = l.db.View(func(tx *bbolt.Tx) error {
		k := tx.Bucket(bucketIDs).Get([]byte(id))
		if k == nil {
			return nil
		}
		var err error
		e, err = l.readEntry(tx, keySeqOf(k))
		ok = err == nil
		return err
	})
	if err != nil {
		return Entry{}, false, fmt.Errorf("read entry %s: %w", id, err)
	}
	return e, ok, nil
}

// LastEntry returns the entry appended last, or false if the log is empty.
func (l *Log) LastEntry(ctx context.Context) (Entry, bool, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, false, fmt.Errorf("read last entry: %w", err)
	}
	release, err := l.use()
	if err != nil {
		return Entry{}, false, fmt.Errorf("read last entry: %w", err)
	}
	defer release()
	var e Entry
	var ok bool
	err = l.db.View(func(tx *bbolt.Tx) error {
		k, _ := tx.Bucket(bucketEvents).Cursor().Last()
		if k == nil {
			return nil
		}
		var err error
		e, err = l.readEntry(tx, keySeqOf(k))
		ok = err == nil
		return err
	})
	if err != nil {
		return Entry{}, false, fmt.Errorf("read last entry: %w", err)
	}
	return e, ok, nil
}

// Successor follows the chain of rewrites from event id (Reissue) to the
// event that stands for it now: id itself when it was never written again.
func (l *Log) Successor(ctx context.Context, id string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("successor of %s: %w", id, err)
	}
	release, err := l.use()
	if err != nil {
		return "", fmt.Errorf("successor of %s: %w", id, err)
	}
	defer release()
	err = l.db.View(func(tx *bbolt.Tx) error {
		for hops := 0; hops < 64; hops++ {
			v := tx.Bucket(bucketReissued).Get([]byte(id))
			if v == nil {
				return nil
			}
			id = string(v)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("successor: %w", err)
	}
	return id, nil
}
