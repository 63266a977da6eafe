package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// receipt is a RECEIPTS message decoded on the follower's reader goroutine.
type receipt struct {
	rc    *events.Receipt
	err   error
	retry bool // err: a newer schema, worth reading again after an upgrade
}

func (r *Replica) receiptsFollower(js jetstream.JetStream) *follower[receipt] {
	f := &follower[receipt]{
		js: js, stream: events.StreamReceipts, filters: []string{r.receiptFilter()}, batch: 256,
		log: r.logger.With(logStream, events.StreamReceipts), kick: make(chan struct{}, 1),
	}
	var created int64 // as in changesFollower
	f.start = func(ctx context.Context) (next uint64, err error) {
		if err := r.relog(ctx); err != nil {
			return 0, &applyError{err: fmt.Errorf("start following %s: %w", events.StreamReceipts, err)}
		}
		next, created, err = r.startReceipts(ctx, js)
		if err != nil {
			return next, err
		}
		if err := r.relog(ctx); err != nil {
			return 0, &applyError{err: fmt.Errorf("start following %s: %w", events.StreamReceipts, err)}
		}
		// The filter follows the log's device: a legacy log that forked
		// reads its new device's subject once its legacy writes are all
		// answered, from where it forked.
		filter, err := r.wantReceiptFilter(ctx)
		if err != nil {
			return 0, &applyError{err: fmt.Errorf("start following %s: %w", events.StreamReceipts, err)}
		}
		if filter != events.ReceiptSubject(r.tenant, r.client) {
			if next, err = r.rewindToFork(ctx, next); err != nil {
				return 0, &applyError{err: fmt.Errorf("start following %s: %w", events.StreamReceipts, err)}
			}
		}
		f.filters = []string{filter}
		r.mu.Lock()
		r.following = filter
		r.mu.Unlock()
		return next, nil
	}
	f.prepare = func(m jetstream.Msg, v *receipt, _ *arena) {
		v.rc, v.err = decodeReceipt(m.Data())
		v.retry = v.err != nil && newerSchema(m.Data())
	}
	f.apply = func(ctx context.Context, ds []delivery[receipt]) error {
		// Receipts may have been lost before these: the ordered consumer
		// resumed by itself, or it was behind the stream's retention.
		// Check before the cursor moves past them for good.
		r.mu.Lock()
		prev := r.receiptsP
		r.mu.Unlock()
		if receiptGapSuspect(prev, ds) || r.receiptSkipped(ctx, prev, ds) {
			if lost, err := r.receiptsLost(ctx, js); err != nil || lost {
				return errRestart
			}
		}
		if err := r.applyReceipts(ctx, ds, created); err != nil {
			return err
		}
		if afterReceiptsCommit != nil {
			afterReceiptsCommit()
		}
		if err := r.relog(ctx); err != nil {
			return err
		}
		if f.filters[0] != r.receiptFilter() {
			// A legacy log forked: follow its device's subject once its
			// legacy writes are answered.
			if want, err := r.wantReceiptFilter(ctx); err != nil || want != f.filters[0] {
				return errRestart
			}
		}
		return nil
	}
	return f
}

// afterReceiptsCommit, if set (by a crash test), runs after a receipts
// transaction commits and before its deferred receipts reach the log.
var afterReceiptsCommit func()

// receiptFilter is the RECEIPTS filter of the log's current device.
func (r *Replica) receiptFilter() string { return receiptFilter(r.tenant, r.client, r.log.Device()) }

// receiptSkew is how much later than RECEIPTS' first message an event may
// have been published (by the client's clock) and still have lost its
// receipt: it absorbs clock skew between client and server. Erring late
// costs only a republish answered "duplicate".
const receiptSkew = 10 * time.Minute

// startReceipts returns where to read receipts from. When receipts after the
// stored sequence may be gone (RECEIPTS' retention removed them, or the
// stream was reset), the log decides what was lost: the published events
// still waiting for a receipt that could have been among them are published
// again with their original ids. The projector answers "duplicate" for the
// ones it applied (their effect arrives through CHANGES anyway) and applies
// the ones it never saw, so every write still gets a receipt. A cursor
// behind the stream with nothing outstanding lost nothing: the cursor just
// moves, with no resync.
func (r *Replica) startReceipts(ctx context.Context, js jetstream.JetStream) (next uint64, created int64, err error) {
	s, err := stream(ctx, js, events.StreamReceipts)
	if err != nil {
		return 0, 0, fmt.Errorf("read stream %s: %w", events.StreamReceipts, err)
	}
	info := s.CachedInfo()
	created = createdNano(info.Created)
	check := func(c cursor) (cursor, bool, bool) { return receiptsCheck(info, created, c) }
	var c cursor
	err = r.log.View(ctx, func(tx *producer.Tx) (err error) {
		c, err = getCursor(tx, events.StreamReceipts)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("start following %s: %w", events.StreamReceipts, err)
	}
	// A stream restored from a backup of the cursor's (not a reset: the
	// cursor stays) lacks whatever the backup did not hold: every write
	// still awaiting a receipt is at risk, its event perhaps gone from
	// EVENTS too.
	restored := func(c cursor) bool { return c.Seq > 0 && c.Created != created }
	if _, reset, behind := check(c); !reset && !behind && !restored(c) {
		r.retryQuarantinedReceipts(ctx, s)
		if err := r.republishStored(ctx, js, s); err != nil {
			return 0, 0, err
		}
		if err := r.settleDueUnansweredNow(ctx); err != nil {
			return 0, 0, fmt.Errorf("start following %s: %w", events.StreamReceipts, err)
		}
		return c.Seq + 1, created, nil
	}
	var lost, suspects []*events.Event
	err = r.log.Update(ctx, func(tx *producer.Tx) error {
		lost, suspects = lost[:0], suspects[:0]
		old, err := getCursor(tx, events.StreamReceipts)
		if err != nil {
			return err
		}
		c, reset, behind := check(old)
		if reset {
			// Quarantined and unanswered sequences are the old stream's;
			// every unsettled write is republished below.
			if err := clearQuarantine(tx, events.StreamReceipts); err != nil {
				return err
			}
			if err := tx.Bucket(bucketMeta).Delete(metaUnanswered); err != nil {
				return fmt.Errorf("drop unanswered events: %w", err)
			}
		}
		if reset || behind || restored(old) {
			// A start over a gap judges every unsettled write: each may
			// have had a receipt among those gone. This reads the whole
			// backlog, once per gap, never per receipt.
			var es []producer.Entry
			if err := tx.EachUnsettled(func(e producer.Entry) (bool, error) { es = append(es, e); return true, nil }); err != nil {
				return err
			}
			lost, suspects = receiptsAtRisk(info, es, reset || restored(old))
		}
		if len(lost) > 0 {
			r.noteResync(fmt.Errorf("%w: receipts after sequence %d may be gone (stream %s first %d at %s, last %d): republishing %d unsettled events, watching %d pending ones",
				ErrResync, old.Seq, events.StreamReceipts, info.State.FirstSeq, info.State.FirstTime.Format(time.RFC3339), info.State.LastSeq, len(lost), len(suspects)))
		}
		c.Created = created
		next = c.Seq + 1
		// The cursor moves past the gap in this transaction: what to
		// republish is stored with it, so a republish that fails (the
		// link detached, the server gone, the process killed) is done at
		// the next start instead of being forgotten.
		if err := addRepublish(tx, lost); err != nil {
			return err
		}
		if err := addSuspects(tx, suspects); err != nil {
			return err
		}
		return putCursor(tx, events.StreamReceipts, c)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("start following %s: %w", events.StreamReceipts, err)
	}
	r.startedAt(&r.receiptsP, next-1)
	r.retryQuarantinedReceipts(ctx, s)
	if err := r.republishStored(ctx, js, s); err != nil {
		return 0, 0, err
	}
	if err := r.settleDueUnansweredNow(ctx); err != nil {
		return 0, 0, fmt.Errorf("start following %s: %w", events.StreamReceipts, err)
	}
	return next, created, nil
}

// republishStored republishes the events a start stored (addRepublish)
// that still await their receipt, defers those JetStream dropped
// (deferUnanswered), and only then forgets them; s is RECEIPTS.
func (r *Replica) republishStored(ctx context.Context, js jetstream.Publisher, s jetstream.Stream) error {
	var evs []*events.Event
	var ids []string
	err := r.log.View(ctx, func(tx *producer.Tx) (err error) {
		ids, err = getRepublish(tx)
		if err != nil || len(ids) == 0 {
			return err
		}
		for _, id := range ids {
			e, ok, err := tx.UnsettledEntry(id)
			if err != nil {
				return err
			}
			if ok && e.State == producer.StatePublished {
				evs = append(evs, e.Event)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read events to republish: %w", err)
	}
	if len(ids) == 0 {
		return nil // nothing stored: nothing to forget, no commit
	}
	if len(evs) > 0 {
		dropped, err := r.republish(ctx, js, evs)
		if len(dropped) > 0 {
			err = errors.Join(err, r.deferUnanswered(ctx, s, dropped))
		}
		if err != nil {
			return err
		}
	}
	// Only the ids read above: another start may have added one meanwhile,
	// for the next start.
	err = r.log.Update(ctx, func(tx *producer.Tx) error {
		now, err := getRepublish(tx)
		if err != nil || len(now) == 0 {
			return err
		}
		now = slices.DeleteFunc(now, func(id string) bool { return slices.Contains(ids, id) })
		if len(now) == 0 {
			return tx.Bucket(bucketMeta).Delete(metaRepublish)
		}
		b, _ := json.Marshal(now) // strings always encode
		return tx.Bucket(bucketMeta).Put(metaRepublish, b)
	})
	if err != nil {
		return fmt.Errorf("forget republished events: %w", err)
	}
	return nil
}

// republish publishes evs again, each with its id as Nats-Msg-Id, and
// returns those JetStream dropped as duplicates (their first publish is
// inside EVENTS' dedupe window): they reach no projector, so no receipt will
// answer them (see unanswered).
func (r *Replica) republish(ctx context.Context, js jetstream.Publisher, evs []*events.Event) (dropped []*events.Event, err error) {
	for _, e := range evs {
		b, err := events.EncodeEvent(e)
		if err != nil {
			return dropped, fmt.Errorf("republish event %s: %w", e.ID, err)
		}
		ack, err := js.Publish(ctx, e.Subject(), b, jetstream.WithMsgID(e.ID))
		if err != nil {
			return dropped, fmt.Errorf("republish event %s: %w", e.ID, err)
		}
		if ack.Duplicate {
			dropped = append(dropped, e)
		}
	}
	r.logger.Info("republished events whose receipts may be lost", "count", len(evs), "dropped", len(dropped))
	return dropped, nil
}

// applyReceipts settles the replica's events from their receipts, in one
// transaction with the cursor (and created, the stream's creation time). A rejected or invalid write is settled and
// recorded as a Rejection (the view reverts to the server's state). An
// applied, merged or conflict receipt settles the event only once the view
// holds the version it names; until then it waits in bucketAwaiting and the
// write stays on top of the view, so the app never sees it flicker.
func (r *Replica) applyReceipts(ctx context.Context, ds []delivery[receipt], created int64) error {
	var touched [][]byte
	rejected := 0
	var prog Progress
	var quarantined []error
	device := r.log.Device() // before the transaction: a group commit holds the log's append lock
	// The log's next group commit (Log.Batch): fn may run more than once,
	// so it restarts what it computes, and logs only once committed.
	err := r.log.Batch(ctx, func(tx *producer.Tx) error {
		touched, rejected, quarantined = touched[:0], 0, quarantined[:0]
		c, err := getCursor(tx, events.StreamReceipts)
		if err != nil {
			return err
		}
		b, err := r.newReceiptBatch(tx, device)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if d.seq <= c.Seq {
				prog.Pending = d.pending
				continue
			}
			prog.Pending = d.pending
			c.Seq = d.seq
			why := d.v.err
			if why == nil {
				why = r.checkReceipt(d.subject, d.v.rc)
			}
			if why != nil {
				// As for changes: set aside and read again at the next
				// start, so an upgrade can still tell the writer.
				qerr, err := r.quarantine(tx, events.StreamReceipts, d.subject, d.seq, why, d.v.retry)
				if err != nil {
					return err
				}
				quarantined = append(quarantined, qerr)
				continue
			}
			n, key, err := r.applyReceipt(tx, b, d.seq, d.v.rc)
			if err != nil {
				return err
			}
			rejected += n
			if key != nil {
				touched = append(touched, key)
			}
		}
		n, keys, err := r.settleDueUnanswered(tx, c.Seq)
		if err != nil {
			return err
		}
		rejected += n
		touched = append(touched, keys...)
		prog.Seq = c.Seq
		c.Created = created
		return putCursor(tx, events.StreamReceipts, c)
	})
	if err != nil {
		return fmt.Errorf("apply %d receipts: %w", len(ds), err)
	}
	r.noteQuarantine(quarantined)
	r.mu.Lock()
	r.receiptsP = Progress{Seq: prog.Seq, Applied: r.receiptsP.Applied + uint64(len(ds)), Pending: prog.Pending}
	r.rejected += rejected
	r.mu.Unlock()
	r.committed(touched)
	return nil
}

// receiptBatch is what applying receipts in one transaction needs to know
// of the log: its current device. Each receipt looks its event up by id
// (Log.UnsettledEntry), so a batch costs its receipts, not the backlog.
type receiptBatch struct {
	device string
}

// newReceiptBatch starts a batch inside tx; device is the log's current
// device, read before tx began.
func (r *Replica) newReceiptBatch(tx *producer.Tx, device string) (*receiptBatch, error) {
	return &receiptBatch{device: device}, nil
}

// applyReceipt handles one receipt, read at RECEIPTS sequence seq; it
// returns 1 if it recorded a rejection and the key of the document whose
// view changed (nil if none). A receipt of an event the log does not hold
// unsettled (another device's of the client, or one settled already)
// changes nothing, except that one of the current device the log does
// not hold at all is deferred to the log's ObserveReceipt (it may name a
// sequence the log never wrote),
// and a rejection makes a recorded unknown fate precise. A "reused"
// receipt is deferred to the log's Reissue (see devices.go).
func (r *Replica) applyReceipt(tx *producer.Tx, b *receiptBatch, seq uint64, rc *events.Receipt) (int, []byte, error) {
	ent, ok, err := r.unsettled(tx, rc.Event)
	if err != nil {
		return 0, nil, err
	}
	if !ok {
		// One the log holds (settled: its change came first) needs no
		// relog: ObserveReceipt would find its sequence written, and
		// Reissue nothing unsettled to write again.
		if rc.Device != "" && rc.Device == b.device && !tx.Holds(rc.Event) {
			if err := r.deferRelog(tx, seq, rc); err != nil {
				return 0, nil, err
			}
		}
		switch rc.Outcome {
		case events.OutcomeRejected, events.OutcomeInvalid, events.OutcomeApplied, events.OutcomeMerged, events.OutcomeConflict:
			return 0, nil, r.refineUnknownFate(tx, rc)
		}
		return 0, nil, nil
	}
	if rc.Outcome == events.OutcomeReused {
		// Still pending (and on top of the view) until Reissue writes it
		// again and settles it, in one transaction of the log's.
		return 0, nil, r.deferRelog(tx, seq, rc)
	}
	key := docKey(rc.Collection, rc.Doc)
	switch rc.Outcome {
	case events.OutcomeApplied, events.OutcomeMerged, events.OutcomeConflict:
		if rc.Collection != "" && rc.Version > seenVersion(tx, key) {
			ak := append(append(append([]byte{}, key...), 0), rc.Event...)
			return 0, nil, putJSON(tx, r.seal, bucketAwaiting, ak, rc)
		}
		return 0, key, tx.Settle(rc)
	case events.OutcomeRejected, events.OutcomeInvalid:
		rej := Rejection{Event: rc.Event, Collection: ent.Collection, Doc: ent.Doc, Op: ent.Op, Fields: ent.Fields, Outcome: rc.Outcome, Reason: rc.Reason}
		if err := putJSON(tx, r.seal, bucketRejections, []byte(rc.Event), rej); err != nil {
			return 0, nil, fmt.Errorf("record rejection of %s: %w", rc.Event, err)
		}
		tx.OnCommit(func() { r.logger.Info("write rejected", logEvent, rc.Event, logDoc, ent.Doc, logReason, rc.Reason) })
		return 1, docKey(ent.Collection, ent.Doc), tx.Settle(rc)
	case events.OutcomeDuplicate:
		return r.applyDuplicate(tx, rc)
	default:
		return 0, key, tx.Settle(rc)
	}
}

// applyDuplicate handles a "duplicate" receipt: the projector had already
// decided the event, and says nothing of how. When the replica knows the
// fate otherwise, the duplicate settles the event silently: it is settled
// already (by its change or its first receipt), its first receipt awaits
// its change (which will settle it), or the synced document was made by it
// or records it in a conflict. Otherwise, typically a write republished
// after its receipt expired whose change CHANGES no longer holds (a later
// write to the document replaced it), the write may have been rejected: it
// is settled and recorded as a Rejection with outcome duplicate and a
// reason saying its fate is unknown, so the writer is told (invariant 1)
// rather than its write vanishing from the overlay. A change caused by the
// event that arrives later proves it applied and removes that Rejection
// (settleByChange).
func (r *Replica) applyDuplicate(tx *producer.Tx, rc *events.Receipt) (int, []byte, error) {
	ent, ok, err := r.unsettled(tx, rc.Event)
	if err != nil || !ok {
		return 0, nil, err
	}
	key := docKey(ent.Collection, ent.Doc)
	prefix := append(append([]byte{}, key...), 0)
	if tx.Bucket(bucketAwaiting).Get(append(prefix, rc.Event...)) != nil {
		return 0, nil, nil // its first receipt said how; its change settles it
	}
	synced, err := syncedDoc(tx, r.seal, r.tenant, key)
	if err != nil {
		return 0, nil, err
	}
	known := synced.Event == rc.Event
	for _, c := range synced.Conflicts {
		known = known || c.ID == rc.Event || c.Resolution == rc.Event
	}
	if known {
		return 0, key, tx.Settle(rc)
	}
	reason := "fate unknown: the server had already decided this write, but its receipt expired and the replica has not seen a change it caused (applied and since overwritten, or rejected); check the document"
	if rc.Reason != "" {
		reason += " (server: " + rc.Reason + ")"
	}
	if rc.Stream == 0 && rc.Reason == reasonUnanswered {
		reason = reasonUnanswered // made up by settleDueUnanswered, not the server's
	}
	rej := Rejection{Event: rc.Event, Collection: ent.Collection, Doc: ent.Doc, Op: ent.Op, Fields: ent.Fields, Outcome: rc.Outcome, Reason: reason}
	if err := putJSON(tx, r.seal, bucketRejections, []byte(rc.Event), rej); err != nil {
		return 0, nil, fmt.Errorf("record unknown fate of %s: %w", rc.Event, err)
	}
	tx.OnCommit(func() { r.logger.Warn("write of unknown fate", logEvent, rc.Event, logDoc, ent.Doc, logReason, reason) })
	return 1, key, tx.Settle(rc)
}

// unsettled finds the unsettled event id in the log.
func (r *Replica) unsettled(tx *producer.Tx, id string) (*events.Event, bool, error) {
	e, ok, err := tx.UnsettledEntry(id)
	if err != nil || !ok {
		return nil, false, err
	}
	return e.Event, true, nil
}

// committed wakes Sync waiters and watchers after a view commit.
func (r *Replica) committed(keys [][]byte) {
	r.changed.notify()
	r.watchers.touch(keys)
}
