package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// Status is a snapshot of a replica's state.
type Status struct {
	// Online: attached, with both followers running. A follower stopped by
	// an error (Err) makes it false until the next Attach.
	Online   bool
	Client   string
	Changes  Progress // the CHANGES follower
	Receipts Progress // the RECEIPTS follower
	// Pending counts local writes without a receipt (not yet published,
	// published, or refused for good).
	Pending int
	// Rejections not yet dismissed.
	Rejections int
	// Resyncs counts full resyncs since open; LastResync says why the last
	// one happened (it wraps ErrResync).
	Resyncs    int
	LastResync error
	// Quarantined counts the messages set aside since open: unreadable, or
	// not what their subject says (see doc.go, "Quarantine");
	// LastQuarantine says which and why (it wraps ErrQuarantined and
	// ErrUnreadable or ErrSubjectMismatch).
	Quarantined    int
	LastQuarantine error
	// Err is the last error that stopped a follower: the local store
	// failed. Local reads and writes go on; the next Attach clears it and
	// resumes from the stored cursors.
	Err error
}

// SyncReport tells what one Sync did.
type SyncReport struct {
	Pushed    int  // local writes published since attaching or the previous Sync
	Pulled    int  // changes applied to the view since attaching or the previous Sync
	Rejected  int  // local writes rejected since attaching or the previous Sync
	Conflicts int  // open conflicts in the view after this sync
	Resynced  bool // a full resync happened since attaching or the previous Sync (see Status.LastResync)
}

// Status returns a snapshot of the replica's state.
func (r *Replica) Status() Status {
	r.mu.Lock()
	s := Status{
		Online: r.link != nil && r.lastErr == nil, Client: r.client, Changes: r.changesP, Receipts: r.receiptsP,
		Resyncs: r.resyncs, LastResync: r.lastResync, Err: r.lastErr,
		Quarantined: r.quarantined, LastQuarantine: r.lastQuarantine,
	}
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return s
	}
	_ = r.log.View(context.Background(), func(tx *producer.Tx) error {
		s.Pending = tx.UnsettledCount()
		s.Rejections = tx.Bucket(bucketRejections).KeyN()
		return nil
	})
	return s
}

func (r *Replica) counters() (pulled, rejected, resyncs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pulled, r.rejected, r.resyncs
}

// Sync brings the replica up to date with the server, bounded by ctx: it
// publishes every pending write (the publisher's Flush), waits for the fate
// of every write published (receipts, and the changes they name), then
// waits until the view has applied every change in scope that CHANGES held
// when the receipts were in. It returns ErrOffline when not attached. The
// report counts what happened during the call.
func (r *Replica) Sync(ctx context.Context) (SyncReport, error) {
	r.mu.Lock()
	l := r.link
	r.mu.Unlock()
	if l == nil {
		return SyncReport{}, fmt.Errorf("sync: %w", ErrOffline)
	}
	select {
	case <-l.ready:
	case <-ctx.Done():
		return SyncReport{}, fmt.Errorf("sync: wait for the changes follower: %w", ctx.Err())
	}
	// Every write unsettled now has a local sequence at most the log's
	// last one; the wait walks the index of writes awaiting their fate
	// (see waitSet), so it costs a seek per view commit and per write
	// waited for, not the backlog.
	ws := newWaitSet(r.log.LastSeq())
	pushed := 0
	for {
		if err := l.pub.Flush(ctx); err != nil {
			return SyncReport{}, fmt.Errorf("sync: push: %w", err)
		}
		// The publisher runs from Attach on, so it may have sent writes
		// before this Sync began: count what it published that no Sync
		// reported yet.
		pushed += l.pushed.since(l.pub.Status().Published)
		// Receipts lost while attached would keep this wait from ending:
		// check now (the link's watchGaps checks again while it lasts).
		r.checkGaps(ctx, l, false)
		if err := r.waitFor(ctx, ws.done); err != nil {
			return SyncReport{}, fmt.Errorf("sync: wait for receipts: %w", err)
		}
		var more int
		if err := r.log.View(ctx, func(tx *producer.Tx) (err error) {
			more, err = ws.addCopies(tx)
			return err
		}); err != nil {
			return SyncReport{}, fmt.Errorf("sync: %w", err)
		}
		if more == 0 {
			break
		}
	}
	// A CHANGES reset while attached is noticed here at the latest: wait
	// for the follower's restart to reset the view, or "caught up" would be
	// judged by the old stream's cursor. The same read of the stream gives
	// the target, when CHANGES is read directly.
	st, err := r.syncPoint(ctx, l.js)
	if err != nil {
		return SyncReport{}, fmt.Errorf("sync: %w", err)
	}
	reset, created, target := st.reset, st.created, st.target
	if reset {
		r.logger.Warn("stream reset while attached; recovering", logStream, events.StreamChanges)
		l.changes.restart()
		if err := r.waitFor(ctx, func(tx *producer.Tx) (bool, error) {
			c, err := getCursor(tx, events.StreamChanges)
			return c.Created == created, err
		}); err != nil {
			return SyncReport{}, fmt.Errorf("sync: wait for the resync of %s: %w", events.StreamChanges, err)
		}
	}
	if !st.targeted {
		if target, err = r.lastInScope(ctx, l.js); err != nil {
			return SyncReport{}, fmt.Errorf("sync: pull: %w", err)
		}
	}
	if err := r.waitFor(ctx, func(tx *producer.Tx) (bool, error) {
		c, err := getCursor(tx, events.StreamChanges)
		if err != nil || c.Seq < target {
			return false, err
		}
		// A follower updates its progress and the counters this report
		// reads just after its commit: wait until they cover what tx sees.
		rc, err := getCursor(tx, events.StreamReceipts)
		r.mu.Lock()
		counted := r.changesP.Seq >= c.Seq && r.receiptsP.Seq >= rc.Seq
		r.mu.Unlock()
		return counted, err
	}); err != nil {
		return SyncReport{}, fmt.Errorf("sync: pull to %d: %w", target, err)
	}
	// A Flush can see an entry leave pending a moment before the
	// publisher's count covers it (an ack mark's or a settle's commit is
	// visible before its OnCommit runs): read the count again, now that
	// every receipt waited for has come.
	pushed += l.pushed.since(l.pub.Status().Published)
	pulled1, rejected1, resyncs1 := r.counters()
	conflicts, err := r.Conflicts(ctx)
	if err != nil {
		return SyncReport{}, fmt.Errorf("sync: %w", err)
	}
	return SyncReport{
		Pushed: pushed, Pulled: l.pulled.since(uint64(pulled1)), Rejected: l.rejected.since(uint64(rejected1)),
		Conflicts: len(conflicts), Resynced: l.resyncs.since(uint64(resyncs1)) > 0,
	}, nil
}

// waitSet is what a Sync waits for: every write of the log up to local
// sequence horizon (those unsettled when it began) and the copies a
// "reused" receipt made the log write of any of them (Log.Reissue: a new
// event at a later sequence, the original settled in the same
// transaction), until none awaits its fate (pending or published; a failed
// write waits for nothing). A write, once settled or failed, stays so, so
// from only moves forward.
type waitSet struct {
	horizon uint64
	from    uint64          // no write in [1, from) up to horizon awaits
	copies  map[uint64]bool // copies of waited-for writes, after horizon
	open    []uint64        // copies not yet seen settled or failed, in order
	seen    uint64          // producer.copies read up to this sequence
}

func newWaitSet(horizon uint64) *waitSet {
	return &waitSet{horizon: horizon, from: 1, copies: map[uint64]bool{}, seen: horizon}
}

// done reports whether nothing ws waits for awaits its fate in tx: one
// seek for the range, one per open copy.
func (ws *waitSet) done(tx *producer.Tx) (bool, error) {
	seq, _, ok, err := tx.Awaiting(ws.from)
	if err != nil {
		return false, err
	}
	if ok && seq <= ws.horizon {
		ws.from = seq
		return false, nil
	}
	ws.from = ws.horizon + 1
	for len(ws.open) > 0 {
		seq, _, ok, err := tx.Awaiting(ws.open[0])
		if err != nil {
			return false, err
		}
		if ok && seq == ws.open[0] {
			return false, nil
		}
		ws.open = ws.open[1:]
	}
	return true, nil
}

// addCopies adds the copies written since the last call of writes ws
// waits for, and returns how many. It reads only copies made after
// horizon.
func (ws *waitSet) addCopies(tx *producer.Tx) (int, error) {
	cs, err := tx.CopiesAfter(ws.seen)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range cs {
		ws.seen = c.Seq
		if c.Of <= ws.horizon || ws.copies[c.Of] {
			ws.copies[c.Seq] = true
			ws.open = append(ws.open, c.Seq)
			n++
		}
	}
	return n, nil
}

// syncState is what a Sync reads of CHANGES after the receipts are in:
// whether the stream was reset against the stored cursor (as
// startChanges judges it), its creation time, and, when targeted, the
// sequence of the last change in scope (lastInScope).
type syncState struct {
	reset    bool
	created  int64
	target   uint64
	targeted bool
}

// syncPoint reads CHANGES for Sync. Read directly, one stream info serves
// both the reset check and the target's read: the target is the last
// change in scope of the stream that info shows, whether or not it was
// reset. Through the change feed the target is left to lastInScope, which
// reads the feed from the stored cursor: after a resync, that cursor is
// another.
func (r *Replica) syncPoint(ctx context.Context, js jetstream.JetStream) (syncState, error) {
	if fd, err := r.activeFeed(ctx); err != nil || fd != nil {
		if err != nil {
			return syncState{}, err
		}
		reset, created, err := r.rulesReset(ctx, fd)
		return syncState{reset: reset, created: created}, err
	}
	s, err := stream(ctx, js, events.StreamChanges)
	if err != nil {
		return syncState{}, fmt.Errorf("read stream %s: %w", events.StreamChanges, err)
	}
	info := s.CachedInfo()
	st := syncState{created: createdNano(info.Created), targeted: true}
	var c cursor
	if err := r.log.View(ctx, func(tx *producer.Tx) (err error) {
		c, err = getCursor(tx, events.StreamChanges)
		return err
	}); err != nil {
		return syncState{}, fmt.Errorf("check %s: %w", events.StreamChanges, err)
	}
	st.reset = cursorReset(info, st.created, c)
	if st.target, err = r.lastIn(ctx, s); err != nil {
		return syncState{}, fmt.Errorf("pull: %w", err)
	}
	return st, nil
}

// lastInScope returns the sequence of the last message in CHANGES under the
// replica's filters (0 if none).
func (r *Replica) lastInScope(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	if fd, err := r.activeFeed(ctx); err != nil || fd != nil {
		if err != nil {
			return 0, err
		}
		return r.rulesTarget(ctx, fd)
	}
	s, err := stream(ctx, js, events.StreamChanges)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", events.StreamChanges, err)
	}
	return r.lastIn(ctx, s)
}

// lastIn returns the sequence of the last message of s, CHANGES, under
// the replica's filters (0 if none).
func (r *Replica) lastIn(ctx context.Context, s jetstream.Stream) (uint64, error) {
	var last uint64
	for _, f := range r.filters {
		m, err := lastMsgFor(ctx, s, f)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("last change under %s: %w", f, err)
		}
		last = max(last, m.Sequence)
	}
	return last, nil
}

// waitFor re-checks cond after every view commit until it holds, ctx ends,
// or the replica goes offline.
func (r *Replica) waitFor(ctx context.Context, cond func(tx *producer.Tx) (bool, error)) error {
	for {
		wake := r.changed.wait()
		var ok bool
		if err := r.log.View(ctx, func(tx *producer.Tx) (err error) {
			ok, err = cond(tx)
			return err
		}); err != nil {
			return err
		}
		if ok {
			return nil
		}
		r.mu.Lock()
		offline, ferr := r.link == nil, r.lastErr
		r.mu.Unlock()
		if ferr != nil {
			return ferr
		}
		if offline {
			return ErrOffline
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// signal is a broadcast: wait returns a channel closed by the next notify.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}
