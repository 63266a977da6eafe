package gateway

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// TestPool_FailedWriteDoesNotPinItsLog: a write NATS refuses for good (here:
// bigger than the stream's max_msg_size) is StateFailed, which counts as
// unsettled and never gets a receipt. Its log can then never be closed,
// neither idle nor for the bound, for the life of the file (OpenWriter
// reopens it at every start): each such identity takes one of
// MaxOpenLogs for good, and once they fill the bound every other
// identity is refused 503 forever.
func TestPool_FailedWriteDoesNotPinItsLog(t *testing.T) {
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{MaxMsgSize: 4096}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "gw")
	open := func() *Writer {
		w, err := OpenWriter(ctx, WriterConfig{Dir: dir, JetStream: js, Conn: nc, MaxOpenLogs: 1, IdleClose: -1})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := open()
	a, b := logKey{"acme", "a"}, logKey{"acme", "b"}
	la, release, err := w.acquire(ctx, a, true)
	if err != nil {
		t.Fatal(err)
	}
	big := []byte(`"` + strings.Repeat("x", 8000) + `"`)
	wr, err := la.write(ctx, producer.Write{Collection: "todos", Doc: "t1", Op: events.OpPut, Fields: events.Fields{"n": big}}, "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	release()
	embeddedtest.WaitFor(t, 10*time.Second, "a's write fails for good", func() bool { return la.log.Counts().Failed == 1 })
	e, _, _ := la.log.Entry(ctx, wr.ID)
	t.Logf("a's entry: state %s err %q", e.State, e.Err)

	w.closeIdle(ctx, time.Now().Add(24*time.Hour))
	if w.opened(a) == nil {
		t.Log("a's log was closed (no pinning)")
	} else {
		t.Errorf("a's log, whose only write failed for good a day ago, is still open: it can never settle")
	}
	if _, _, err := w.acquire(ctx, b, true); errors.Is(err, errTooManyLogs) {
		t.Errorf("b refused with %v: one failed write of another identity took the bound", err)
	}
	_ = w.Close()

	// And after a restart: OpenWriter opens a's log again, so b is still refused.
	w = open()
	defer w.Close()
	if w.opened(a) != nil {
		t.Errorf("after restart a's log (only a failed write) is opened again by OpenWriter")
	}
	_, relB, err := w.acquire(ctx, b, true)
	if errors.Is(err, errTooManyLogs) {
		t.Fatalf("after restart b still refused: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	relB()
	// The failed write's outcome stays readable: a's log reopens (closing
	// b's, within the bound) and says it failed, and why.
	la, relA, err := w.acquire(ctx, a, false)
	if err != nil || la == nil {
		t.Fatalf("reopen a's log: %v (log %v)", err, la)
	}
	defer relA()
	if e, ok, err := la.log.Entry(ctx, wr.ID); err != nil || !ok || e.State != producer.StateFailed || e.Err == "" {
		t.Errorf("a's failed write after reopen: %+v ok %v err %v; want failed with its error", e, ok, err)
	}
}

// TestPool_ReaperNeverBlocksOnConsumerDeletes: each close of a log deletes its
// receipts consumer with a 5s timeout, one log after another, and
// Writer.Close ignores its caller's deadline: with NATS unreachable
// (reconnecting) shutting down a writer with N open logs takes N x 5s.
// The reaper does the same with every victim marked busy for the whole
// batch, so a request of the last victim waits for all of them.
func TestPool_ReaperNeverBlocksOnConsumerDeletes(t *testing.T) {
	s := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := OpenWriter(ctx, WriterConfig{Dir: filepath.Join(t.TempDir(), "gw"), JetStream: js, Conn: nc, IdleClose: -1})
	if err != nil {
		t.Fatal(err)
	}
	const n = 3
	for i := range n {
		_, release, err := w.acquire(ctx, logKey{"acme", string(rune('a' + i))}, true)
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := s.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	embeddedtest.WaitFor(t, 10*time.Second, "the connection is reconnecting", func() bool { return !nc.IsConnected() })

	// The reaper's path: all three are victims, marked busy together. A
	// request of the last one, once the reaper has taken it from the
	// pool, must not wait for the others' consumer deletes.
	last := logKey{"acme", string(rune('a' + n - 1))}
	start := time.Now()
	reaped := make(chan time.Duration, 1)
	go func() {
		w.closeIdle(ctx, time.Now().Add(time.Hour))
		reaped <- time.Since(start)
	}()
	embeddedtest.WaitFor(t, 10*time.Second, "the reaper takes the last victim", func() bool { return w.opened(last) == nil })
	t0 := time.Now()
	// A GET /writes of the last identity (no create): must only read its file.
	_, rel, err := w.acquire(context.Background(), last, false)
	if err == nil {
		rel()
	}
	waited := time.Since(t0)
	t.Logf("reaper closed %d idle logs in %v", n, <-reaped)
	t.Logf("a request of one victim waited %v for the batch", waited)
	if err != nil {
		t.Errorf("reopen the last victim with NATS down: %v", err)
	}
	if waited > 2*time.Second {
		t.Errorf("a request waited %v on the reaper's batch of %d closes with NATS unreachable", waited, n)
	}
	// A closed, settled log cannot be reopened without JetStream (follow
	// needs a consumer), so GET /writes/{event}, a read of the local file
	// that an open log answered during an outage, now fails.
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	if _, rel, err := w.acquire(rctx, logKey{"acme", "a"}, false); err != nil {
		t.Errorf("reopen a settled log for a read with NATS down: %v", err)
	} else {
		rel()
	}
	_ = w.Close()
}

// TestWriter_CloseBoundedWhenNATSUnreachable: Writer.Close deletes the
// consumer of every open log in turn, 5s each with NATS unreachable, so
// shutting down with N open logs (up to MaxOpenLogs, 256 by default:
// over 21 minutes) blocks N x 5s; server.stop's ctx is not passed down.
func TestWriter_CloseBoundedWhenNATSUnreachable(t *testing.T) {
	s := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := OpenWriter(ctx, WriterConfig{Dir: filepath.Join(t.TempDir(), "gw"), JetStream: js, Conn: nc, IdleClose: -1})
	if err != nil {
		t.Fatal(err)
	}
	const n = 3
	for i := range n {
		_, release, err := w.acquire(ctx, logKey{"acme", string(rune('a' + i))}, true)
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := s.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	embeddedtest.WaitFor(t, 10*time.Second, "the connection is reconnecting", func() bool { return !nc.IsConnected() })
	start := time.Now()
	_ = w.Close()
	took := time.Since(start)
	t.Logf("Close of %d open logs with NATS unreachable took %v", n, took)
	if took > 2*time.Second {
		t.Errorf("Writer.Close blocked %v for %d logs (5s per consumer delete, serial)", took, n)
	}
}
