package consumer

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestAckSeqs(t *testing.T) {
	for _, tc := range []struct {
		name         string
		reply        string
		seq, pending uint64
		wantOK       bool
	}{
		{"v1", "$JS.ACK.CHANGES.cons.1.42.7.1700000000000000000.9", 42, 9, true},
		{"v2", "$JS.ACK._.ACCHASH.CHANGES.cons.1.42.7.1700000000000000000.9.rand", 42, 9, true},
		{"v2 without token", "$JS.ACK.dom.ACCHASH.CHANGES.cons.1.42.7.1700000000000000000.0", 42, 0, true},
		{"v2 more tokens", "$JS.ACK.dom.ACCHASH.CHANGES.cons.1.42.7.17.3.rand.more", 42, 3, true},
		{"10 tokens", "$JS.ACK.x.CHANGES.cons.1.42.7.17.3", 0, 0, false},
		{"8 tokens", "$JS.ACK.CHANGES.cons.1.42.7.17", 0, 0, false},
		{"not an ack", "_INBOX.abc.1.42.7.17.3.4.5", 0, 0, false},
		{"empty", "", 0, 0, false},
		{"letters", "$JS.ACK.CHANGES.cons.1.4x2.7.17.9", 0, 0, false},
		{"empty number", "$JS.ACK.CHANGES.cons.1..7.17.9", 0, 0, false},
		{"too long", "$JS.ACK.CHANGES.cons.1.42.7.17.99999999999999999999", 0, 0, false},
		{"max", "$JS.ACK.CHANGES.cons.1.9999999999999999999.7.17.0", 9999999999999999999, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, pending, ok := ackSeqs(tc.reply)
			if ok != tc.wantOK || (ok && (seq != tc.seq || pending != tc.pending)) {
				t.Fatalf("ackSeqs(%q) = %d, %d, %v; want %d, %d, %v", tc.reply, seq, pending, ok, tc.seq, tc.pending, tc.wantOK)
			}
		})
	}
}

func TestArena_SlicesStayApart(t *testing.T) {
	var a arena
	var got [][]byte
	for i := range 5000 { // several buffers' worth
		b := a.alloc(1 + i%40)
		for j := range b {
			b[j] = byte(i)
		}
		if cap(b) != len(b) {
			t.Fatalf("alloc %d: cap %d, want %d", i, cap(b), len(b))
		}
		got = append(got, b)
	}
	for i, b := range got {
		if !bytes.Equal(b, bytes.Repeat([]byte{byte(i)}, len(b))) {
			t.Fatalf("slice %d overwritten", i)
		}
	}
	a.reset()
	if len(a.buf) != 0 || cap(a.buf) == 0 {
		t.Fatalf("reset: len %d cap %d, want an empty reused buffer", len(a.buf), cap(a.buf))
	}
	if big := a.alloc(arenaKeep); len(big) != arenaKeep || len(a.buf) != 0 {
		t.Fatalf("a large alloc should not come from the buffer (len %d)", len(a.buf))
	}
	a.buf = make([]byte, 0, 2*arenaKeep)
	a.reset()
	if a.buf != nil {
		t.Fatal("reset kept an oversized buffer")
	}
}

// handoffReader feeds q as the reader goroutine does: pendings[i] is the
// pending count of the i-th delivery.
func handoffReader(ctx context.Context, q *handoff[int], pendings []uint64) error {
	for i, p := range pendings {
		b, err := q.slot(ctx)
		if err != nil {
			return err
		}
		b.ds = append(b.ds, delivery[int]{seq: uint64(i + 1), pending: p, v: i})
		q.release()
	}
	return errors.New("end of test stream")
}

// takeAll takes batches until the reader stops and returns their sizes and
// the reader's error, failing tb if a delivery comes out of order.
func takeAll(tb testing.TB, q *handoff[int]) ([]int, error) {
	tb.Helper()
	own := &batch[int]{}
	var sizes []int
	next := uint64(1)
	for {
		b, err := q.take(own)
		if b == nil {
			return sizes, err
		}
		sizes = append(sizes, len(b.ds))
		for _, d := range b.ds {
			if d.seq != next || d.v != int(d.seq)-1 {
				tb.Fatalf("delivery %d (%d) where %d was due", d.seq, d.v, next)
			}
			next++
		}
		own = b
		b.reset()
	}
}

func TestHandoff_GatherFullBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 25 messages, the last one the stream's last: batches of 10 while
		// more are pending, then the rest at once.
		pendings := make([]uint64, 25)
		for i := range pendings {
			pendings[i] = uint64(len(pendings) - 1 - i)
		}
		q := newHandoff[int](10, 10, time.Minute)
		go func() { q.finish(handoffReader(t.Context(), q, pendings)) }()
		sizes, err := takeAll(t, q)
		if err == nil || sum(sizes) != 25 {
			t.Fatalf("took %v (%v), want all 25 then the reader's error", sizes, err)
		}
		for _, n := range sizes[:len(sizes)-1] {
			if n != 10 {
				t.Fatalf("batch sizes %v: want 10 until the last", sizes)
			}
		}
	})
}

func TestHandoff_GatherGivesUpAfterGather(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The pending count promises more than ever comes: the partial batch
		// is applied once gather has passed.
		q := newHandoff[int](10, 10, 50*time.Millisecond)
		ctx, cancel := context.WithCancel(t.Context())
		release := make(chan struct{})
		go func() {
			err := handoffReader(ctx, q, []uint64{100, 99, 98})
			<-release
			q.finish(err)
		}()
		start := time.Now()
		b, err := q.take(&batch[int]{})
		if err != nil || b == nil || len(b.ds) != 3 {
			t.Fatalf("take = %v, %v; want the 3 deliveries", b, err)
		}
		if waited := time.Since(start); waited != 50*time.Millisecond {
			t.Fatalf("took after %v, want 50ms", waited)
		}
		close(release)
		cancel()
	})
}

func TestHandoff_NoGatherTakesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newHandoff[int](10, 10, 0)
		release := make(chan struct{})
		go func() {
			err := handoffReader(t.Context(), q, []uint64{100})
			<-release
			q.finish(err)
		}()
		start := time.Now()
		b, err := q.take(&batch[int]{})
		if err != nil || b == nil || len(b.ds) != 1 || time.Since(start) != 0 {
			t.Fatalf("take = %v, %v after %v; want the delivery at once", b, err, time.Since(start))
		}
		close(release)
	})
}

func TestHandoff_AbandonUnblocksReader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The reader waits for room in a full batch; the applier stops.
		q := newHandoff[int](2, 2, 0)
		go func() { q.finish(handoffReader(t.Context(), q, []uint64{5, 4, 3, 2})) }()
		synctest.Wait()
		q.abandon()
		if !errors.Is(q.err, errApplierStopped) {
			t.Fatalf("reader ended with %v, want errApplierStopped", q.err)
		}
	})
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

func TestAckFields_Consumer(t *testing.T) {
	for reply, want := range map[string]string{
		"$JS.ACK.RECEIPTS.abc_2.1.42.7.1700000000000000000.9":               "abc_2",
		"$JS.ACK._.ACCHASH.RECEIPTS.abc_1.1.42.7.1700000000000000000.9.rnd": "abc_1",
	} {
		if got, _, _, ok := ackFields(reply); !ok || got != want {
			t.Errorf("ackFields(%q) consumer %q, %v; want %q", reply, got, ok, want)
		}
	}
}

func TestReceiptGapSuspect(t *testing.T) {
	d := func(seq, pending uint64, resumed bool) delivery[receipt] {
		return delivery[receipt]{seq: seq, pending: pending, resumed: resumed}
	}
	for _, tc := range []struct {
		name string
		prev Progress
		ds   []delivery[receipt]
		want bool
	}{
		{"live, other clients' receipts between", Progress{Seq: 10}, []delivery[receipt]{d(15, 0, false), d(20, 0, false)}, false},
		{"remade consumer", Progress{Seq: 10}, []delivery[receipt]{d(11, 0, true)}, true},
		{"jump while behind", Progress{Seq: 10, Pending: 3}, []delivery[receipt]{d(14, 2, false)}, true},
		{"jump inside the batch while behind", Progress{Seq: 10}, []delivery[receipt]{d(11, 2, false), d(13, 1, false)}, true},
		{"no jump while behind", Progress{Seq: 10, Pending: 2}, []delivery[receipt]{d(11, 1, false), d(12, 0, false)}, false},
	} {
		if got := receiptGapSuspect(tc.prev, tc.ds); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHandoff_GrowsWhileApplierBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The applier is busy (it takes nothing) while 50 messages arrive,
		// all with more pending: the reader keeps filling past the gather
		// target (10) up to the limit (40) and waits there; the applier's
		// next take gets all 40, one larger commit instead of four.
		pendings := make([]uint64, 50)
		for i := range pendings {
			pendings[i] = uint64(len(pendings) - 1 - i)
		}
		q := newHandoff[int](10, 40, time.Minute)
		go func() { q.finish(handoffReader(t.Context(), q, pendings)) }()
		synctest.Wait() // the reader is blocked: the batch is at its limit
		q.mu.Lock()
		filled := len(q.fill.ds)
		q.mu.Unlock()
		if filled != 40 {
			t.Fatalf("reader stopped at %d while the applier was busy, want 40", filled)
		}
		sizes, err := takeAll(t, q)
		if err == nil || sum(sizes) != 50 || sizes[0] != 40 {
			t.Fatalf("took %v (%v), want 40 first, all 50, then the reader's error", sizes, err)
		}
	})
}
