package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// The open logs.
//
// A request uses its identity's log between acquire and the release it
// returns; a log is open while it is in Writer.logs. A log may be closed
// only when no request uses it (refs 0) and no entry it holds awaits its
// fate (writerLog.idle: none pending, none published without a receipt;
// failed ones do not count): then neither its publisher nor its follower
// has anything left to do, and a reopen starts them where the
// file says (the follower after its checkpoint; the idempotency records
// and the device in the file). Two things close logs: the reaper, once a
// log has been unused for IdleClose, and acquire, which closes the least
// recently used closable logs to stay within MaxOpenLogs. A log being
// opened or closed is in Writer.busy, so nobody opens a file that is
// still being closed (bbolt's file lock would make it wait); both are
// local (the follower starts, and a closed log's consumer is deleted, in
// the background), so nobody waits there on NATS.

// errTooManyLogs: MaxOpenLogs logs are open and none may be closed. 503.
var errTooManyLogs = errors.New("too many write logs open")

// Reasons a log is closed, the reason attribute of ebb.gateway.writer.closed.
const (
	closeIdle  = "idle"  // unused for IdleClose
	closeBound = "bound" // closed to open another within MaxOpenLogs
)

// acquire returns the log of k, opened if need be, for one request, and
// the func that releases it. Without create, an identity that has no log
// returns nil (and a no-op release) instead of making one.
func (w *Writer) acquire(ctx context.Context, k logKey, create bool) (*writerLog, func(), error) {
	for {
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return nil, nil, errWriterClosed
		}
		if ch := w.busy[k]; ch != nil {
			w.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, nil, fmt.Errorf("open write log of %s/%s: %w", k.tenant, k.client, ctx.Err())
			}
		}
		if l := w.logs[k]; l != nil {
			l.refs++
			l.used = time.Now()
			w.mu.Unlock()
			return l, w.releaser(l), nil
		}
		if !create && !w.made(k) {
			w.mu.Unlock()
			return nil, func() {}, nil
		}
		if n := len(w.logs) + len(w.busy); n >= w.cfg.MaxOpenLogs {
			victims := w.closableLocked(n-w.cfg.MaxOpenLogs+1, time.Time{})
			if len(victims) == 0 && len(w.busy) > 0 {
				// Others are being opened or closed: once one is done,
				// there may be room, or a log to close.
				ch := anyOf(w.busy)
				w.mu.Unlock()
				select {
				case <-ch:
					continue
				case <-ctx.Done():
					return nil, nil, fmt.Errorf("open write log of %s/%s: %w", k.tenant, k.client, ctx.Err())
				}
			}
			if len(victims) == 0 {
				w.mu.Unlock()
				return nil, nil, w.refuse(ctx, k, n)
			}
			w.mu.Unlock()
			w.closeLogs(ctx, victims, closeBound)
			continue
		}
		done := make(chan struct{})
		w.busy[k] = done
		w.mu.Unlock()

		// Opened after Close began, the log is still registered: Close
		// waits for this open and closes it with the others.
		l, err := w.openLog(ctx, k)
		w.mu.Lock()
		if err == nil {
			l.refs, l.used = 1, time.Now()
			w.logs[k] = l
		}
		delete(w.busy, k)
		close(done)
		w.mu.Unlock()
		if err != nil {
			return nil, nil, err
		}
		w.metrics.opened(ctx)
		return l, w.releaser(l), nil
	}
}

// anyOf returns one of the channels of busy (nil if none).
func anyOf(busy map[logKey]chan struct{}) chan struct{} {
	for _, ch := range busy {
		return ch
	}
	return nil
}

// openLog opens k's log, making its file if need be.
func (w *Writer) openLog(ctx context.Context, k logKey) (*writerLog, error) {
	if err := mkdirFor(w.path(k)); err != nil {
		return nil, fmt.Errorf("open write log of %s/%s: %w", k.tenant, k.client, err)
	}
	l, err := openWriterLog(ctx, w, k, w.path(k))
	if err != nil {
		return nil, fmt.Errorf("open write log of %s/%s: %w", k.tenant, k.client, err)
	}
	return l, nil
}

// releaser returns the func that ends one use of l; calling it again does
// nothing.
func (w *Writer) releaser(l *writerLog) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			l.refs--
			l.used = time.Now()
			w.mu.Unlock()
		})
	}
}

// refuse logs and counts a request refused because n logs are open, at
// MaxOpenLogs, and none may be closed, and returns its error. The request
// may be a write or a read that overlays the identity's pending writes.
func (w *Writer) refuse(ctx context.Context, k logKey, n int) error {
	w.metrics.refused(ctx)
	w.log.Warn("request refused: every open write log is in use or holds writes awaiting their receipt; raise MaxOpenLogs if this lasts",
		"tenant", k.tenant, "client", k.client, "open", n, "max_open_logs", w.cfg.MaxOpenLogs)
	return fmt.Errorf("%w: %d open (MaxOpenLogs %d), each in use or holding writes awaiting their receipt; retry later",
		errTooManyLogs, n, w.cfg.MaxOpenLogs)
}

// closableLocked removes from w.logs up to n logs that may be closed,
// least recently used first, and only those unused since before idleSince
// unless it is zero; it marks them busy for closeLogs. Call it under mu.
func (w *Writer) closableLocked(n int, idleSince time.Time) map[logKey]*writerLog {
	var cands []logKey
	for k, l := range w.logs {
		if l.refs == 0 && (idleSince.IsZero() || l.used.Before(idleSince)) && awaiting(l.log.Counts()) == 0 {
			cands = append(cands, k)
		}
	}
	slices.SortFunc(cands, func(a, b logKey) int { return w.logs[a].used.Compare(w.logs[b].used) })
	out := map[logKey]*writerLog{}
	for _, k := range cands {
		if len(out) == n {
			break
		}
		if l := w.logs[k]; l.idle(context.Background()) {
			out[k] = l
			delete(w.logs, k)
			w.busy[k] = make(chan struct{})
		}
	}
	return out
}

// closeLogs closes logs that closableLocked took, and lets their
// identities open them again.
func (w *Writer) closeLogs(ctx context.Context, logs map[logKey]*writerLog, reason string) {
	for k, l := range logs {
		if err := l.close(); err != nil {
			// No entry awaits a publish or a receipt: nothing is lost, and the next
			// open of the file reports what is wrong with it.
			w.log.Error("close write log", "tenant", k.tenant, "client", k.client, "err", err)
		}
		w.mu.Lock()
		close(w.busy[k])
		delete(w.busy, k)
		w.mu.Unlock()
		w.metrics.closed(ctx, reason)
	}
}

// reap closes the logs unused for IdleClose, until ctx ends.
func (w *Writer) reap(ctx context.Context) {
	defer w.wg.Done()
	t := time.NewTicker(max(w.cfg.IdleClose/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.closeIdle(ctx, now)
		}
	}
}

// closeIdle closes every log that may be closed and was unused since
// before now minus IdleClose.
func (w *Writer) closeIdle(ctx context.Context, now time.Time) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	cutoff := now.Add(-w.cfg.IdleClose)
	idle := w.closableLocked(len(w.logs), cutoff)
	w.reapCutoff = cutoff
	w.mu.Unlock()
	w.closeLogs(ctx, idle, closeIdle)
}

// waitIdle waits until no log is being opened or closed.
func (w *Writer) waitIdle() {
	for {
		w.mu.Lock()
		ch := anyOf(w.busy)
		w.mu.Unlock()
		if ch == nil {
			return
		}
		<-ch
	}
}

// openLogs is how many logs are open.
func (w *Writer) openLogs() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.logs)
}

// writerMetrics are the Writer's instruments; every method is a no-op
// without a MeterProvider.
type writerMetrics struct {
	openedN, closedN, refusedN metric.Int64Counter
	reg                        metric.Registration
}

func newWriterMetrics(mp metric.MeterProvider, w *Writer) (writerMetrics, error) {
	var m writerMetrics
	if mp == nil {
		return m, nil
	}
	meter := mp.Meter("github.com/ebbsync/ebb/deploy/gateway")
	var err error
	if m.openedN, err = meter.Int64Counter("ebb.gateway.writer.opened",
		metric.WithDescription("write logs opened for a request")); err != nil {
		return m, err
	}
	if m.closedN, err = meter.Int64Counter("ebb.gateway.writer.closed",
		metric.WithDescription("write logs closed, none with a write awaiting its receipt: reason idle (unused for IdleClose) or bound (to stay within MaxOpenLogs)")); err != nil {
		return m, err
	}
	if m.refusedN, err = meter.Int64Counter("ebb.gateway.writer.refused",
		metric.WithDescription("document writes refused (503) because MaxOpenLogs logs were open, each in use or holding writes awaiting their receipt")); err != nil {
		return m, err
	}
	gauge, err := meter.Int64ObservableGauge("ebb.gateway.writer.open_logs",
		metric.WithDescription("write logs open now (bounded by MaxOpenLogs)"))
	if err != nil {
		return m, err
	}
	m.reg, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(gauge, int64(w.openLogs()))
		return nil
	}, gauge)
	return m, err
}

func (m writerMetrics) opened(ctx context.Context) {
	if m.openedN != nil {
		m.openedN.Add(ctx, 1)
	}
}

func (m writerMetrics) closed(ctx context.Context, reason string) {
	if m.closedN != nil {
		m.closedN.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
	}
}

func (m writerMetrics) refused(ctx context.Context) {
	if m.refusedN != nil {
		m.refusedN.Add(ctx, 1)
	}
}

func (m writerMetrics) close() error {
	if m.reg == nil {
		return nil
	}
	return m.reg.Unregister()
}
