package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// Buckets the writer keeps beside the producer's in each log file. The
// writer is their only reader and writer.
var (
	bucketWriteMeta   = []byte("gateway.meta")        // metaReceiptsSeq -> 8 bytes big-endian
	bucketIdempotency = []byte("gateway.idempotency") // Idempotency-Key -> idemRecord (JSON)
	bucketReissued    = []byte("gateway.reissued")    // event id answered reused -> the event that wrote it again

	metaReceiptsSeq = []byte("receipts_seq") // last RECEIPTS sequence settled into the log
)

// writerLog is one writing identity's log: its producer.Log and Publisher,
// the follower of its receipts, and the requests waiting for them.
type writerLog struct {
	key logKey
	log *producer.Log // owns the file: the writer's buckets are reached through its transactions
	pub *producer.Publisher
	lg  *slog.Logger

	// The receipts follower, started by followLoop in the background;
	// cons and cc are set by it and read only after wg.Wait.
	stop         context.CancelFunc
	wg           sync.WaitGroup
	cons         jetstream.Consumer
	cc           jetstream.ConsumeContext
	dropConsumer func(name string) // queues a consumer's delete (Writer.deletes)

	// groups is the identity's writer groups as its last authenticated
	// request named them (nil: none since open), stamped on every event
	// its publisher publishes (stamping).
	groups atomic.Pointer[string]

	// appendMu serialises appends with their idempotency records, so at
	// most one reservation is ever outstanding (see idempotency.go).
	appendMu sync.Mutex

	waitMu  sync.Mutex
	waiters map[string]chan struct{} // event id -> closed when its entry settles or fails

	// Guarded by the Writer's mu (pool.go).
	refs int       // requests using the log now
	used time.Time // when the last of them ended (or began)
}

func openWriterLog(ctx context.Context, w *Writer, k logKey, path string) (_ *writerLog, err error) {
	l := &writerLog{key: k, waiters: map[string]chan struct{}{},
		lg: w.log.With("tenant", k.tenant, "client", k.client)}
	l.log, err = producer.OpenStore(path, w.logConfig(k), producer.FileOptions{})
	if err != nil {
		return nil, err
	}
	var receiptsSeq uint64
	err = l.log.Update(ctx, func(tx *producer.Tx) error {
		for _, b := range [][]byte{bucketWriteMeta, bucketIdempotency, bucketReissued} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		if v := tx.Bucket(bucketWriteMeta).Get(metaReceiptsSeq); len(v) == 8 {
			receiptsSeq = beUint64(v)
		}
		return nil
	})
	if err != nil {
		_ = l.log.Close()
		return nil, err
	}
	if err := l.recoverReservations(ctx); err != nil {
		_ = l.log.Close()
		return nil, err
	}
	pcfg := w.cfg.Publisher
	onFailure := pcfg.OnFailure
	pcfg.OnFailure = func(e producer.Entry) {
		l.notify(e.Event.ID)
		if onFailure != nil {
			onFailure(e)
		}
	}
	if pcfg.Logger == nil {
		pcfg.Logger = w.cfg.Logger
	}
	if pcfg.TracerProvider == nil {
		pcfg.TracerProvider = w.cfg.TracerProvider
	}
	if pcfg.MeterProvider == nil {
		pcfg.MeterProvider = w.cfg.MeterProvider
	}
	if l.pub, err = producer.NewPublisher(l.log, stamping{JetStream: w.cfg.JetStream, groups: &l.groups}, w.cfg.Conn, pcfg); err != nil {
		_ = l.log.Close()
		return nil, err
	}
	// The follower needs NATS; the log does not: it opens, answers reads
	// and takes writes during an outage, and its follower starts in the
	// background, retrying until NATS answers (followLoop). A new log's
	// publisher waits for the follower's start point (see followLoop).
	hold := receiptsSeq == 0 && l.log.LastSeq() == 0
	if !hold {
		if err := l.pub.Start(w.ctx); err != nil {
			_ = l.pub.Close()
			_ = l.log.Close()
			return nil, err
		}
	}
	fctx, stop := context.WithCancel(w.ctx)
	l.stop, l.dropConsumer = stop, w.deletes.delete
	l.wg.Add(1)
	go l.followLoop(fctx, w.ctx, w.cfg.JetStream, receiptsSeq, hold, w.retryBackoff())
	return l, nil
}

// followAttemptTimeout bounds one attempt to start a receipt follower.
const followAttemptTimeout = 5 * time.Second

// followLoop starts the follower of the identity's receipts after
// RECEIPTS sequence after, retrying with backoff until it runs or ctx
// ends: each receipt settles its entry in the log, with the follower's
// checkpoint in the same transaction, and wakes its waiters (onReceipt).
// With hold (a new log, nothing published yet), the follower starts
// after RECEIPTS' last sequence, and the publisher, started with pubCtx,
// only once that is known, so no receipt of this log can precede it.
func (l *writerLog) followLoop(ctx, pubCtx context.Context, js JetStream, after uint64, hold bool, bo *producer.Backoff) {
	defer l.wg.Done()
	// Every receipt subject of the identity: its legacy log's and each of
	// its devices' (this log's current device, the ones it forked from,
	// and the identity's NATS devices, which onReceipt skips).
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: events.ClientReceipts(l.key.tenant, l.key.client)}
	if after > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	}
	for failures := 0; ; failures++ {
		err := l.startFollower(ctx, pubCtx, js, &cfg, &hold)
		if err == nil {
			if failures > 0 {
				l.lg.Info("receipt follower started", "attempts", failures+1)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, jetstream.ErrMaximumConsumersLimit):
			// RECEIPTS' limit is shared with users' consumers. The log
			// stays open and takes writes; they are published, and settle
			// once the follower gets a consumer.
			l.lg.Error("receipt follower: RECEIPTS refused a consumer (its consumer limit is reached): writes of this log are accepted and published but not settled until one frees; retrying",
				"attempt", failures+1, "err", err)
		case failures == 0 || failures&(failures-1) == 0: // 1st, 2nd, 3rd, 5th, 9th...
			l.lg.Warn("receipt follower: cannot start (NATS unreachable?); the log takes writes meanwhile; retrying",
				"attempt", failures+1, "err", err)
		}
		t := time.NewTimer(bo.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// startFollower makes one attempt of followLoop.
func (l *writerLog) startFollower(ctx, pubCtx context.Context, js JetStream, cfg *jetstream.OrderedConsumerConfig, hold *bool) error {
	actx, cancel := context.WithTimeout(ctx, followAttemptTimeout)
	defer cancel()
	if *hold {
		// A new log has no event a receipt already sent could be for; the
		// identity's older receipts (its own devices') are not its business.
		// Start after RECEIPTS' last sequence rather than "deliver new":
		// an ordered consumer that lost its connection before delivering
		// anything is recreated with the same policy, and "new" would then
		// step over every receipt stored while it was away.
		st, err := js.Stream(actx, events.StreamReceipts)
		if err != nil {
			return fmt.Errorf("follow receipts: %w", err)
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, st.CachedInfo().State.LastSeq+1
		*hold = false
		if err := l.pub.Start(pubCtx); err != nil {
			// Only after Close, which waits for this goroutine first.
			l.lg.Error("start the publisher of a write log", "err", err)
		}
	}
	cons, err := js.OrderedConsumer(actx, events.StreamReceipts, *cfg)
	if err != nil {
		return fmt.Errorf("follow receipts: %w", err)
	}
	cc, err := cons.Consume(l.onReceipt)
	if err != nil {
		if info := cons.CachedInfo(); info != nil {
			l.dropConsumer(info.Name)
		}
		return fmt.Errorf("follow receipts: %w", err)
	}
	l.cons, l.cc = cons, cc
	return nil
}

// onReceipt settles the entry a receipt names, with the follower's
// checkpoint in the same transaction. A message that is not a receipt of
// its subject is skipped (logged), and so, silently, is a receipt of an
// event this log did not write.
func (l *writerLog) onReceipt(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		l.lg.Error("receipt follower: message metadata", "err", err)
		return
	}
	r, rerr := readReceipt(m.Subject(), m.Data())
	if rerr != nil {
		l.lg.Warn("receipt follower: skipped a message that is not a receipt of its subject", "seq", md.Sequence.Stream, "err", rerr)
		return
	}
	ctx := context.Background()
	// A receipt of a sequence of this log's device that it never wrote
	// means the file was restored from an older copy: the log moves to a
	// new device before it reuses a sequence.
	if _, err := l.log.ObserveReceipt(ctx, r); err != nil {
		l.lg.Error("receipt follower: observe receipt", "event", r.Event, "err", err)
	}
	if _, ours, err := l.log.Entry(ctx, r.Event); err == nil && !ours {
		// A receipt of an event of the identity's own devices (a client
		// that also writes over NATS): nothing to settle or store; the
		// checkpoint lags behind it, which only costs a re-read.
		return
	}
	if r.Outcome == events.OutcomeReused {
		l.onReused(ctx, r, md.Sequence.Stream)
		return
	}
	err = l.log.Update(ctx, func(tx *producer.Tx) error {
		if err := tx.Settle(r); err != nil {
			return err
		}
		return tx.Bucket(bucketWriteMeta).Put(metaReceiptsSeq, beBytes(md.Sequence.Stream))
	})
	if err != nil {
		// The entry stays published; its request answers 202 and a later
		// receipt of the same event (none comes) cannot settle it. Loud.
		l.lg.Error("receipt follower: settle receipt", "seq", md.Sequence.Stream, "err", err)
		return
	}
	l.notify(r.Event)
}

// onReused handles a reused receipt of one of this log's writes (another
// copy of the log holds its sequence): producer.Log.Reissue forks the log
// to a new device and writes the event again there, settling the original
// in the same transaction, so the write is never lost. The original's id
// is then mapped to the new event (with the follower's checkpoint), and
// the answers of the original follow it (current). A crash between the
// two leaves the new event written but the original unmapped: its answer
// says reused, its reason names the new event.
func (l *writerLog) onReused(ctx context.Context, r *events.Receipt, streamSeq uint64) {
	ne, err := l.log.Reissue(ctx, r)
	if err != nil {
		// The entry stays published; a later copy of the receipt (none
		// comes) cannot settle it. Loud.
		l.lg.Error("receipt follower: write a reused event again", "event", r.Event, "seq", streamSeq, "err", err)
		return
	}
	err = l.log.Update(ctx, func(tx *producer.Tx) error {
		if ne != nil {
			if err := tx.Bucket(bucketReissued).Put([]byte(r.Event), []byte(ne.ID)); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketWriteMeta).Put(metaReceiptsSeq, beBytes(streamSeq))
	})
	if err != nil {
		l.lg.Error("receipt follower: record a reissued event", "event", r.Event, "seq", streamSeq, "err", err)
	}
	if ne != nil {
		l.lg.Warn("the server holds another event under this log's sequence (a restored or copied write log): written again on a new device",
			"event", r.Event, "new_event", ne.ID, "device", ne.Device)
	}
	l.notify(r.Event)
}

// current returns the entry of event id, following it to the event that
// wrote it again when it was answered reused (onReused), and reports
// whether the log holds it.
func (l *writerLog) current(ctx context.Context, id string) (producer.Entry, bool, error) {
	for range 64 { // a chain of reissues is short; the bound only stops a loop
		e, ok, err := l.log.Entry(ctx, id)
		if err != nil || !ok || e.State != producer.StateSettled || e.Outcome != events.OutcomeReused {
			return e, ok, err
		}
		var next string
		if err := l.log.View(ctx, func(tx *producer.Tx) error {
			next = string(tx.Bucket(bucketReissued).Get([]byte(id)))
			return nil
		}); err != nil {
			return producer.Entry{}, false, fmt.Errorf("read write %s: %w", id, err)
		}
		if next == "" {
			return e, true, nil
		}
		id = next
	}
	return producer.Entry{}, false, fmt.Errorf("read write %s: a loop of reissued events", id)
}

// waitCh returns the channel closed when event id's entry next changes to
// settled or failed.
func (l *writerLog) waitCh(id string) <-chan struct{} {
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	ch := l.waiters[id]
	if ch == nil {
		ch = make(chan struct{})
		l.waiters[id] = ch
	}
	return ch
}

func (l *writerLog) notify(id string) {
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	if ch := l.waiters[id]; ch != nil {
		close(ch)
		delete(l.waiters, id)
	}
}

// forget drops the waiter channel of id if nobody was woken through it.
func (l *writerLog) forget(id string, ch <-chan struct{}) {
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	if l.waiters[id] == ch {
		delete(l.waiters, id)
	}
}

// await returns event id's entry once it is settled or failed, or as it
// stands when ctx ends first (the caller answers 202 then).
func (l *writerLog) await(ctx context.Context, id string) (producer.Entry, error) {
	for {
		// Take the channel before reading the entry: a receipt settled
		// after the read closes it.
		ch := l.waitCh(id)
		e, ok, err := l.current(context.WithoutCancel(ctx), id)
		if ok && err == nil && e.Event.ID != id {
			// Written again as another event: wait for that one.
			l.forget(id, ch)
			id = e.Event.ID
			continue
		}
		if err != nil {
			l.forget(id, ch)
			return producer.Entry{}, err
		}
		if !ok {
			l.forget(id, ch)
			return producer.Entry{}, fmt.Errorf("write %s: %w", id, errNotFound)
		}
		if e.State == producer.StateSettled || e.State == producer.StateFailed {
			l.forget(id, ch)
			return e, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			l.forget(id, ch)
			return l.entryNow(ctx, id, e)
		}
	}
}

// entryNow re-reads event id's entry once a wait has ended, so the answer
// says how far it got (published, say) rather than how it stood before;
// last is the answer when it cannot be read.
func (l *writerLog) entryNow(ctx context.Context, id string, last producer.Entry) (producer.Entry, error) {
	if e, ok, err := l.current(context.WithoutCancel(ctx), id); err == nil && ok {
		return e, nil
	}
	return last, nil
}

// awaiting is how many entries of c await their fate: pending (the
// publisher's work) or published without a receipt (the follower's). A
// failed entry does not count: it needs neither, and stays in the file,
// its outcome readable, when the log is closed.
func awaiting(c producer.Counts) int { return c.Pending + c.Published() }

// idle reports whether no entry of the log awaits its fate (awaiting),
// exactly (in a transaction: Counts may lag a commit), so the log may be
// closed.
func (l *writerLog) idle(ctx context.Context) bool {
	if awaiting(l.log.Counts()) != 0 {
		return false
	}
	found := true
	if err := l.log.View(ctx, func(tx *producer.Tx) error {
		_, _, ok, err := tx.Awaiting(0)
		found = ok
		return err
	}); err != nil {
		l.lg.Error("look for writes awaiting their receipt", "err", err)
		return false
	}
	return !found
}

// close stops the follower (or its attempts to start) and the publisher
// and closes the log file, without waiting on NATS: the follower's
// consumer is queued for deletion on the server (consumerdelete.go).
func (l *writerLog) close() error {
	l.stop()
	l.wg.Wait()
	if l.cc != nil {
		l.cc.Stop()
		<-l.cc.Closed()
		if info := l.cons.CachedInfo(); info != nil {
			l.dropConsumer(info.Name)
		}
	}
	return errors.Join(l.pub.Close(), l.log.Close())
}

func beBytes(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
