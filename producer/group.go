package producer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/events"
)

// Group commit. Every append (Append, AppendBatch, AppendWith) and every
// Batch is a request queued on the log. The first caller that finds no
// commit running leads: it takes every request queued by then and commits
// them in one bbolt transaction (one fsync), in queue order, then hands the
// lead to the first request queued meanwhile, if any, and returns. So N
// concurrent callers share fsyncs instead of queueing for one each, no
// goroutine runs behind the callers' backs, and no caller leads for longer
// than one commit beyond its own. A request is all-or-nothing: when one of a
// group fails (an invalid write, a Prepare error, a Batch fn's error), the
// transaction is rolled back and the group is committed again without it, so
// its failure is its own (and the others' Prepare and Batch fns run again);
// a write invalid whatever its commit stamps is refused before it joins a
// group (precheck). A failure of the commit itself (the disk full, an I/O
// error) is every member's: each call of that group returns it, nothing of
// the group is stored, and nothing committed before is touched.
//
// Bookkeeping (Batch: the publisher's ack marks, a replica's receipt and
// change applies) rides in the same queue as appends, so what is queued when
// a commit starts shares its transaction and its fsync with the appends
// queued with it, instead of taking bbolt's writer lock for a commit of its
// own. Queue order is commit order within the transaction: a caller that
// waits for one request before it makes the next (a follower's batches, the
// publisher's acks of entries it read after their append committed) sees them
// committed in that order.
//
// Callers that just got their result come back with their next write a
// moment after the next leader has started, so a leader that took the queue
// at once would commit about half of the writers each time. It first waits
// for as many appends as were in flight when the last commit ended (its
// group plus those queued behind it), for at most a quarter of the last
// commit's duration (capped at maxGroupWait): a lone writer never waits, and
// a writer that stopped costs at most that much latency to the others. Only
// appends are waited for: an append never waits for bookkeeping to arrive.
//
// bbolt's own DB.Batch does the same for fns alone, but it starts a batch on
// a timer (MaxBatchDelay, 10 ms by default) or at MaxBatchSize, which would
// add that delay to every ack, receipt and change apply of a quiet replica,
// and its batches would not share a transaction with the appends of this
// queue; extending this queue gets both the sharing and no timer.

// Prepare completes a write inside the transaction that stores it, just
// before the log stamps it: it may set BaseVersion and After (and any other
// field) from what tx holds, which includes every write stored before it in
// the same transaction, of its own call or of others grouped with it (so
// tx.UnsettledFor sees them). It must only read tx, must not block,
// and may run more than once for one write (a group retried without a
// failed member); an error fails its own call, which stores nothing.
type Prepare func(tx *Tx, w *Write) error

// maxGroupWait bounds how long a leader waits for its group to fill.
const maxGroupWait = 2 * time.Millisecond

// errMemberFailed rolls a group's transaction back: one request failed.
var errMemberFailed = errors.New("a request of the group failed")

// appendReq is one caller's request in the group-commit queue: an append
// (ws) or, with fn set, a Batch.
type appendReq struct {
	ws   []Write
	prep Prepare
	tc   map[string]string
	fn   func(tx *bbolt.Tx) error
	// Set by the committer, read by the caller after done is closed.
	evs []*events.Event
	err error
	// Under groupMu.
	taken  bool // in a commit: its fate is decided by that commit
	leader bool // handed the lead
	lead   chan struct{}
	done   chan struct{}
}

// AppendWith is AppendBatch with prep called on each write inside the
// transaction that stores it (see Prepare): either every write of ws is
// stored, each its own event, or none is. Concurrent calls are committed
// together, one transaction and one fsync for all of them (see doc.go,
// "Performance"); when AppendWith returns nil its events are durable. If
// ctx ends while the call waits for its turn, it returns ctx's error and
// stores nothing; once its commit has begun it waits for that commit.
func (l *Log) AppendWith(ctx context.Context, ws []Write, prep Prepare) (evs []*events.Event, err error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("append: %w", err)
	}
	if len(ws) == 0 {
		return nil, nil
	}
	ctx, span := l.tracer.Start(ctx, spanAppend, trace.WithAttributes(events.AttrCount.Int(len(ws))))
	defer func() {
		switch {
		case err != nil:
			span.RecordError(err)
			span.SetStatus(codes.Error, "append failed")
		case len(evs) == 1:
			span.SetAttributes(eventAttrs(evs[0])...)
		}
		span.End()
	}()
	release, err := l.use()
	if err != nil {
		return nil, fmt.Errorf("append: %w", err)
	}
	defer release()
	if err := l.precheck(ws); err != nil {
		return nil, err
	}

	// The context stored with the entries is the append span's (or, with
	// no tracer, whatever ctx carried), so the publish is its child.
	tc := map[string]string{}
	l.prop.Inject(ctx, propagation.MapCarrier(tc))
	if len(tc) == 0 {
		tc = nil
	}
	req := &appendReq{ws: ws, prep: prep, tc: tc, lead: make(chan struct{}), done: make(chan struct{})}
	if err := l.submit(ctx, req); err != nil {
		return nil, fmt.Errorf("append: %w", err)
	}
	if req.err != nil {
		return nil, req.err
	}
	last := req.evs[len(req.evs)-1]
	l.metrics.appended.Add(ctx, int64(len(req.evs)))
	l.logger.DebugContext(ctx, "appended", keyEvent, last.ID, "count", len(req.evs))
	return req.evs, nil
}

// Batch runs fn in a read-write transaction on the local store, like
// Update, but shared: fn runs in the transaction of the log's next group
// commit, beside the appends and other Batches queued with it, so they all
// cost one commit and one fsync (see doc.go, "Performance"). When Batch
// returns nil, what fn wrote is durable. fn's error is its own: Batch
// returns it, nothing fn wrote is stored, and the others of its group are
// committed without it. So fn may run more than once (its group retried
// without another member that failed): it must only read and write tx,
// reset whatever it computes at its start, and leave effects outside the
// store to tx.OnCommit or to its caller after Batch returns. fn must not
// block, nor call the Log's methods (it runs while the log's append lock is
// held; Tx's methods are what it has). Requests are committed in the order
// they were queued, so a caller that waits for one Batch before making the
// next sees them committed in that order. If ctx ends while the call waits
// for its turn, Batch returns ctx's error and fn does not run; once its
// commit has begun it waits for that commit. Close waits for queued
// Batches to be committed; after Close, Batch fails with ErrClosed.
func (l *Log) Batch(ctx context.Context, fn func(tx *Tx) error) error {
	return l.batch(ctx, func(tx *bbolt.Tx) error { return fn(&Tx{l: l, tx: tx}) })
}

// batch queues fn as a group-commit request and waits for its commit.
func (l *Log) batch(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	release, err := l.use()
	if err != nil {
		return err
	}
	defer release()
	req := &appendReq{fn: fn, lead: make(chan struct{}), done: make(chan struct{})}
	if err := l.submit(ctx, req); err != nil {
		return err
	}
	return req.err
}

// submit queues req and returns once it is committed (or failed): as the
// leader of a group, or as a member another caller committed. It returns
// ctx's error only if req was withdrawn before any commit took it.
func (l *Log) submit(ctx context.Context, req *appendReq) error {
	l.groupMu.Lock()
	l.queue = append(l.queue, req)
	l.enqueued.notify()
	if !l.committing {
		l.committing, req.leader = true, true
		close(req.lead)
	}
	l.groupMu.Unlock()
	select {
	case <-req.lead:
	case <-req.done:
		return nil
	case <-ctx.Done():
		l.groupMu.Lock()
		if !req.taken {
			// Not in a commit yet: withdraw, and pass on the lead if it
			// was handed to this request.
			l.queue = slices.DeleteFunc(l.queue, func(q *appendReq) bool { return q == req })
			if req.leader {
				l.passLead()
			}
			l.groupMu.Unlock()
			return ctx.Err()
		}
		l.groupMu.Unlock()
		<-req.done // its commit has begun: see it through
		return nil
	}
	l.lead()
	<-req.done
	return nil
}

// lead commits one group: every request queued now (the leader's own
// among them), then hands the lead on.
func (l *Log) lead() {
	l.fillGroup()
	l.appendMu.Lock()
	l.groupMu.Lock()
	group := l.queue
	l.queue = nil
	for _, q := range group {
		q.taken = true
	}
	l.groupMu.Unlock()
	start := time.Now()
	l.commitGroup(group)
	took := time.Since(start)
	l.appendMu.Unlock()
	for _, q := range group {
		close(q.done)
	}
	l.groupMu.Lock()
	l.lastCommit, l.expect = took, appendsIn(group)+appendsIn(l.queue)
	l.passLead()
	l.groupMu.Unlock()
}

// passLead, under groupMu, hands the lead to the first queued request, or
// ends the run of commits if none is queued.
func (l *Log) passLead() {
	if len(l.queue) == 0 {
		l.committing = false
		return
	}
	next := l.queue[0]
	next.leader = true
	close(next.lead)
}

// appendsIn counts the appends (not Batches) of reqs.
func appendsIn(reqs []*appendReq) int {
	n := 0
	for _, q := range reqs {
		if q.fn == nil {
			n++
		}
	}
	return n
}

// fillGroup waits, as the leader, until the queue holds as many appends as
// were in flight when the last commit ended, or a quarter of that commit's
// duration (at most maxGroupWait) has passed.
func (l *Log) fillGroup() {
	l.groupMu.Lock()
	want, wait := l.expect, min(l.lastCommit/4, maxGroupWait)
	l.groupMu.Unlock()
	if want <= 1 || wait <= 0 {
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		l.groupMu.Lock()
		n, more := appendsIn(l.queue), l.enqueued.wait()
		l.groupMu.Unlock()
		if n >= want {
			return
		}
		select {
		case <-more:
		case <-timer.C:
			return
		case <-l.done:
			return
		}
	}
}

// commitGroup stores group in one transaction under appendMu, retrying
// without each request that fails, and sets every request's evs or err.
func (l *Log) commitGroup(group []*appendReq) {
	live := group
	for len(live) > 0 {
		var failed *appendReq
		seq := l.seq
		now := l.now()
		err := l.update(func(tx *bbolt.Tx) error {
			failed, seq = nil, l.seq
			for _, q := range live {
				if q.fn != nil {
					if err := q.fn(tx); err != nil {
						q.err, failed = err, q
						return errMemberFailed
					}
					continue
				}
				evs, err := l.storeReq(tx, q, seq, now)
				if err != nil {
					q.err, failed = err, q
					return errMemberFailed
				}
				q.evs = evs
				seq += uint64(len(evs))
			}
			return nil
		})
		if failed != nil {
			failed.evs = nil
			live = slices.DeleteFunc(slices.Clone(live), func(q *appendReq) bool { return q == failed })
			continue
		}
		if err != nil {
			for _, q := range live {
				q.evs = nil
				if q.fn != nil {
					q.err = fmt.Errorf("commit: %w", l.mapClosed(err))
				} else {
					q.err = fmt.Errorf("append events %d..%d: %w", l.seq+1, seq, err)
				}
			}
			return
		}
		n := int(seq - l.seq)
		l.seq = seq
		l.requests.Add(int64(len(live)))
		l.countMu.Lock()
		l.pendingN += n
		l.unsettledN += n
		l.countMu.Unlock()
		if n > 0 {
			l.appended.notify()
		}
		return
	}
}

// precheckID stands in for the id a write gets in its commit.
const precheckID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"

// precheck refuses, before it joins a group, a write whose event would be
// invalid whatever the commit stamps on it (names, fields, op, limits), so
// an invalid call fails alone, at once, and does not make the group it
// would have joined run again without it (every Batch in it included).
// What Prepare sets, and the device (which a fork changes under appendMu,
// not held here), are checked in the commit, as before.
func (l *Log) precheck(ws []Write) error {
	for i, w := range ws {
		e := events.Event{Schema: events.SchemaVersion, ID: precheckID, Tenant: l.tenant,
			Collection: w.Collection, Doc: w.Doc, Op: w.Op, Fields: w.Fields, BaseVersion: w.BaseVersion,
			HLC: events.HLC{Wall: 1}, Client: l.client, Seq: 1, Resolves: w.Resolves, After: w.After}
		if e.After == precheckID { // not itself: the commit checks it against its real id
			e.After = ""
		}
		if err := e.Validate(l.limits); err != nil {
			return fmt.Errorf("append write %d (%s/%s): %w", i, w.Collection, w.Doc, err)
		}
	}
	return nil
}

// storeReq stores q's writes inside tx at local sequences after seq: each
// prepared, stamped and stored before the next is prepared.
func (l *Log) storeReq(tx *bbolt.Tx, q *appendReq, seq uint64, now time.Time) ([]*events.Event, error) {
	evs := make([]*events.Event, 0, len(q.ws))
	if q.prep == nil {
		encoded := make([][]byte, 0, len(q.ws))
		for i, w := range q.ws {
			e, b, err := l.newEvent(w, seq+uint64(i)+1)
			if err != nil {
				return nil, fmt.Errorf("append write %d (%s/%s): %w", i, w.Collection, w.Doc, err)
			}
			evs, encoded = append(evs, e), append(encoded, b)
		}
		if err := l.storeNew(tx, seq+1, evs, encoded, q.tc, now); err != nil {
			return nil, fmt.Errorf("append events %d..%d: %w", seq+1, seq+uint64(len(evs)), err)
		}
		return evs, nil
	}
	for i, w := range q.ws {
		if err := q.prep(&Tx{l: l, tx: tx}, &w); err != nil {
			return nil, fmt.Errorf("append write %d (%s/%s): prepare: %w", i, w.Collection, w.Doc, err)
		}
		local := seq + uint64(i) + 1
		e, b, err := l.newEvent(w, local)
		if err != nil {
			return nil, fmt.Errorf("append write %d (%s/%s): %w", i, w.Collection, w.Doc, err)
		}
		if err := l.storeNew(tx, local, []*events.Event{e}, [][]byte{b}, q.tc, now); err != nil {
			return nil, fmt.Errorf("append event %d: %w", local, err)
		}
		evs = append(evs, e)
	}
	return evs, nil
}
