package consumer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebbsync/ebb/producer"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/feed"
	"github.com/ebbsync/ebb/events"
)

// DefaultRulesFeed is the request subject of the server's filtered change
// feed (deploy/feed's responder), which a replica reads CHANGES through
// under sync rules.
const DefaultRulesFeed = feed.RequestSubject

// rulesFeedWait is how long one request of the feed long-polls once the
// replica has caught up.
const rulesFeedWait = 30 * time.Second

// rulesFeed is a link's way to read CHANGES through the server's change
// feed: the requests it sends, and whether the link reads through it
// (active: set from the start by ReplicaConfig.RulesFeed, or once the
// server refused a direct read with "sync rules"; catchUp: for one session,
// to catch up on a backlog in compact pages).
type rulesFeed struct {
	nc          *nats.Conn
	subject     string
	client      string // the replica's client: its own changes come with their cause
	tenant      string // named in the body, for a server without auth (feed.ResponderConfig.Open)
	collections []string
	active      atomic.Bool
	// catchUp is set by start when the session it begins reads the feed
	// to catch up (startCatchUp), and cleared by the next start, which
	// then follows CHANGES directly. Apply reads it for the batches of
	// that session; all three run on the follower's goroutine.
	catchUp atomic.Bool
	// catchUpTo is the stream's last sequence when that session began: it
	// catches up to there, not after a tail that keeps growing.
	catchUpTo atomic.Uint64
	// unservedUntil (Unix nanoseconds): a catch-up probe found no feed
	// (no responder, a server or accounts that predate it, a responder
	// too busy to answer); the link does not ask again before then.
	unservedUntil atomic.Int64
	// decided is closed once the link knows how it reads CHANGES: its
	// follower started directly, or switched to the feed. Until then a
	// direct read elsewhere (Sync's target, its reset check) could be the
	// one the server refuses (a direct get is denied outright and only
	// times out), so those wait for it.
	decided    chan struct{}
	decideOnce sync.Once
}

func (fd *rulesFeed) decide() { fd.decideOnce.Do(func() { close(fd.decided) }) }

// page asks the feed for the changes after `after` (limit 0: the server's
// page size), waiting up to wait for one. It asks for a compact page
// (feed.CompactFormat); a server that answers a full one is read the same.
func (fd *rulesFeed) page(ctx context.Context, after uint64, limit int, wait time.Duration) (feed.Page, error) {
	body, err := json.Marshal(feed.Request{After: after, Limit: limit, WaitMS: wait.Milliseconds(), Collections: fd.collections,
		Compact: true, Client: fd.client, Tenant: fd.tenant})
	if err != nil {
		return feed.Page{}, fmt.Errorf("change feed request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, wait+requestTimeout)
	defer cancel()
	m, err := fd.nc.RequestWithContext(ctx, fd.subject, body)
	if err != nil {
		return feed.Page{}, fmt.Errorf("change feed %s after %d: %w", fd.subject, after, err)
	}
	p, err := feed.DecodeReply(m.Data)
	if err != nil {
		return feed.Page{}, fmt.Errorf("change feed %s after %d: %w", fd.subject, after, err)
	}
	return p, nil
}

// refusedForRules reports whether err is the server refusing a direct
// read of CHANGES because sync rules filter this user's reads (a 403
// whose description says "sync rules", the text deploy/auth promises).
func refusedForRules(err error) bool {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) {
		var je jetstream.JetStreamError
		if !errors.As(err, &je) || je.APIError() == nil {
			return false
		}
		ae = je.APIError()
	}
	return ae.Code == 403 && strings.Contains(ae.Description, "sync rules")
}

// changesLink returns the link's CHANGES follower: the direct one of
// changesFollower, made to read through the filtered change feed when
// ReplicaConfig.RulesFeed says so, or from the moment the server refuses a
// direct read with "sync rules". Over the feed it keeps the direct
// follower's contracts: it resumes from the stored cursor, resyncs when
// the feed's stream_created or stream_last_seq shows CHANGES was reset,
// applies each change once through applyChanges (settling writes as
// direct changes do), and replaces the local copy of a document that left
// the user's view by a tombstone at the notice's version (applyRules).
func (r *Replica) changesLink(l *link) *follower[change] {
	f := r.changesFollower(l)
	fd := &rulesFeed{nc: l.nc, subject: r.cfg.RulesFeed, client: r.client, tenant: r.cfg.Tenant, collections: r.cfg.Collections, decided: make(chan struct{})}
	if fd.subject != "" {
		fd.active.Store(true)
		fd.decide()
	} else {
		fd.subject = DefaultRulesFeed
	}
	l.feed = fd
	directJS, directStart, directApply, directPrepare := f.js, f.start, f.apply, f.prepare
	var created int64 // of the feed session's start; start and apply run on the follower's goroutine
	toFeed := func(err error) bool {
		if fd.active.Load() || !refusedForRules(err) {
			return false
		}
		r.logger.Info("server filters CHANGES by sync rules; reading through its change feed", "subject", fd.subject, logErr, err)
		fd.active.Store(true)
		fd.decide()
		return true
	}
	f.start = func(ctx context.Context) (uint64, error) {
		caughtUp := fd.catchUp.Swap(false)
		if !fd.active.Load() {
			if !caughtUp {
				if next, cr, to, ok := r.startCatchUp(ctx, fd); ok {
					created = cr
					fd.catchUpTo.Store(to)
					fd.catchUp.Store(true)
					// An unfiltered page: this server lets the link read
					// CHANGES directly (Sync's target, its reset checks).
					fd.decide()
					l.readyOnce.Do(func() { close(l.ready) })
					return next, nil
				}
			}
			next, err := directStart(ctx)
			if !toFeed(err) {
				return next, err
			}
		}
		next, cr, err := r.startRules(ctx, fd)
		if err == nil {
			created = cr
			l.readyOnce.Do(func() { close(l.ready) })
		}
		return next, err
	}
	f.js = rulesReader{StreamReader: directJS, fd: fd, created: &created, toFeed: toFeed}
	f.prepare = func(m jetstream.Msg, c *change, a *arena) {
		if fm, ok := m.(*feedMsg); ok && fm.advance {
			*c = change{} // no key, no error: applyRules moves the cursor only
			return
		}
		directPrepare(m, c, a)
		if fm, ok := m.(*feedMsg); ok && fm.left && c.err == nil {
			c.left = true // applyRules forgets the document, whatever its version
		}
	}
	f.apply = func(ctx context.Context, ds []delivery[change]) error {
		if !fd.active.Load() && !fd.catchUp.Load() {
			return directApply(ctx, ds)
		}
		return r.applyRules(ctx, ds, created)
	}
	return f
}

// catchUpProbeLimit is the page size of a catch-up probe: a page of one
// change that says more are waiting is a backlog of two or more.
const catchUpProbeLimit = 1

// feedRetryAfter is how long a link that found no feed answering (a
// probe with no responder, refused, or timed out) reads CHANGES directly
// before it probes again at its next session start.
var feedRetryAfter = time.Minute // a var for tests

// startCatchUp is start for a session that catches up through the change
// feed's compact pages, a fraction of the bytes of one message per change
// (feed.CompactFormat), when the server serves it to this replica
// unfiltered and at least two changes wait after the stored cursor; to is
// the stream's last sequence then, where the session ends. It
// checks the feed's stream state against the cursor as startRules does
// (resetting the view for a recreated CHANGES). ok false: follow CHANGES
// directly, as without a feed. A probe the feed does not answer (no
// responder; a server or accounts that predate it, answered by a
// permissions violation and a timeout) keeps the link from probing again
// for feedRetryAfter.
// A page that does not say it is unfiltered (sync rules filtered it, or
// its responder predates the flag) is never taken for the stream: the
// direct start decides, and switches to the feed for good if the server
// refuses it.
func (r *Replica) startCatchUp(ctx context.Context, fd *rulesFeed) (next uint64, created int64, to uint64, ok bool) {
	if time.Now().UnixNano() < fd.unservedUntil.Load() {
		return 0, 0, 0, false
	}
	var c cursor
	if err := r.log.View(ctx, func(tx *producer.Tx) (err error) {
		c, err = getCursor(tx, events.StreamChanges)
		return err
	}); err != nil {
		return 0, 0, 0, false
	}
	p, err := fd.page(ctx, c.Seq, catchUpProbeLimit, 0)
	var re *feed.ReplyError
	switch {
	case ctx.Err() != nil:
		return 0, 0, 0, false
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &re) && re.Status < 500:
		fd.unservedUntil.Store(time.Now().Add(feedRetryAfter).UnixNano())
		r.logger.Info("no compact change feed answered; catching up through CHANGES directly", "subject", fd.subject, "retry_after", feedRetryAfter, logErr, err)
		return 0, 0, 0, false
	case err != nil:
		r.logger.Debug("change feed probe failed; catching up through CHANGES directly", "subject", fd.subject, logErr, err)
		return 0, 0, 0, false
	case !p.Unfiltered || !p.More:
		return 0, 0, 0, false
	}
	info := feedInfo(p)
	created = createdNano(info.Created)
	if !cursorReset(info, created, c) {
		return c.Seq + 1, created, p.StreamLastSeq, true
	}
	if next, err = r.resetChanges(ctx, info, created); err != nil {
		return 0, 0, 0, false
	}
	return next, created, p.StreamLastSeq, true
}

// activeFeed returns the attached link's change feed if it reads CHANGES
// through one, else nil. It first waits, within ctx, until the link knows
// which: its first consumer on CHANGES was made, or refused for sync rules.
func (r *Replica) activeFeed(ctx context.Context) (*rulesFeed, error) {
	r.mu.Lock()
	var fd *rulesFeed
	if r.link != nil {
		fd = r.link.feed
	}
	r.mu.Unlock()
	if fd == nil {
		return nil, nil
	}
	select {
	case <-fd.decided:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the link to start reading %s: %w", events.StreamChanges, ctx.Err())
	}
	if !fd.active.Load() {
		return nil, nil
	}
	return fd, nil
}

// feedInfo is the stream state a feed page reports, as stream info: its
// restore metadata too (restoredFrom reads it).
func feedInfo(p feed.Page) *jetstream.StreamInfo {
	return &jetstream.StreamInfo{Created: p.StreamCreated, Config: jetstream.StreamConfig{Metadata: p.Restored},
		State: jetstream.StreamState{FirstSeq: p.FirstSeq, LastSeq: p.StreamLastSeq}}
}

// startRules is startChanges over the feed: it checks the stream state the
// feed reports against the stored cursor and, if CHANGES was reset, clears
// the view for a replay from the start (pending writes stay).
func (r *Replica) startRules(ctx context.Context, fd *rulesFeed) (next uint64, created int64, err error) {
	var c cursor
	if err := r.log.View(ctx, func(tx *producer.Tx) (err error) {
		c, err = getCursor(tx, events.StreamChanges)
		return err
	}); err != nil {
		return 0, 0, fmt.Errorf("start following %s: %w", events.StreamChanges, err)
	}
	p, err := fd.page(ctx, c.Seq, 1, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("start following %s: %w", events.StreamChanges, err)
	}
	info := feedInfo(p)
	created = createdNano(info.Created)
	if !cursorReset(info, created, c) {
		return c.Seq + 1, created, nil
	}
	if next, err = r.resetChanges(ctx, info, created); err != nil {
		return 0, 0, err
	}
	return next, created, nil
}

// rulesReset is changesReset over the feed.
func (r *Replica) rulesReset(ctx context.Context, fd *rulesFeed) (reset bool, created int64, err error) {
	var c cursor
	if err := r.log.View(ctx, func(tx *producer.Tx) (err error) {
		c, err = getCursor(tx, events.StreamChanges)
		return err
	}); err != nil {
		return false, 0, fmt.Errorf("check %s: %w", events.StreamChanges, err)
	}
	p, err := fd.page(ctx, c.Seq, 1, 0)
	if err != nil {
		return false, 0, fmt.Errorf("check %s: %w", events.StreamChanges, err)
	}
	info := feedInfo(p)
	created = createdNano(info.Created)
	return cursorReset(info, created, c), created, nil
}

// rulesTarget is lastInScope over the feed: the sequence of the last
// change (or Left notice) the feed holds for the replica now, or the
// stored cursor if there is none after it; the follower's cursor reaches
// it once everything the user may read is applied. It reads the feed from
// the stored cursor to its end, so it costs what is still to be pulled.
func (r *Replica) rulesTarget(ctx context.Context, fd *rulesFeed) (uint64, error) {
	var c cursor
	if err := r.log.View(ctx, func(tx *producer.Tx) (err error) {
		c, err = getCursor(tx, events.StreamChanges)
		return err
	}); err != nil {
		return 0, fmt.Errorf("last change in scope: %w", err)
	}
	// The target is the last change the feed sends this user (a change or
	// a Left notice), not the last sequence it read: the follower's
	// long-poll waits on past changes the user may not read, so the cursor
	// may stay short of those until a readable one comes.
	after, target := c.Seq, c.Seq
	for {
		p, err := fd.page(ctx, after, 0, 0)
		if err != nil {
			return 0, fmt.Errorf("last change in scope: %w", err)
		}
		if p.LastSeq < after {
			return 0, fmt.Errorf("last change in scope: the feed went back from %d to %d", after, p.LastSeq)
		}
		if n := len(p.Changes); n > 0 {
			target = max(target, p.Changes[n-1].Seq)
		}
		after = p.LastSeq
		if !p.More {
			return target, nil
		}
	}
}

// applyRules applies a batch read through the feed: runs of changes
// through applyChanges, Left notices through forgetLeft, and the
// cursor-only deliveries that carry the page's last_seq past changes the
// user may not read.
func (r *Replica) applyRules(ctx context.Context, ds []delivery[change], created int64) error {
	for len(ds) > 0 {
		if ds[0].v.left {
			if err := r.forgetLeft(ctx, &ds[0], created); err != nil {
				return err
			}
			ds = ds[1:]
			continue
		}
		i := 0
		for i < len(ds) && !(ds[i].v.key == nil && ds[i].v.err == nil) && !ds[i].v.left {
			i++
		}
		if i > 0 {
			if err := r.applyChanges(ctx, ds[:i], created); err != nil {
				return err
			}
			ds = ds[i:]
			continue
		}
		if err := r.advanceChanges(ctx, ds[0].seq, ds[0].pending, created); err != nil {
			return err
		}
		ds = ds[1:]
	}
	return nil
}

// forgetLeft applies a Left notice: the synced copy of its document is
// removed, whatever its version, with the cursor in one transaction. Not a
// tombstone at the notice's version: the document may come back at that
// same version (the projector publishes a fresh copy of a follower when
// its parent's audience changes), and a copy no newer than the view's
// state is taken for one already applied. Receipts that waited for a
// change of the document are settled (that change may never be sent);
// pending writes stay, each until its receipt.
func (r *Replica) forgetLeft(ctx context.Context, d *delivery[change], created int64) error {
	var prog uint64
	err := r.log.Update(ctx, func(tx *producer.Tx) error {
		c, err := getCursor(tx, events.StreamChanges)
		if err != nil {
			return err
		}
		if d.seq <= c.Seq {
			return nil
		}
		key := d.v.key
		if err := tx.Bucket(bucketDocs).Delete(key); err != nil {
			return fmt.Errorf("forget %q: %w", key, err)
		}
		if err := tx.Bucket(bucketConflicts).Delete(key); err != nil {
			return fmt.Errorf("forget conflicts of %q: %w", key, err)
		}
		// A receipt of this version or an older one, read later (the
		// receipts follower runs on its own), waits for no change: the
		// feed sends none of it to this user.
		var lv [8]byte
		binary.BigEndian.PutUint64(lv[:], d.v.head.Version)
		if err := tx.Bucket(bucketLeft).Put(key, lv[:]); err != nil {
			return fmt.Errorf("note that %q left the view: %w", key, err)
		}
		prefix := append(append([]byte{}, key...), 0)
		aw := tx.Bucket(bucketAwaiting)
		var done [][]byte
		cur := aw.Cursor()
		for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
			var rc events.Receipt
			if err := getJSON(r.seal, bucketAwaiting, k, v, &rc); err != nil {
				return fmt.Errorf("read awaiting receipt %q: %w", k, err)
			}
			if err := tx.Settle(&rc); err != nil {
				return err
			}
			done = append(done, append([]byte{}, k...))
		}
		for _, k := range done {
			if err := aw.Delete(k); err != nil {
				return fmt.Errorf("drop awaiting receipt %q: %w", k, err)
			}
		}
		c.Seq, c.Created = d.seq, created
		prog = c.Seq
		return putCursor(tx, events.StreamChanges, c)
	})
	if err != nil {
		return fmt.Errorf("apply the notice that %q left the view: %w", d.v.key, err)
	}
	if prog != 0 {
		r.mu.Lock()
		r.changesP = Progress{Seq: prog, Applied: r.changesP.Applied + 1, Pending: d.pending}
		r.mu.Unlock()
	}
	r.committed([][]byte{d.v.key})
	return nil
}

// advanceChanges moves the CHANGES cursor to seq (if it is behind) without
// applying anything.
func (r *Replica) advanceChanges(ctx context.Context, seq, pending uint64, created int64) error {
	var prog uint64
	err := r.log.Update(ctx, func(tx *producer.Tx) error {
		c, err := getCursor(tx, events.StreamChanges)
		if err != nil {
			return err
		}
		c.Seq = max(c.Seq, seq)
		c.Created = created
		prog = c.Seq
		return putCursor(tx, events.StreamChanges, c)
	})
	if err != nil {
		return fmt.Errorf("advance %s cursor to %d: %w", events.StreamChanges, seq, err)
	}
	r.mu.Lock()
	r.changesP = Progress{Seq: prog, Applied: r.changesP.Applied, Pending: pending}
	r.mu.Unlock()
	r.committed(nil)
	return nil
}

// rulesReader is the follower's StreamReader while it reads through the
// feed: its ordered consumers are feedConsumers. A direct consumer the
// server refuses with "sync rules" switches the link to the feed and
// restarts the session (so start checks the feed's stream state).
type rulesReader struct {
	StreamReader
	fd      *rulesFeed
	created *int64
	toFeed  func(error) bool
}

func (rr rulesReader) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	catchUp := rr.fd.catchUp.Load()
	if !rr.fd.active.Load() && !catchUp {
		c, err := rr.StreamReader.OrderedConsumer(ctx, stream, cfg)
		if rr.toFeed(err) {
			return nil, fmt.Errorf("%w: %w", errRestart, err)
		}
		if err == nil {
			rr.fd.decide() // the server let this link read CHANGES directly
		}
		return c, err
	}
	next := uint64(1)
	if cfg.DeliverPolicy == jetstream.DeliverByStartSequencePolicy {
		next = cfg.OptStartSeq
	}
	return &feedConsumer{fd: rr.fd, after: next - 1, created: *rr.created, catchUp: catchUp && !rr.fd.active.Load(), until: rr.fd.catchUpTo.Load()}, nil
}

// feedConsumer is an ordered consumer of CHANGES over the feed; only
// Messages is used (by follower.session).
type feedConsumer struct {
	jetstream.Consumer
	fd      *rulesFeed
	after   uint64
	created int64
	catchUp bool   // end the session once caught up (feedIter.catchUp)
	until   uint64 // with catchUp: the sequence caught up to
}

func (c *feedConsumer) Messages(...jetstream.PullMessagesOpt) (jetstream.MessagesContext, error) {
	ctx, cancel := context.WithCancel(context.Background())
	return &feedIter{fd: c.fd, after: c.after, created: c.created, catchUp: c.catchUp, until: c.until, ctx: ctx, cancel: cancel}, nil
}

// feedIter hands out the feed's pages one message at a time: each change
// (a Left notice as a tombstone of its document at its version), then, if
// the page's last_seq is beyond its last change, a cursor-only message at
// last_seq. Once a page says nothing more is waiting, the next request
// long-polls; in a catch-up session (catchUp) it ends the session with
// errRestart instead, once everything read is handed out, so start follows
// CHANGES directly from the cursor: so it does once it has read to until,
// before a sequence the page lists as skipped, and after a page that says
// more are waiting but does not move on. A page whose stream state shows
// another CHANGES than the one the session started on (created, or a last
// sequence below the cursor) ends the session with errRestart, so start
// resyncs.
type feedIter struct {
	fd       *rulesFeed
	after    uint64
	created  int64
	catchUp  bool
	until    uint64
	caughtUp bool
	// ahead, if set, is the request for the page after aheadOf, sent
	// while the page before it is handed out (readAhead).
	ahead   chan aheadPage
	aheadOf uint64
	buf     []*feedMsg
	ctx     context.Context
	cancel  context.CancelFunc
}

func (it *feedIter) Next(...jetstream.NextOpt) (jetstream.Msg, error) {
	for len(it.buf) == 0 {
		if it.ctx.Err() != nil {
			return nil, jetstream.ErrMsgIteratorClosed
		}
		var wait time.Duration
		if it.catchUp && it.until > 0 && it.after >= it.until {
			it.caughtUp = true
		}
		if it.caughtUp {
			if it.catchUp {
				return nil, fmt.Errorf("%w: caught up through the change feed at %d; following %s directly", errRestart, it.after, events.StreamChanges)
			}
			wait = rulesFeedWait
		}
		var (
			p   feed.Page
			err error
		)
		if it.ahead != nil && it.aheadOf == it.after && wait == 0 {
			r := <-it.ahead
			p, err = r.p, r.err
		} else {
			p, err = it.fd.page(it.ctx, it.after, 0, wait)
		}
		it.ahead = nil
		switch {
		case it.ctx.Err() != nil:
			return nil, jetstream.ErrMsgIteratorClosed
		case err != nil:
			return nil, err
		case createdNano(p.StreamCreated) != it.created || p.StreamLastSeq < it.after:
			return nil, fmt.Errorf("%w: change feed reports another %s (created %s, last %d) than the session's", errRestart,
				events.StreamChanges, p.StreamCreated.Format(time.RFC3339Nano), p.StreamLastSeq)
		}
		if err := it.fill(p); err != nil {
			return nil, err
		}
		it.readAhead()
	}
	m := it.buf[0]
	it.buf[0] = nil
	it.buf = it.buf[1:]
	return m, nil
}

// aheadPage is the answer of a request sent ahead.
type aheadPage struct {
	p   feed.Page
	err error
}

// readAhead sends the request for the next page now, if more changes are
// waiting and the next request would not long-poll, so the server reads
// it while this one is handed out and applied. Its answer is taken by
// Next (or dropped with the iterator: the request ends with ctx).
func (it *feedIter) readAhead() {
	if it.caughtUp || (it.catchUp && it.until > 0 && it.after >= it.until) {
		return
	}
	ch, after := make(chan aheadPage, 1), it.after
	it.ahead, it.aheadOf = ch, after
	go func() {
		p, err := it.fd.page(it.ctx, after, 0, 0)
		ch <- aheadPage{p, err}
	}()
}

func (it *feedIter) fill(p feed.Page) error {
	var ms []*feedMsg
	last := it.after
	// A catch-up hands over to the direct follower at the first message
	// the feed could not read, which reads it itself: it keeps it for
	// retry (quarantine), where the feed would only step over it.
	end, stop := p.LastSeq, false
	if it.catchUp && len(p.Skipped) > 0 {
		end, stop = min(end, p.Skipped[0]-1), true
	}
	for _, e := range p.Changes {
		if e.Change == nil || e.Seq <= last {
			continue // out of order or empty: never applied twice
		}
		if e.Seq > end {
			break
		}
		c := e.Change
		if c.Left {
			c = &events.Change{Schema: c.Schema, Tenant: c.Tenant, Collection: c.Collection, Doc: c.Doc,
				Version: c.Version, Event: c.Event, Deleted: true, Left: true}
		}
		data, err := events.EncodeChange(c)
		if err != nil {
			return fmt.Errorf("change feed: encode change at %d: %w", e.Seq, err)
		}
		ms = append(ms, &feedMsg{subject: events.ChangeSubject(c.Tenant, c.Collection, c.Doc), data: data, seq: e.Seq, left: c.Left})
		last = e.Seq
	}
	if end > last {
		ms = append(ms, &feedMsg{seq: end, advance: true})
		last = end
	}
	for i, m := range ms {
		m.pending = uint64(len(ms) - 1 - i)
		if p.More || stop {
			m.pending++
		}
	}
	stuck := it.catchUp && p.More && last <= it.after
	it.buf, it.after, it.caughtUp = ms, last, !p.More || stuck || stop
	return nil
}

func (it *feedIter) Stop()  { it.cancel() }
func (it *feedIter) Drain() { it.cancel() }

// feedMsg is one message of a feedIter, shaped as a CHANGES message.
type feedMsg struct {
	jetstream.Msg
	subject      string
	data         []byte
	seq, pending uint64
	advance      bool // no change: only carries the cursor to seq
	left         bool // a Change.Left notice: the document left the user's view
}

func (m *feedMsg) Subject() string      { return m.subject }
func (m *feedMsg) Data() []byte         { return m.data }
func (m *feedMsg) Headers() nats.Header { return nil }
func (m *feedMsg) Reply() string        { return "" }
func (m *feedMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}, NumPending: m.pending, Consumer: "feed_1"}, nil
}
