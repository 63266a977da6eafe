package consumer

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
	"github.com/ebbsync/ebb/projection"
)

// startProjector runs a projector on js and store until the test ends or
// the caller closes it.
func startProjector(tb testing.TB, js jetstream.JetStream, store projection.Store) *projection.Projector {
	tb.Helper()
	pr, err := projection.New(js, store, projection.Config{Policies: testPolicies()})
	if err != nil {
		tb.Fatal(err)
	}
	if err := pr.Start(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = pr.Close() })
	return pr
}

// TestReplica_ReceiptLostWhileAttached: a replica stays attached while its
// connection drops; meanwhile the projector rejects its write and the
// receipt is purged from RECEIPTS before the replica reconnects. nats.go's
// ordered consumer resumes by itself after the gap, and no later receipt
// comes. Sync still completes, and the write is not silently pending: it is
// a visible Rejection (its fate cannot be known for sure: the republish
// falls inside EVENTS' dedupe window, so no new receipt answers it). Sync
// finds the gap itself; without a Sync, the periodic check does.
func TestReplica_ReceiptLostWhileAttached(t *testing.T) {
	t.Run("sync", func(t *testing.T) { testReceiptLostWhileAttached(t, false) })
	t.Run("periodic", func(t *testing.T) { testReceiptLostWhileAttached(t, true) })
}

func testReceiptLostWhileAttached(t *testing.T, periodic bool) {
	s, _, js := mustServer(t)
	store, err := projection.OpenBolt(filepath.Join(t.TempDir(), "view.db"), projection.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	pr := startProjector(t, js, store)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// A's connection reconnects only once the gate opens.
	gate := make(chan struct{})
	opened := false
	open := func() {
		if !opened {
			opened = true
			close(gate)
		}
	}
	t.Cleanup(open)
	ncA, err := s.Connect(nats.MaxReconnects(-1), nats.CustomReconnectDelay(func(int) time.Duration { <-gate; return time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ncA.Close)
	cfg := ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "a", Policies: testPolicies(), Conn: ncA, GapCheckInterval: time.Hour}
	if periodic {
		cfg.GapCheckInterval = 50 * time.Millisecond
	}
	a, err := OpenReplica(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := &node{}
	if b.r, err = OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "b", Policies: testPolicies()}); err != nil {
		t.Fatal(err)
	}
	defer b.r.Close()
	b.online(t, s)
	defer b.offline()

	if _, err := a.Put(ctx, "reject", "d", events.Fields{"v": json.RawMessage(`0`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// A goes offline and writes on v1 while B moves the document to v2: A's
	// write will be rejected.
	a.Detach()
	if _, err := b.r.Put(ctx, "reject", "d", events.Fields{"x": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Patch(ctx, "reject", "d", events.Fields{"a": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}

	// With the projector stopped, A attaches and publishes its write.
	if err := pr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Attach(ctx, ncA); err != nil {
		t.Fatal(err)
	}
	e := waitPublished(t, a, 1)[0].Event
	rs, err := js.Stream(ctx, events.StreamReceipts)
	if err != nil {
		t.Fatal(err)
	}
	before := rs.CachedInfo().State.LastSeq

	// A's connection drops (A stays attached); the projector rejects the
	// write and its receipt is purged before A is back.
	cid, err := ncA.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.NATS().DisconnectClientByID(cid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "A's connection to drop", func() bool { return !ncA.IsConnected() })
	startProjector(t, js, store)
	waitFor(t, 20*time.Second, "the projector's receipt for A's write", func() bool {
		info, err := rs.Info(ctx)
		return err == nil && info.State.LastSeq > before
	})
	if err := rs.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	open()
	waitFor(t, 10*time.Second, "A to reconnect", ncA.IsConnected)
	if periodic {
		waitFor(t, 10*time.Second, "the lost receipt to show without a Sync", func() bool { return a.Status().Rejections == 1 })
	}

	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	if _, err := a.Sync(sctx); err != nil {
		t.Fatalf("sync after the lost receipt: %v (write %s stayed pending)", err, e.ID)
	}
	st := a.Status()
	if st.Pending != 0 {
		t.Errorf("pending %d after sync, want 0", st.Pending)
	}
	rejs, err := a.Rejections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rejs) != 1 || rejs[0].Event != e.ID || !strings.Contains(rejs[0].Reason, "fate unknown") {
		t.Fatalf("rejections %+v: want one of unknown fate for %s", rejs, e.ID)
	}
	if st.Resyncs == 0 {
		t.Errorf("status %+v: the lost receipts are not reported", st)
	}
	d, err := a.Get(ctx, "reject", "d")
	if err != nil || d.Version != 2 || d.Pending != 0 || string(d.Fields["x"]) != "1" {
		t.Fatalf("A's view %+v, %v: want the server's v2", d, err)
	}
}

// TestReplica_RepublishDroppedWaitsForKeptReceipt: a replica whose RECEIPTS
// cursor fell behind the stream (other clients' receipts were removed)
// republishes its outstanding write; JetStream drops the republish as a
// duplicate, but the write's first receipt is still in the stream after the
// cursor. The write is settled by that receipt, never reported as a
// rejection of unknown fate on the way.
func TestReplica_RepublishDroppedWaitsForKeptReceipt(t *testing.T) {
	_, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "a", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Put(ctx, "c", "d", events.Fields{"n": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	e := waitPublished(t, r, 1)[0].Event
	r.Detach()
	other := *e
	other.Client = "other"
	for range 3 {
		publishReceipt(t, js, &other, events.OutcomeApplied, 1)
	}
	publishReceipt(t, js, e, events.OutcomeApplied, 1)
	ch := testChange("t1", "c", "d", 1, 1)
	ch.Event, ch.Client, ch.Seq = e.ID, "a", e.Seq
	publishChange(t, js, ch)
	rs, err := js.Stream(ctx, events.StreamReceipts)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Purge(ctx, jetstream.WithPurgeSubject(events.ReceiptSubject("t1", "other"))); err != nil {
		t.Fatal(err)
	}

	if err := r.Attach(ctx, nc); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rejected != 0 || r.Status().Rejections != 0 || r.Status().Pending != 0 {
		t.Fatalf("report %+v, status %+v: want the write settled by its kept receipt, no rejection", rep, r.Status())
	}
	es, err := r.Log().Entries(ctx, producer.StateSettled)
	if err != nil || len(es) != 1 || es[0].Outcome != events.OutcomeApplied {
		t.Fatalf("settled %+v, %v: want the write applied", es, err)
	}
}

// TestReplica_ReceiptLostBeforeALaterOne: a write's receipt is removed
// from RECEIPTS after the follower's start checked the stream and before
// its consumer read it (here: between the two; in the model test, a purge
// right after an attach), and a receipt of a later write of the replica
// follows. The follower's first delivery is that later receipt, from a
// consumer nobody remade, with nothing pending before it: the cursor moved
// past the lost receipt, so no later check found the stream behind, and
// the first write stayed published with no receipt forever (issue 11's
// seed 1 and 3: "0 resyncs", Sync times out). The jump over a write still
// waiting is checked: the write is republished (JetStream drops it inside
// its window) and settled as of unknown fate; Sync completes.
func TestReplica_ReceiptLostBeforeALaterOne(t *testing.T) {
	_, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "a", Conn: nc, GapCheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Put(ctx, "c", "d1", events.Fields{"n": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Put(ctx, "c", "d2", events.Fields{"n": json.RawMessage(`2`)}); err != nil {
		t.Fatal(err)
	}
	es := waitPublished(t, r, 2)
	first, second := es[0].Event, es[1].Event
	if first.Seq > second.Seq {
		first, second = second, first
	}
	r.Detach()

	var once sync.Once
	beforeConsumer = func(stream string) {
		if stream != events.StreamReceipts {
			return
		}
		once.Do(func() { // on the follower's goroutine: t.Error, not t.Fatal
			receipt := func(e *events.Event) error {
				b, err := events.EncodeReceipt(&events.Receipt{Schema: events.SchemaVersion, Event: e.ID, Tenant: e.Tenant, Client: e.Client,
					Device: e.Device, Seq: e.Seq, Collection: e.Collection, Doc: e.Doc, Outcome: events.OutcomeApplied, Version: 1})
				if err == nil {
					_, err = js.Publish(ctx, e.ReceiptSubject(), b)
				}
				return err
			}
			ch := testChange("t1", "c", "d2", 1, 2)
			ch.Event, ch.Client, ch.Seq = second.ID, "a", second.Seq
			rs, err := js.Stream(ctx, events.StreamReceipts)
			if err == nil {
				err = receipt(first)
			}
			if err == nil {
				err = rs.Purge(ctx)
			}
			if err == nil {
				err = receipt(second)
			}
			if err == nil {
				var b []byte
				if b, err = events.EncodeChange(ch); err == nil {
					_, err = js.Publish(ctx, events.ChangeSubject("t1", "c", "d2"), b)
				}
			}
			if err != nil {
				t.Errorf("lose the first receipt: %v", err)
			}
		})
	}
	t.Cleanup(func() { beforeConsumer = nil })
	if err := r.Attach(ctx, nc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the later write settled by its receipt", func() bool {
		es, err := r.Log().Entries(ctx, producer.StateSettled)
		return err == nil && slices.ContainsFunc(es, func(e producer.Entry) bool { return e.Event.ID == second.ID })
	})
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if _, err := r.Sync(sctx); err != nil {
		t.Fatalf("sync: %v (write %s stayed pending: its lost receipt was stepped over)", err, first.ID)
	}
	st := r.Status()
	if st.Pending != 0 || st.Resyncs == 0 {
		t.Errorf("status %+v: want nothing pending and the lost receipt reported", st)
	}
	rejs, err := r.Rejections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rejs) != 1 || rejs[0].Event != first.ID || !strings.Contains(rejs[0].Reason, "fate unknown") {
		t.Fatalf("rejections %+v: want one of unknown fate for %s", rejs, first.ID)
	}
}

// lockedBuffer is an io.Writer safe for the replica's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestReplica_FailedRepublishIsRetried: a RECEIPTS start finds receipts
// gone and moves its cursor past them, but the republish of the write
// whose receipt may be among them fails (here EVENTS refuses it; a detach
// or a kill in between does the same). The next start found the cursor in
// place and never republished: the write waited for a receipt forever.
// What to republish is stored with the cursor and republished by the next
// start.
func TestReplica_FailedRepublishIsRetried(t *testing.T) {
	_, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "a", Conn: nc, GapCheckInterval: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Put(ctx, "c", "d", events.Fields{"n": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	e := waitPublished(t, r, 1)[0].Event
	r.Detach()
	publishReceipt(t, js, e, events.OutcomeApplied, 1)
	rs, err := js.Stream(ctx, events.StreamReceipts)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	// EVENTS again, empty, refusing every event for now.
	es, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	cfg := es.CachedInfo().Config
	if err := js.DeleteStream(ctx, events.StreamEvents); err != nil {
		t.Fatal(err)
	}
	refusing := cfg
	refusing.MaxMsgSize = 1
	if _, err := js.CreateStream(ctx, refusing); err != nil {
		t.Fatal(err)
	}

	if err := r.Attach(ctx, nc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the republish to fail", func() bool {
		return strings.Contains(logs.String(), "republish event "+e.ID)
	})
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the write republished into EVENTS", func() bool {
		s, err := js.Stream(ctx, events.StreamEvents)
		if err != nil {
			return false
		}
		m, err := s.GetLastMsgForSubject(ctx, e.Subject())
		return err == nil && m.Header.Get(jetstream.MsgIDHeader) == e.ID
	})
}

// TestReplica_DetachWhileConsumerRemade: the ordered consumer remakes its
// server consumer inside Next, retrying until it is stopped (here RECEIPTS
// was deleted, so every attempt fails; a server down does the same).
// Detach cancelled the follower's context, which Next does not watch while
// remaking, and waited for the reader: it never returned (seen in the
// model test as an agent with no reply to attach). The session stops the
// iterator when its context ends.
func TestReplica_DetachWhileConsumerRemade(t *testing.T) {
	s, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "a", Conn: nc, GapCheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	apiErrors := func() uint64 {
		jsz, err := s.NATS().Jsz(nil)
		if err != nil {
			t.Fatal(err)
		}
		return jsz.API.Errors
	}
	if err := js.DeleteStream(ctx, events.StreamReceipts); err != nil {
		t.Fatal(err)
	}
	before := apiErrors()
	waitFor(t, 15*time.Second, "the ordered consumer failing to remake its consumer", func() bool { return apiErrors() > before })

	done := make(chan struct{})
	go func() { defer close(done); r.Detach() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Detach did not return while the ordered consumer was remaking its consumer")
	}
}
