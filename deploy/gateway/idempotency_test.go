package gateway

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// TestIdempotency_ReservationResolvedAfterCrash: a crash between the
// append and the key's record leaves a reservation; the next open finds
// the key's event in the log. A reservation whose append never happened
// is dropped, so the key writes anew.
func TestIdempotency_ReservationResolvedAfterCrash(t *testing.T) {
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := WriterConfig{Dir: filepath.Join(t.TempDir(), "gw"), JetStream: js, Conn: nc}
	open := func() (*Writer, *writerLog) {
		t.Helper()
		w, err := OpenWriter(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.Close() })
		wl, _, err := w.acquire(ctx, logKey{"acme", DefaultWriteClient}, true)
		if err != nil {
			t.Fatal(err)
		}
		return w, wl
	}
	write := producer.Write{Collection: "todos", Doc: "t1", Op: events.OpPut, Fields: events.Fields{"n": []byte("1")}}

	// The first two steps of write, then the "crash".
	w, wl := open()
	reserve := func(key string) {
		t.Helper()
		rec := idemRecord{Fingerprint: "fp-" + key, Before: wl.log.LastSeq(), Collection: "todos", Doc: "t1", Op: "put"}
		if err := wl.putRecord(key, &rec); err != nil {
			t.Fatal(err)
		}
	}
	reserve("k1")
	ev, err := wl.log.Append(ctx, write)
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Close()

	w, wl = open()
	rec, ok, err := wl.getRecord("k1")
	if err != nil || !ok || rec.Event != ev.ID {
		t.Fatalf("k1 after reopen: %+v %v %v, want event %s", rec, ok, err, ev.ID)
	}
	got, err := wl.write(ctx, write, "k1", "fp-k1", false)
	if err != nil || !got.Replayed || got.ID != ev.ID {
		t.Fatalf("write k1 again: %+v %v", got, err)
	}

	// A reservation with no append after it.
	reserve("k2")
	_ = w.Close()
	_, wl = open()
	if rec, ok, err := wl.getRecord("k2"); err != nil || ok {
		t.Fatalf("k2 after reopen: %+v %v %v, want dropped", rec, ok, err)
	}
	got, err = wl.write(ctx, write, "k2", "fp-k2", false)
	if err != nil || got.Replayed || got.ID == ev.ID {
		t.Fatalf("write k2: %+v %v, want a new event", got, err)
	}
	if n := wl.log.LastSeq(); n != 2 {
		t.Fatalf("log holds %d events, want 2", n)
	}
}
