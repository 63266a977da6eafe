package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// poison publishes, on subjects of tenant t1, what a hostile client could
// make the server write there (issue 13): garbage, another tenant's change,
// a change of another document of the tenant at a high version, and
// returns how many it published.
func poison(tb testing.TB, js jetstream.Publisher) int {
	tb.Helper()
	pub := func(subject string, b []byte) {
		tb.Helper()
		if _, err := js.Publish(tb.Context(), subject, b); err != nil {
			tb.Fatal(err)
		}
	}
	enc := func(ch *events.Change) []byte {
		b, err := events.EncodeChange(ch)
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	pub(events.ChangeSubject("t1", "c", "g"), []byte(`{"type":"io.nats.jetstream.api.v1.stream_info_response"}`))
	pub(events.ChangeSubject("t1", "c", "n2"), enc(testChange("t2", "c", "x", 1, 666)))
	pub(events.ChangeSubject("t1", "c", "n3"), enc(testChange("t1", "c", "a", 99, 666)))
	return 3
}

// TestReplica_QuarantinesForeignAndUnreadable: changes and receipts on the
// replica's own subjects whose payload is garbage or not the subject's
// (another tenant's, another document's) are quarantined: never applied,
// counted in Status with the reason, and the replica keeps syncing every
// other document and its own writes' receipts. A later valid change of a
// poisoned subject still applies, and the document the foreign payload
// named is not moved to its version.
func TestReplica_QuarantinesForeignAndUnreadable(t *testing.T) {
	_, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	publishChange(t, js, testChange("t1", "c", "a", 1, 1))
	n := poison(t, js)
	publishChange(t, js, testChange("t1", "c", "b", 1, 2))

	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "me", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Put(ctx, "c", "mine", events.Fields{"n": json.RawMessage(`7`)}); err != nil {
		t.Fatal(err)
	}
	e := waitPublished(t, r, 1)[0].Event
	// Receipts: garbage and another client's on this client's subject,
	// then the real one.
	if _, err := js.Publish(ctx, events.ReceiptSubject("t1", "me"), []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	b, _ := events.EncodeReceipt(&events.Receipt{Schema: events.SchemaVersion, Event: e.ID, Tenant: "t2", Client: "eve",
		Seq: e.Seq, Collection: e.Collection, Doc: e.Doc, Outcome: events.OutcomeApplied, Version: 1})
	if _, err := js.Publish(ctx, events.ReceiptSubject("t1", "me"), b); err != nil {
		t.Fatal(err)
	}
	n += 2
	publishReceipt(t, js, e, events.OutcomeRejected, 0)

	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if _, err := r.Sync(sctx); err != nil {
		t.Fatalf("sync with poisoned subjects: %v", err)
	}
	st := r.Status()
	if !st.Online || st.Err != nil {
		t.Errorf("status online %v, err %v: a quarantine must not stop a follower", st.Online, st.Err)
	}
	if st.Quarantined != n || !errors.Is(st.LastQuarantine, ErrQuarantined) {
		t.Errorf("status quarantined %d (last %v), want %d wrapping ErrQuarantined", st.Quarantined, st.LastQuarantine, n)
	}
	if !errors.Is(st.LastQuarantine, ErrSubjectMismatch) {
		t.Errorf("last quarantine %v: want the receipt of another client (ErrSubjectMismatch)", st.LastQuarantine)
	}
	if st.Pending != 0 || st.Rejections != 1 {
		t.Errorf("status pending %d, rejections %d: want the write settled by its real receipt", st.Pending, st.Rejections)
	}
	for id, v := range map[string]uint64{"a": 1, "b": 1} {
		if d, err := r.Get(ctx, "c", id); err != nil || d.Version != v {
			t.Errorf("doc %s: %+v, %v; want v%d", id, d, err, v)
		}
	}
	for _, id := range []string{"g", "n2", "n3", "x"} {
		if _, err := r.Get(ctx, "c", id); !errors.Is(err, ErrNotFound) {
			t.Errorf("doc %s: %v, want ErrNotFound (a quarantined payload is never applied)", id, err)
		}
	}

	// Later valid changes of a poisoned subject and of the document the
	// foreign payload named both apply.
	publishChange(t, js, testChange("t1", "c", "n2", 1, 3))
	publishChange(t, js, testChange("t1", "c", "a", 2, 4))
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for id, v := range map[string]uint64{"a": 2, "n2": 1} {
		if d, err := r.Get(ctx, "c", id); err != nil || d.Version != v {
			t.Errorf("doc %s after valid changes: %+v, %v; want v%d", id, d, err, v)
		}
	}
	// Garbage and foreign payloads can never become usable: they are
	// counted, not kept, so whoever writes them cannot grow the store.
	if k := quarantineKeys(t, r); k != 0 {
		t.Errorf("%d quarantined messages kept, want 0", k)
	}
}

// TestSubscribe_QuarantinesForeignAndUnreadable: a durable subscription
// and a watcher skip (and count) poisoned changes; their handler sees only
// the changes that are their subject's.
func TestSubscribe_QuarantinesForeignAndUnreadable(t *testing.T) {
	_, _, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	publishChange(t, js, testChange("t1", "c", "a", 1, 1))
	n := poison(t, js)
	publishChange(t, js, testChange("t1", "c", "b", 1, 2))

	var mu sync.Mutex
	seen := map[string][]string{}
	handler := func(who string) Handler {
		return func(_ context.Context, ch *events.Change) error {
			mu.Lock()
			seen[who] = append(seen[who], ch.Tenant+"/"+ch.Doc)
			mu.Unlock()
			return nil
		}
	}
	count := func(who string) int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen[who])
	}
	sub, err := Subscribe(ctx, js, SubscribeConfig{Tenant: "t1", Durable: "svc", Handler: handler("sub")})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()
	w, err := Watch(ctx, js, WatchConfig{Tenant: "t1", Handler: handler("watch")})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for _, q := range []struct {
		who string
		get func() (int, error)
	}{{"sub", sub.Quarantined}, {"watch", w.Quarantined}} {
		waitFor(t, 10*time.Second, q.who+" to read every change", func() bool { k, _ := q.get(); return count(q.who) == 2 && k == n })
		if k, last := q.get(); !errors.Is(last, ErrQuarantined) {
			t.Errorf("%s: quarantined %d, last %v: want ErrQuarantined", q.who, k, last)
		}
		mu.Lock()
		if got := seen[q.who]; got[0] != "t1/a" || got[1] != "t1/b" {
			t.Errorf("%s handled %v, want t1/a and t1/b only", q.who, got)
		}
		mu.Unlock()
	}
}
