package consumer

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

func (r *Replica) changesFollower(l *link) *follower[change] {
	js := l.js
	f := &follower[change]{
		js: js, stream: events.StreamChanges, filters: r.filters, batch: r.batch, grow: catchUpGrow * r.batch,
		log: r.logger.With(logStream, events.StreamChanges), kick: make(chan struct{}, 1),
	}
	// created is the stream's creation time as the session's start saw it;
	// start and apply run on the follower's goroutine, one after the other.
	var created int64
	f.start = func(ctx context.Context) (uint64, error) {
		next, cr, err := r.startChanges(ctx, js)
		if err == nil {
			created = cr
			l.readyOnce.Do(func() { close(l.ready) })
		}
		return next, err
	}
	f.prepare = newChangePreparer().prepare // the reader goroutine's
	f.gather = catchUpGather
	f.apply = func(ctx context.Context, ds []delivery[change]) error {
		// A consumer the ordered consumer remade by itself may have
		// resumed on a stream deleted and recreated in between: check
		// before its first message moves the cursor.
		if resumedIn(ds) {
			if reset, _, err := r.changesReset(ctx, js); err != nil || reset {
				return errRestart
			}
		}
		return r.applyChanges(ctx, ds, created)
	}
	return f
}

// startChanges checks the CHANGES stream against the stored cursor and
// returns where to start and the stream's creation time, which the first
// apply stores with the cursor. A stream created after the one the cursor
// was read from, or whose last sequence is below the cursor, was reset: the
// view is cleared and replayed from the start (pending writes stay). Only a
// reset writes here, so a (re)start costs no commit of its own.
func (r *Replica) startChanges(ctx context.Context, js jetstream.JetStream) (next uint64, created int64, err error) {
	s, err := stream(ctx, js, events.StreamChanges)
	if err != nil {
		return 0, 0, fmt.Errorf("read stream %s: %w", events.StreamChanges, err)
	}
	info := s.CachedInfo()
	created = createdNano(info.Created)
	var c cursor
	err = r.log.View(ctx, func(tx *producer.Tx) (err error) {
		c, err = getCursor(tx, events.StreamChanges)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("start following %s: %w", events.StreamChanges, err)
	}
	if !cursorReset(info, created, c) {
		r.retryQuarantinedChanges(ctx, s)
		return c.Seq + 1, created, nil
	}
	if next, err = r.resetChanges(ctx, info, created); err != nil {
		return 0, 0, err
	}
	return next, created, nil // a reset cleared the quarantine: the replay reads it all again
}

// startedAt records that a follower's stored cursor was moved to seq
// before it started reading, and wakes waiters (Sync waits until progress
// covers the stored cursor).
func (r *Replica) startedAt(p *Progress, seq uint64) {
	r.mu.Lock()
	p.Seq = seq
	r.mu.Unlock()
	r.changed.notify()
}

// resetChanges is the second half of a start that found CHANGES reset
// against the stored cursor (judged again inside the transaction): it
// clears the replica's scope for a replay from the start (pending writes
// stay), records the stream's creation time and returns the sequence to
// read from.
func (r *Replica) resetChanges(ctx context.Context, info *jetstream.StreamInfo, created int64) (next uint64, err error) {
	err = r.log.Update(ctx, func(tx *producer.Tx) error {
		c, err := getCursor(tx, events.StreamChanges)
		if err != nil {
			return err
		}
		if cursorReset(info, created, c) {
			rerr := fmt.Errorf("%w: stream %s was reset (stored sequence %d, stream last %d, created %s)",
				ErrResync, events.StreamChanges, c.Seq, info.State.LastSeq, info.Created.Format(time.RFC3339Nano))
			r.noteResync(rerr)
			if err := r.resetScope(tx); err != nil {
				return err
			}
			c = cursor{}
		}
		c.Created = created
		next = c.Seq + 1
		return putCursor(tx, events.StreamChanges, c)
	})
	if err != nil {
		return 0, fmt.Errorf("start following %s: %w", events.StreamChanges, err)
	}
	r.startedAt(&r.changesP, next-1)
	return next, nil
}

// applyChanges applies a batch of CHANGES messages in one transaction with
// the cursor (and created, the stream's creation time): each change
// replaces the synced state if its version is newer (so a redelivered
// change changes nothing), settles the pending event it was caused by and
// any receipt that waited for it, and feeds the clock. The transaction is
// the log's next group commit (Log.Batch), shared with the appends and
// other bookkeeping queued beside it; its fn may run more than once, so
// everything it computes restarts with it, and its spans and logs are made
// once the batch is committed.
func (r *Replica) applyChanges(ctx context.Context, ds []delivery[change], created int64) error {
	var touched [][]byte
	applied := 0
	var prog Progress
	var quarantined []error
	var traced []int // deliveries applied, for their spans
	var outside []int
	start := time.Now()
	err := r.log.Batch(ctx, func(tx *producer.Tx) error {
		touched, applied, quarantined, traced, outside = touched[:0], 0, quarantined[:0], traced[:0], outside[:0]
		c, err := getCursor(tx, events.StreamChanges)
		if err != nil {
			return err
		}
		v := openView(tx, r.seal)
		for i := range ds {
			d := &ds[i]
			if d.seq <= c.Seq {
				prog.Pending = d.pending
				continue
			}
			prog.Pending = d.pending
			c.Seq = d.seq
			if d.v.err != nil {
				// Set aside, never applied: every other document goes on,
				// and the start of a later follower reads it again.
				qerr, err := r.quarantine(tx, events.StreamChanges, d.subject, d.seq, d.v.err, d.v.retry)
				if err != nil {
					return err
				}
				quarantined = append(quarantined, qerr)
				continue
			}
			ch, key := &d.v.head, d.v.key
			if ch.Tenant != r.tenant || !r.inScope(ch.Collection) {
				outside = append(outside, i)
				continue
			}
			if ch.Version <= v.version(key) {
				continue
			}
			if err := r.putChange(v, key, ch, d.v.value); err != nil {
				return err
			}
			touched = append(touched, key)
			applied++
			traced = append(traced, i)
		}
		v.close()
		prog.Seq = c.Seq
		c.Created = created
		return putCursor(tx, events.StreamChanges, c)
	})
	for _, i := range traced {
		r.tel.changeApplied(ds[i].v.header, &ds[i].v.head, ds[i].seq, r.client, start)
	}
	r.tel.endApplies(err)
	for _, i := range outside {
		r.logger.Warn("change outside scope skipped", "subject", ds[i].subject, logSeq, ds[i].seq)
	}
	if err != nil {
		return fmt.Errorf("apply %d changes: %w", len(ds), err)
	}
	r.noteQuarantine(quarantined)
	r.mu.Lock()
	r.changesP = Progress{Seq: prog.Seq, Applied: r.changesP.Applied + uint64(len(ds)), Pending: prog.Pending}
	r.pulled += applied
	r.mu.Unlock()
	r.committed(touched)
	return nil
}

// putChange stores ch (newer than the view's version of key; value is its
// synced value) in v, and does what applying it implies: the conflict
// index, the clock, and settling what it settles.
func (r *Replica) putChange(v *view, key []byte, ch *changeHead, value []byte) error {
	if err := v.put(key, ch.Version, value); err != nil {
		return err
	}
	if err := v.indexConflicts(key, ch); err != nil {
		return err
	}
	// The clock always moves past the change, so a write built on it is
	// stamped after it even when this client's wall clock is behind;
	// ErrClockDrift only says that it is (the server bounds timestamps,
	// not the client).
	if _, err := r.log.Clock().Update(ch.HLC); err != nil {
		r.noteDrift(err)
	}
	return r.settleByChange(v, key, ch)
}

// settleByChange settles what ch settles: the replica's own event that
// caused it, and receipts that waited for a version ch reaches.
func (r *Replica) settleByChange(v *view, key []byte, ch *changeHead) error {
	tx := v.tx
	if ch.Client == r.client && ch.Event != "" {
		rc := &events.Receipt{
			Schema: events.SchemaVersion, Event: ch.Event, Tenant: ch.Tenant, Client: ch.Client, Seq: ch.Seq,
			Collection: ch.Collection, Doc: ch.Doc, Outcome: events.OutcomeApplied, Version: ch.Version,
		}
		if s := ch.Settled; s != nil && s.ID == ch.Event {
			rc.Conflict = s.ID
			switch s.Status {
			case events.ConflictOpen:
				rc.Outcome = events.OutcomeConflict
			case events.ConflictOverwritten:
				if s.Policy == events.PolicyMerge {
					rc.Outcome = events.OutcomeMerged
				}
			}
		}
		if err := tx.Settle(rc); err != nil {
			return err
		}
		// A change the event caused proves it applied: drop a Rejection
		// of unknown fate a duplicate receipt recorded (applyDuplicate).
		if rj := tx.Bucket(bucketRejections); rj.Get([]byte(ch.Event)) != nil {
			if err := rj.Delete([]byte(ch.Event)); err != nil {
				return fmt.Errorf("drop rejection of %s: %w", ch.Event, err)
			}
		}
	}
	// Receipts waiting for this document up to ch.Version.
	if !v.awaiting {
		return nil
	}
	prefix := append(append([]byte{}, key...), 0)
	c := tx.Bucket(bucketAwaiting).Cursor()
	var done [][]byte
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var rc events.Receipt
		if err := getJSON(r.seal, bucketAwaiting, k, v, &rc); err != nil {
			return fmt.Errorf("read awaiting receipt %q: %w", k, err)
		}
		if rc.Version > ch.Version {
			continue
		}
		if err := tx.Settle(&rc); err != nil {
			return err
		}
		done = append(done, k)
	}
	for _, k := range done {
		if err := tx.Bucket(bucketAwaiting).Delete(k); err != nil {
			return fmt.Errorf("delete awaiting receipt %q: %w", k, err)
		}
	}
	return nil
}

// resetScope starts a full resync inside tx: every receipt that waited for
// its change settles its write (the receipt said how the server decided it;
// the replay brings the authoritative state), then the view and the CHANGES
// cursor are cleared (clearScope). Clearing without settling would leave
// those writes pending forever: their receipt is consumed and gone.
func (r *Replica) resetScope(tx *producer.Tx) error {
	err := tx.Bucket(bucketAwaiting).ForEach(func(k, v []byte) error {
		var rc events.Receipt
		if err := getJSON(r.seal, bucketAwaiting, k, v, &rc); err != nil {
			return fmt.Errorf("read awaiting receipt %q: %w", k, err)
		}
		return tx.Settle(&rc)
	})
	if err != nil {
		return fmt.Errorf("settle awaiting receipts: %w", err)
	}
	return clearScope(tx)
}

// driftWarnEvery bounds how often a replica logs that its clock is behind
// the changes it receives: every change would say so.
const driftWarnEvery = time.Minute

// noteDrift logs err (wrapping events.ErrClockDrift: a received timestamp
// was far ahead of the local clock, which followed it anyway), at most once
// per driftWarnEvery.
func (r *Replica) noteDrift(err error) {
	now := time.Now().UnixNano()
	last := r.driftWarned.Load()
	if now-last < int64(driftWarnEvery) || !r.driftWarned.CompareAndSwap(last, now) {
		return
	}
	r.logger.Warn("local clock behind a received change; following it", logErr, err)
}
