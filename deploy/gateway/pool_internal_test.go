package gateway

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// TestPool_NeverClosesUnsettledOrInUse: with no projector, a log whose
// write is published but has no receipt is never closed, neither by the
// reaper however long it was idle nor to make room; a log in use is not
// closed either; a settled, unused one is closed by both. At the bound
// with nothing closable, acquire is errTooManyLogs.
func TestPool_NeverClosesUnsettledOrInUse(t *testing.T) {
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := OpenWriter(ctx, WriterConfig{Dir: filepath.Join(t.TempDir(), "gw"), JetStream: js, Conn: nc, MaxOpenLogs: 2, IdleClose: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	a, b, c := logKey{"acme", "a"}, logKey{"acme", "b"}, logKey{"acme", "c"}

	la, release, err := w.acquire(ctx, a, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := la.write(ctx, producer.Write{Collection: "todos", Doc: "t1", Op: events.OpPut, Fields: events.Fields{"n": []byte("1")}}, "", "", false); err != nil {
		t.Fatal(err)
	}
	release()
	embeddedtest.WaitFor(t, 10*time.Second, "a's write is published", func() bool { return la.log.Counts().Pending == 0 })
	_, release, err = w.acquire(ctx, b, true)
	if err != nil {
		t.Fatal(err)
	}
	release()

	w.closeIdle(ctx, time.Now().Add(time.Hour))
	if w.opened(a) == nil || w.opened(b) != nil {
		t.Fatalf("after the reaper: a open %v (unsettled: want open), b open %v (settled: want closed)", w.opened(a) != nil, w.opened(b) != nil)
	}

	// b in use and a unsettled fill the bound: c is refused.
	_, releaseB, err := w.acquire(ctx, b, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.acquire(ctx, c, true); !errors.Is(err, errTooManyLogs) {
		t.Fatalf("acquire c at the bound with nothing closable: %v, want errTooManyLogs", err)
	}
	releaseB()
	if _, release, err = w.acquire(ctx, c, true); err != nil {
		t.Fatalf("acquire c once b is unused: %v", err)
	}
	release()
	if w.opened(a) == nil || w.opened(b) != nil || w.opened(c) == nil {
		t.Fatalf("after c: a open %v, b open %v, c open %v; want a and c", w.opened(a) != nil, w.opened(b) != nil, w.opened(c) != nil)
	}
	// Without create, an identity with no log gets none.
	if l, release, err := w.acquire(ctx, logKey{"acme", "never"}, false); err != nil || l != nil {
		t.Fatalf("acquire without create: %v %v", l, err)
	} else {
		release()
	}
	if w.made(logKey{"acme", "never"}) {
		t.Fatal("acquire without create made a log")
	}
}

// opened returns k's log if it is open, for tests.
func (w *Writer) opened(k logKey) *writerLog {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.logs[k]
}

// TestPool_ReadAtTheBoundRefused: a request that only reads (GET of a
// write, acquire without create) of an identity whose log is closed
// reopens it like a write, so at the bound, with nothing closable, it is
// refused with errTooManyLogs (503) too; with room it reopens the log.
func TestPool_ReadAtTheBoundRefused(t *testing.T) {
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := OpenWriter(ctx, WriterConfig{Dir: filepath.Join(t.TempDir(), "gw"), JetStream: js, Conn: nc, MaxOpenLogs: 1, IdleClose: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	a, b := logKey{"acme", "a"}, logKey{"acme", "b"}
	_, release, err := w.acquire(ctx, b, true)
	if err != nil {
		t.Fatal(err)
	}
	release()
	la, release, err := w.acquire(ctx, a, true) // closes b's, for the bound
	if err != nil {
		t.Fatal(err)
	}
	if _, err := la.write(ctx, producer.Write{Collection: "todos", Doc: "t1", Op: events.OpPut, Fields: events.Fields{"n": []byte("1")}}, "", "", false); err != nil {
		t.Fatal(err)
	}
	release()
	embeddedtest.WaitFor(t, 10*time.Second, "a's write is published", func() bool { return la.log.Counts().Pending == 0 })
	if _, _, err := w.acquire(ctx, b, false); !errors.Is(err, errTooManyLogs) {
		t.Fatalf("a read of b's closed log at the bound, a's awaiting its receipt: %v, want errTooManyLogs", err)
	}
}

// A writer config whose bounds or publisher backoff mean nothing is
// refused at OpenWriter, naming the field, before any file is made.
func TestOpenWriter_RefusesBadConfig(t *testing.T) {
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	for _, c := range []struct {
		cfg  WriterConfig
		want string
	}{
		{WriterConfig{MaxOpenLogs: -1}, "MaxOpenLogs -1"},
		{WriterConfig{Publisher: producer.PublisherConfig{BackoffInitial: time.Second, BackoffMax: time.Millisecond}}, "BackoffMax"},
	} {
		dir := filepath.Join(t.TempDir(), "gw")
		c.cfg.Dir, c.cfg.JetStream, c.cfg.Conn = dir, js, nc
		w, err := OpenWriter(t.Context(), c.cfg)
		if err == nil {
			w.Close()
			t.Fatalf("OpenWriter(%+v) accepted, want an error naming %s", c.cfg, c.want)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("OpenWriter: %v, want it to name %s", err, c.want)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a refused config made %s: %v", dir, err)
		}
	}
}
