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

// DefaultGapCheckInterval is how often an attached replica with writes
// awaiting their receipt checks RECEIPTS for receipts it can no longer get.
const DefaultGapCheckInterval = 5 * time.Second

// Gaps while attached.
//
// nats.go's ordered consumer remakes its server consumer by itself after a
// reconnect, a server restart or missed heartbeats, and resumes after the
// last message it delivered: messages the stream lost in between (RECEIPTS'
// max age, a purge, a stream deleted and recreated) are stepped over
// without a word. A follower's start checks the stream against the stored
// cursor, but it only runs when the follower (re)starts. So the stream is
// also checked, read-only, where a gap can show:
//
//   - before a batch is applied that holds a message from a remade consumer
//     (delivery.resumed), or, for RECEIPTS, a jump in sequence while the
//     follower was behind the stream (pending > 0);
//   - every GapCheckInterval while writes await their receipt, since a lost
//     receipt may be followed by no message at all;
//   - at every Sync.
//
// A check that finds a reset stream, or receipts gone that a write
// awaiting its receipt (published, or pending) may have had, restarts the
// follower (errRestart, kick): its start recovers exactly as after a
// restart (resync, republish), and nothing is applied past the gap before
// it has.
//
// Pending writes at a gap.
//
// A write still pending when a start steps over a gap may have reached
// EVENTS already, its ack lost (a detach or a kill between the publish and
// the log storing its ack), and been answered by a receipt among those
// gone. The publisher then sends it again, JetStream drops that publish as
// a duplicate inside EVENTS' dedupe window and acknowledges it, and no
// receipt answers it: it waited forever and Sync never completed. So the
// start stores such writes as suspects with the cursor (receiptsAtRisk,
// metaSuspects), and every gap check (each Sync, and every
// GapCheckInterval) reads how the publisher's ack came back
// (resolveSuspects): a duplicate is deferred as unanswered (settled by a
// receipt still kept after the cursor, else as of unknown fate), a new
// publish is answered as usual.

// resumedIn reports whether a delivery of ds came from a consumer remade by
// the ordered consumer.
func resumedIn[T any](ds []delivery[T]) bool {
	for i := range ds {
		if ds[i].resumed {
			return true
		}
	}
	return false
}

// receiptGapSuspect reports whether receipts may have been lost before
// those in ds, given the follower's progress before them: a delivery from a
// remade consumer, or a sequence jump after a delivery that said the
// stream held more for us (pending > 0), which retention or a purge may
// have removed before the consumer got to it.
func receiptGapSuspect(prev Progress, ds []delivery[receipt]) bool {
	seq, pending := prev.Seq, prev.Pending
	for i := range ds {
		d := &ds[i]
		if d.resumed || (pending > 0 && d.seq > seq+1) {
			return true
		}
		seq, pending = d.seq, d.pending
	}
	return false
}

// receiptSkipped reports whether ds steps over a sequence (from prev.Seq,
// the stored cursor) while a write of the log's device published before the
// latest one ds answers still waits for its receipt: the receipt may be
// among the sequences stepped over, removed (a purge, RECEIPTS' age) before
// the consumer read it, with no reconnect and nothing pending to show it.
// The follower's consumer is filtered, so a jump alone is the normal case
// (other clients' receipts): only a write answered out of order makes the
// stream worth checking. Once the cursor has moved past such a gap, no start
// or periodic check can see it. Pending writes are left out: a burst keeps
// many in flight while later ones are answered, which would cost a stream
// read per batch; so a pending write whose publish reached EVENTS, ack
// lost, and whose receipt goes in this window is not covered.
func (r *Replica) receiptSkipped(ctx context.Context, prev Progress, ds []delivery[receipt]) bool {
	seq, jumped := prev.Seq, false
	var answered []string
	var latest uint64 // the highest log sequence of the device that ds answers
	device := r.log.Device()
	for i := range ds {
		d := &ds[i]
		jumped = jumped || d.seq > seq+1
		seq = d.seq
		if rc := d.v.rc; rc != nil && d.v.err == nil && rc.Device == device {
			answered = append(answered, rc.Event)
			latest = max(latest, rc.Seq)
		}
	}
	if !jumped || latest == 0 {
		return false
	}
	// The writes awaiting their fate, in log order, up to the device's
	// latest answered one: normally those still in flight behind it, not
	// the backlog after it.
	skipped := false
	_ = r.log.View(ctx, func(tx *producer.Tx) error {
		for from := uint64(1); !skipped; {
			seq, e, ok, err := tx.Awaiting(from)
			if err != nil || !ok || (e.Event.Device == device && e.Event.Seq >= latest) {
				return err
			}
			skipped = e.State == producer.StatePublished && e.Event.Device == device && !slices.Contains(answered, e.Event.ID)
			from = seq + 1
		}
		return nil
	})
	return skipped
}

// changesReset checks CHANGES against the stored cursor: it was reset
// (deleted and recreated, or its last sequence is below the cursor), as
// startChanges judges it. created is the stream's creation time.
func (r *Replica) changesReset(ctx context.Context, js jetstream.JetStream) (reset bool, created int64, err error) {
	if fd, err := r.activeFeed(ctx); err != nil || fd != nil {
		if err != nil {
			return false, 0, err
		}
		return r.rulesReset(ctx, fd)
	}
	s, err := stream(ctx, js, events.StreamChanges)
	if err != nil {
		return false, 0, fmt.Errorf("read stream %s: %w", events.StreamChanges, err)
	}
	info := s.CachedInfo()
	created = createdNano(info.Created)
	var c cursor
	err = r.log.View(ctx, func(tx *producer.Tx) (err error) {
		c, err = getCursor(tx, events.StreamChanges)
		return err
	})
	if err != nil {
		return false, 0, fmt.Errorf("check %s: %w", events.StreamChanges, err)
	}
	return cursorReset(info, created, c), created, nil
}

// receiptsCheck returns the RECEIPTS cursor to start from given the stream
// (info, created) and the stored cursor c, and why it moved: the stream was
// reset, or receipts after c are gone (behind).
func receiptsCheck(info *jetstream.StreamInfo, created int64, c cursor) (_ cursor, reset, behind bool) {
	reset = cursorReset(info, created, c)
	if reset {
		c.Seq = 0
	}
	behind = info.State.FirstSeq > 0 && c.Seq+1 < info.State.FirstSeq
	if behind {
		c.Seq = info.State.FirstSeq - 1
	}
	return c, reset, behind
}

// awaitsReceipt reports whether e is a write whose receipt may be on its
// way, or gone with a gap: published, or still pending. A pending write is
// not only one never sent: its publish may have reached EVENTS with the
// ack lost before the log recorded it (a detach, a kill, an ack timeout),
// and the projector answered it. When such a receipt is lost, the
// publisher's next publish of the write is dropped by JetStream as a
// duplicate inside EVENTS' dedupe window and acknowledged, so no receipt
// answers it either: unless the gap is judged with the write at risk, it
// waits forever. A failed write (refused for good) waits for nothing.
func awaitsReceipt(e producer.Entry) bool {
	return e.State == producer.StatePublished || e.State == producer.StatePending
}

// receiptMayBeLost reports whether e awaits a receipt (awaitsReceipt) that
// could be among those gone (receiptAtRisk).
func receiptMayBeLost(info *jetstream.StreamInfo, e producer.Entry, reset bool) bool {
	return awaitsReceipt(e) && receiptAtRisk(info, e, reset)
}

// receiptsAtRisk sorts the unsettled entries es of a RECEIPTS start that
// steps over a gap (reset, or receipts gone after its cursor: see
// receiptsCheck): lost are the published writes whose receipt could be
// among those gone, to republish (addRepublish); suspects are the pending
// ones, whose publish may have reached EVENTS with its ack lost. A suspect
// is not republished: the publisher sends it anyway, and whether EVENTS
// had it already is known only from that publish's ack (Entry.Duplicate),
// which resolveSuspects reads.
func receiptsAtRisk(info *jetstream.StreamInfo, es []producer.Entry, reset bool) (lost, suspects []*events.Event) {
	for _, e := range es {
		if !receiptAtRisk(info, e, reset) {
			continue
		}
		switch e.State {
		case producer.StatePublished:
			lost = append(lost, e.Event)
		case producer.StatePending:
			suspects = append(suspects, e.Event)
		}
	}
	return lost, suspects
}

// receiptAtRisk reports whether e's receipt could be among those gone: after
// a reset, any; otherwise if e was published before the oldest receipt still
// kept (plus receiptSkew), or the stream keeps none. A write never
// acknowledged (PublishedAt zero) is always at risk: when its publish
// reached EVENTS is unknown.
func receiptAtRisk(info *jetstream.StreamInfo, e producer.Entry, reset bool) bool {
	first := info.State.FirstTime
	return reset || first.IsZero() || e.PublishedAt.IsZero() || e.PublishedAt.Before(first.Add(receiptSkew))
}

// receiptsLost reports whether the RECEIPTS follower must restart to
// recover: the stream was reset, or receipts after the stored cursor are
// gone and a write awaiting its receipt (published or pending, see
// awaitsReceipt) may have had one of them.
// It only reads.
func (r *Replica) receiptsLost(ctx context.Context, js jetstream.JetStream) (bool, error) {
	s, err := stream(ctx, js, events.StreamReceipts)
	if err != nil {
		return false, fmt.Errorf("read stream %s: %w", events.StreamReceipts, err)
	}
	info := s.CachedInfo()
	lost := false
	err = r.log.View(ctx, func(tx *producer.Tx) error {
		c, err := getCursor(tx, events.StreamReceipts)
		if err != nil {
			return err
		}
		_, reset, behind := receiptsCheck(info, createdNano(info.Created), c)
		if reset {
			lost = true
			return nil
		}
		if !behind {
			return nil
		}
		// Receipts are gone after the cursor: a rare gap, not a
		// per-operation path. A pending write is always at risk (when its
		// publish reached EVENTS is unknown); otherwise every write
		// awaiting its receipt is judged, the backlog at most.
		if r.log.Counts().Pending > 0 {
			lost = true
			return nil
		}
		return tx.EachUnsettled(func(e producer.Entry) (bool, error) {
			lost = receiptMayBeLost(info, e, false)
			return !lost, nil
		})
	})
	if err != nil {
		return false, fmt.Errorf("check %s: %w", events.StreamReceipts, err)
	}
	return lost, nil
}

// awaitingReceipts reports whether a published write has no receipt yet,
// from the log's counts: O(1).
func (r *Replica) awaitingReceipts() bool {
	return r.log.Counts().Published() > 0
}

// checkGaps settles the suspects whose publish JetStream dropped
// (resolveSuspects), checks RECEIPTS (while a write awaits its receipt)
// and, with changes, CHANGES, and restarts the follower whose stream needs
// start's recovery. An error (the server unreachable) leaves the next check to
// find it: the followers' own restarts check again anyway.
func (r *Replica) checkGaps(ctx context.Context, l *link, changes bool) {
	if err := r.resolveSuspects(ctx, l.js); err != nil {
		r.logger.Debug("gap check", logStream, events.StreamReceipts, logErr, err)
	}
	if r.awaitingReceipts() {
		lost, err := r.receiptsLost(ctx, l.js)
		switch {
		case err != nil:
			r.logger.Debug("gap check", logStream, events.StreamReceipts, logErr, err)
		case lost:
			r.logger.Warn("receipts lost while attached; recovering", logStream, events.StreamReceipts)
			l.receipts.restart()
		}
	}
	// A legacy log that forked switches to its device's subject once its
	// legacy writes are answered, which a change can do as well as a
	// receipt.
	r.mu.Lock()
	following := r.following
	r.mu.Unlock()
	if following != "" && following != r.receiptFilter() {
		if want, err := r.wantReceiptFilter(ctx); err == nil && want != following {
			l.receipts.restart()
		}
	}
	if changes {
		reset, _, err := r.changesReset(ctx, l.js)
		switch {
		case err != nil:
			r.logger.Debug("gap check", logStream, events.StreamChanges, logErr, err)
		case reset:
			r.logger.Warn("stream reset while attached; recovering", logStream, events.StreamChanges)
			l.changes.restart()
		}
	}
}

// watchGaps runs checkGaps on RECEIPTS every interval until ctx ends; the
// link owns it.
func (r *Replica) watchGaps(ctx context.Context, l *link, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.checkGaps(ctx, l, false)
	}
}

// reasonUnanswered is the reason of the Rejection recorded for a write
// whose receipt was lost and whose republish (or the publisher's publish,
// for a write pending at the gap: resolveSuspects) JetStream dropped as a
// duplicate (see unanswered).
const reasonUnanswered = "fate unknown: its receipt was lost from RECEIPTS before the replica read it, and the server will not answer it again (published again inside EVENTS' dedupe window); check the document"

// unanswered is what the replica keeps (bucketMeta, metaUnanswered) of
// events whose republish JetStream dropped as a duplicate: no receipt will
// answer the republish, but the first publish's receipt may still be in
// RECEIPTS after the cursor. So they are settled (settleDueUnanswered) only
// once the RECEIPTS cursor reaches UpTo, the last receipt RECEIPTS held for
// the client when they were dropped, if no receipt settled them by then.
type unanswered struct {
	UpTo   uint64   `json:"up_to"`
	Events []string `json:"events"`
}

var metaUnanswered = []byte("unanswered")

// metaRepublish (bucketMeta) holds the ids of the events a RECEIPTS start
// found at risk, stored with the cursor that moved past their receipts,
// until republishStored has republished them.
var metaRepublish = []byte("republish")

// addRepublish adds evs to the stored events to republish, in tx.
func addRepublish(tx *producer.Tx, evs []*events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	ids, err := getRepublish(tx)
	if err != nil {
		return err
	}
	for _, e := range evs {
		if !slices.Contains(ids, e.ID) {
			ids = append(ids, e.ID)
		}
	}
	b, _ := json.Marshal(ids) // strings always encode
	if err := tx.Bucket(bucketMeta).Put(metaRepublish, b); err != nil {
		return fmt.Errorf("store events to republish: %w", err)
	}
	return nil
}

func getRepublish(tx *producer.Tx) ([]string, error) {
	var ids []string
	if b := tx.Bucket(bucketMeta).Get(metaRepublish); b != nil {
		if err := json.Unmarshal(b, &ids); err != nil {
			return nil, fmt.Errorf("read events to republish: %w", err)
		}
	}
	return ids, nil
}

// deferUnanswered records evs, whose republish JetStream dropped, to be
// settled by settleDueUnanswered; s is RECEIPTS.
func (r *Replica) deferUnanswered(ctx context.Context, s jetstream.Stream, evs []*events.Event) error {
	var upTo uint64
	r.mu.Lock()
	filter := r.following
	r.mu.Unlock()
	if filter == "" {
		filter = r.receiptFilter()
	}
	m, err := lastMsgFor(ctx, s, filter)
	switch {
	case err == nil:
		upTo = m.Sequence
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return fmt.Errorf("last receipt of %s: %w", r.client, err)
	}
	err = r.log.Update(ctx, func(tx *producer.Tx) error {
		u, err := getUnanswered(tx)
		if err != nil {
			return err
		}
		u.UpTo = max(u.UpTo, upTo)
		for _, e := range evs {
			if !slices.Contains(u.Events, e.ID) {
				u.Events = append(u.Events, e.ID)
			}
		}
		b, _ := json.Marshal(u) // a number and strings always encode
		if err := tx.Bucket(bucketMeta).Put(metaUnanswered, b); err != nil {
			return fmt.Errorf("store unanswered events: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("defer %d unanswered events: %w", len(evs), err)
	}
	return r.settleDueUnansweredNow(ctx)
}

func getUnanswered(tx *producer.Tx) (unanswered, error) {
	var u unanswered
	if b := tx.Bucket(bucketMeta).Get(metaUnanswered); b != nil {
		if err := json.Unmarshal(b, &u); err != nil {
			return u, fmt.Errorf("read unanswered events: %w", err)
		}
	}
	return u, nil
}

// settleDueUnanswered settles, once the RECEIPTS cursor (seq) has reached
// their UpTo, the unanswered events no receipt has settled: as for a
// "duplicate" receipt (applyDuplicate), silently when the view shows their
// fate (the change they caused, a conflict naming them), else as a
// Rejection of unknown fate, which a change they caused arriving later
// removes, and a rejected receipt arriving later makes precise. It returns
// the rejections recorded and the documents whose view changed.
func (r *Replica) settleDueUnanswered(tx *producer.Tx, seq uint64) (rejected int, touched [][]byte, err error) {
	u, err := getUnanswered(tx)
	if err != nil || len(u.Events) == 0 || u.UpTo > seq {
		return 0, nil, err
	}
	for _, id := range u.Events {
		rc := &events.Receipt{Schema: events.SchemaVersion, Event: id, Tenant: r.tenant, Client: r.client,
			Outcome: events.OutcomeDuplicate, Reason: reasonUnanswered}
		n, key, err := r.applyDuplicate(tx, rc)
		if err != nil {
			return 0, nil, err
		}
		rejected += n
		if key != nil {
			touched = append(touched, key)
		}
	}
	if err := tx.Bucket(bucketMeta).Delete(metaUnanswered); err != nil {
		return 0, nil, fmt.Errorf("drop unanswered events: %w", err)
	}
	return rejected, touched, nil
}

// settleDueUnansweredNow runs settleDueUnanswered at the stored RECEIPTS
// cursor, writing only when something is due.
func (r *Replica) settleDueUnansweredNow(ctx context.Context) error {
	due := false
	err := r.log.View(ctx, func(tx *producer.Tx) error {
		c, err := getCursor(tx, events.StreamReceipts)
		if err != nil {
			return err
		}
		u, err := getUnanswered(tx)
		due = len(u.Events) > 0 && u.UpTo <= c.Seq
		return err
	})
	if err != nil || !due {
		return err
	}
	var rejected int
	var touched [][]byte
	err = r.log.Update(ctx, func(tx *producer.Tx) error {
		c, err := getCursor(tx, events.StreamReceipts)
		if err != nil {
			return err
		}
		rejected, touched, err = r.settleDueUnanswered(tx, c.Seq)
		return err
	})
	if err != nil {
		return fmt.Errorf("settle unanswered events: %w", err)
	}
	r.mu.Lock()
	r.rejected += rejected
	r.mu.Unlock()
	r.committed(touched)
	return nil
}

// refineUnknownFate replaces the Rejection of unknown fate recorded for
// rc's event (settleDueUnanswered, applyDuplicate) with rc, a rejected or
// invalid receipt that arrived after all, or drops it for an applied,
// merged or conflict one (a write acked as a duplicate is settled as
// unanswered once the cursor reaches the client's last receipt, which its
// first publish's receipt may follow if the projector was behind).
func (r *Replica) refineUnknownFate(tx *producer.Tx, rc *events.Receipt) error {
	b := tx.Bucket(bucketRejections)
	raw := b.Get([]byte(rc.Event))
	if raw == nil {
		return nil
	}
	var rej Rejection
	if err := getJSON(r.seal, bucketRejections, []byte(rc.Event), raw, &rej); err != nil {
		return fmt.Errorf("read rejection %s: %w", rc.Event, err)
	}
	if rej.Outcome != events.OutcomeDuplicate {
		return nil
	}
	switch rc.Outcome {
	case events.OutcomeApplied, events.OutcomeMerged, events.OutcomeConflict:
		if err := b.Delete([]byte(rc.Event)); err != nil {
			return fmt.Errorf("drop rejection of %s: %w", rc.Event, err)
		}
		return nil
	}
	rej.Outcome, rej.Reason = rc.Outcome, rc.Reason
	return putJSON(tx, r.seal, bucketRejections, []byte(rc.Event), rej)
}

// metaSuspects (bucketMeta) holds the ids of the writes a RECEIPTS start
// found pending when it stepped over a gap (receiptsAtRisk), stored with
// the cursor that moved past it, until resolveSuspects has judged them.
var metaSuspects = []byte("suspects")

// addSuspects adds evs to the stored suspects, in tx.
func addSuspects(tx *producer.Tx, evs []*events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	ids, err := getSuspects(tx)
	if err != nil {
		return err
	}
	have := make(map[string]bool, len(ids)+len(evs)) // an offline log may hold many
	for _, id := range ids {
		have[id] = true
	}
	for _, e := range evs {
		if !have[e.ID] {
			have[e.ID] = true
			ids = append(ids, e.ID)
		}
	}
	return putSuspects(tx, ids)
}

func getSuspects(tx *producer.Tx) ([]string, error) {
	var ids []string
	if b := tx.Bucket(bucketMeta).Get(metaSuspects); b != nil {
		if err := json.Unmarshal(b, &ids); err != nil {
			return nil, fmt.Errorf("read writes pending at a receipt gap: %w", err)
		}
	}
	return ids, nil
}

func putSuspects(tx *producer.Tx, ids []string) error {
	if len(ids) == 0 {
		if err := tx.Bucket(bucketMeta).Delete(metaSuspects); err != nil {
			return fmt.Errorf("drop writes pending at a receipt gap: %w", err)
		}
		return nil
	}
	b, _ := json.Marshal(ids) // strings always encode
	if err := tx.Bucket(bucketMeta).Put(metaSuspects, b); err != nil {
		return fmt.Errorf("store writes pending at a receipt gap: %w", err)
	}
	return nil
}

// resolveSuspects judges the writes that were pending when a RECEIPTS start
// stepped over a gap (metaSuspects), once the publisher has had an ack for
// them. One JetStream acknowledged as a duplicate (Entry.Duplicate) had
// reached EVENTS before, so its receipt may be among those gone, and the
// publish that was acknowledged reached no projector: nothing will answer
// it, and a republish would be dropped the same way. It is deferred as an
// unanswered write (deferUnanswered): settled by its receipt if RECEIPTS
// still holds one for the cursor to reach, else as of unknown fate. One
// acknowledged as new reached EVENTS after the gap, so its receipt comes
// after the cursor: it is forgotten, as is one settled or failed meanwhile.
// A suspect still pending is kept. Finding duplicates is a resync
// (noteResync): receipts were lost; suspects alone are not. Not told apart: a duplicate ack of a
// publish whose first attempt came after the gap (its ack timed out, the
// publisher sent it again), whose receipt is still to come; if the
// projector has not answered it when the write is deferred, it is settled
// as of unknown fate first, and its receipt, when read, makes that precise
// (a rejection) or the change it caused removes it.
func (r *Replica) resolveSuspects(ctx context.Context, js jetstream.JetStream) error {
	var dup []*events.Event
	done := map[string]bool{}
	err := r.log.View(ctx, func(tx *producer.Tx) error {
		ids, err := getSuspects(tx)
		if err != nil || len(ids) == 0 {
			return err
		}
		// One lookup per suspect, not a read of the backlog.
		for _, id := range ids {
			e, ok, err := tx.UnsettledEntry(id)
			if err != nil {
				return err
			}
			switch {
			case ok && e.State == producer.StatePending:
			case ok && e.State == producer.StatePublished && e.Duplicate:
				dup = append(dup, e.Event)
				done[id] = true
			default:
				done[id] = true
			}
		}
		return nil
	})
	if err != nil || len(done) == 0 {
		return err
	}
	if len(dup) > 0 {
		s, err := stream(ctx, js, events.StreamReceipts)
		if err != nil {
			return fmt.Errorf("read stream %s: %w", events.StreamReceipts, err)
		}
		if err := r.deferUnanswered(ctx, s, dup); err != nil {
			return err
		}
		r.noteResync(fmt.Errorf("%w: %d writes pending when receipts were lost from %s were then acknowledged as duplicates: their receipts may be gone",
			ErrResync, len(dup), events.StreamReceipts))
	}
	err = r.log.Update(ctx, func(tx *producer.Tx) error {
		ids, err := getSuspects(tx)
		if err != nil {
			return err
		}
		return putSuspects(tx, slices.DeleteFunc(ids, func(id string) bool { return done[id] }))
	})
	if err != nil {
		return fmt.Errorf("resolve writes pending at a receipt gap: %w", err)
	}
	return nil
}
