package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// TestReplica_QuarantinesUnreadableChange: a change the replica cannot read
// (a schema from a newer server) is quarantined, not applied and not a
// reason to stop: the changes after it apply, Sync completes, Status says
// what was set aside. The quarantine is read again at the next start: a
// message the stream still holds and the replica can now read (here, a
// getter standing in for an upgraded client) is applied then, so the
// document does not stay stale for good (invariant 3).
func TestReplica_QuarantinesUnreadableChange(t *testing.T) {
	_, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := testChange("t1", "c", "a", 1, 1)
	publishChange(t, js, a)
	bad := []byte(`{"schema":99,"tenant":"t1","collection":"c","doc":"b","version":1,"fields":{"n":2}}`)
	ack, err := js.Publish(ctx, events.ChangeSubject("t1", "c", "b"), bad)
	if err != nil {
		t.Fatal(err)
	}
	c := testChange("t1", "c", "c", 1, 3)
	publishChange(t, js, c)

	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Sync(ctx); err != nil {
		t.Fatalf("sync past an unreadable change: %v", err)
	}
	st := r.Status()
	if !st.Online || st.Err != nil {
		t.Errorf("status online %v, err %v: want the follower running", st.Online, st.Err)
	}
	if st.Quarantined != 1 || !errors.Is(st.LastQuarantine, ErrQuarantined) || !errors.Is(st.LastQuarantine, ErrUnreadable) ||
		!errors.Is(st.LastQuarantine, events.ErrUnknownSchema) {
		t.Errorf("status quarantined %d, last %v: want 1, wrapping ErrQuarantined, ErrUnreadable and ErrUnknownSchema", st.Quarantined, st.LastQuarantine)
	}
	for id, ch := range map[string]*events.Change{"a": a, "c": c} {
		if d, err := r.Get(ctx, "c", id); err != nil || d.Version != ch.Version {
			t.Errorf("doc %s: %+v %v, want v%d", id, d, err, ch.Version)
		}
	}
	if _, err := r.Get(ctx, "c", "b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unreadable doc b: %v, want ErrNotFound", err)
	}

	if k := quarantineKeys(t, r); k != 1 {
		t.Fatalf("%d quarantined messages kept, want the one of a newer schema", k)
	}

	// An upgraded client reads the same message: the retry applies it.
	good := testChange("t1", "c", "b", 1, 2)
	gb, _ := events.EncodeChange(good)
	r.retryQuarantinedChanges(ctx, fakeGetter{ack.Sequence: {Subject: events.ChangeSubject("t1", "c", "b"), Sequence: ack.Sequence, Data: gb}})
	if d, err := r.Get(ctx, "c", "b"); err != nil || d.Version != 1 || string(d.Fields["n"]) != "2" {
		t.Fatalf("doc b after the retry: %+v, %v", d, err)
	}
	if k := quarantineKeys(t, r); k != 0 {
		t.Errorf("%d quarantined messages kept after the retry applied the only one", k)
	}

	// A newer-schema change the server replaces with a readable one is
	// forgotten at the next start, and the replacement applies.
	bad2 := []byte(`{"schema":99,"tenant":"t1","collection":"c","doc":"e","version":1}`)
	if _, err := js.Publish(ctx, events.ChangeSubject("t1", "c", "e"), bad2); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if k := quarantineKeys(t, r); k != 1 {
		t.Fatalf("%d quarantined messages kept, want 1", k)
	}
	publishChange(t, js, testChange("t1", "c", "e", 1, 5))
	if err := r.Attach(ctx, nc); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if d, err := r.Get(ctx, "c", "e"); err != nil || d.Version != 1 {
		t.Errorf("doc e after its readable change: %+v, %v", d, err)
	}
	if k := quarantineKeys(t, r); k != 0 {
		t.Errorf("%d quarantined messages kept after CHANGES replaced the only one", k)
	}
}

// fakeGetter serves messages by sequence; any other is not found.
type fakeGetter map[uint64]*jetstream.RawStreamMsg

func (f fakeGetter) GetMsg(_ context.Context, seq uint64, _ ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	if m, ok := f[seq]; ok {
		return m, nil
	}
	return nil, jetstream.ErrMsgNotFound
}

// quarantineKeys counts the quarantined messages r keeps.
func quarantineKeys(tb testing.TB, r *Replica) int {
	tb.Helper()
	n := 0
	if err := r.log.View(context.Background(), func(tx *producer.Tx) error {
		n = tx.Bucket(bucketQuarantine).KeyN()
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestReplica_ConcurrentAttach: concurrent Attach calls leave exactly one
// attachment running; Close stops it. Each Attach used to detach outside the
// lock and then install its link over whatever another had installed,
// leaking that link's publisher and followers for good.
func TestReplica_ConcurrentAttach(t *testing.T) {
	_, nc, _ := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if err := r.Attach(ctx, nc); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := r.links.Load(); n != 1 {
		t.Errorf("%d attachments running after concurrent Attach, want 1", n)
	}
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n := r.links.Load(); n != 0 {
		t.Errorf("%d attachments running after Close, want 0", n)
	}
}

// TestReplica_QuietClientNoReceiptResync: a replica whose receipt cursor is
// below RECEIPTS' first sequence, because other clients' receipts came and
// went while it had nothing outstanding, lost nothing: no resync is
// reported and nothing is republished. The cursor comparison alone used to
// report a "receipts lost" resync at every start of such a client.
func TestReplica_QuietClientNoReceiptResync(t *testing.T) {
	_, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "quiet"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s, err := js.Stream(ctx, events.StreamReceipts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := js.Publish(ctx, events.ReceiptSubject("t1", "other"), []byte(`{}`)); err != nil {
			t.Fatalf("publish receipt %d: %v", i, err)
		}
	}
	// The replica read up to sequence 2 once; then everything expired.
	created := createdNano(s.CachedInfo().Created)
	if err := r.log.Update(ctx, func(tx *producer.Tx) error {
		return putCursor(tx, events.StreamReceipts, cursor{Seq: 2, Created: created})
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Attach(ctx, nc); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the receipts follower to start", func() bool { return r.Status().Receipts.Seq >= 5 })
	if st := r.Status(); st.Resyncs != 0 || st.LastResync != nil || rep.Resynced {
		t.Errorf("quiet client resynced: status %+v, report %+v", st, rep)
	}
	if rep.Pushed != 0 {
		t.Errorf("quiet client pushed %d events", rep.Pushed)
	}
}

// TestReplica_DuplicateOfLostRejection: a write rejected while its writer
// was away longer than RECEIPTS keeps receipts is republished on return and
// answered "duplicate". The replica never saw a change it caused, so it
// cannot tell applied from rejected: the write is recorded as a Rejection
// with outcome duplicate and an unknown-fate reason, not dropped from the
// overlay in silence (invariant 1).
func TestReplica_DuplicateOfLostRejection(t *testing.T) {
	s := embeddedtest.MustStart(t, fastSync)
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// A short dedupe window, so the republish reaches the projector's own
	// duplicate check as it does after days away.
	const window = 100 * time.Millisecond
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{DedupeWindow: window}); err != nil {
		t.Fatal(err)
	}
	server := mustProjector(t, js, testPolicies())
	open := func(client string) *node {
		r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: client, Policies: testPolicies()})
		if err != nil {
			t.Fatal(err)
		}
		n := &node{r: r}
		t.Cleanup(func() { n.offline(); r.Close() })
		return n
	}
	a, b := open("a"), open("b")
	a.online(t, s)
	b.online(t, s)
	if _, err := a.r.Put(ctx, "reject", "d", events.Fields{"v": json.RawMessage(`0`)}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{a, b} {
		if _, err := n.r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	a.offline()
	if _, err := b.r.Put(ctx, "reject", "d", events.Fields{"x": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.r.Put(ctx, "reject", "d", events.Fields{"a": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	es, err := a.r.Log().Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := es[len(es)-1].Event.ID

	// A's write goes out (a publisher on A's log, not attached, so A reads
	// no receipt) and is rejected; then its receipt expires.
	nc2 := embeddedtest.MustConnect(t, s)
	js2 := embeddedtest.MustJetStream(t, nc2)
	pub, err := producer.NewPublisher(a.r.Log(), js2, nc2, producer.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	published := time.Now()
	rs, err := js.Stream(ctx, events.StreamReceipts)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "A's write to be rejected", func() bool {
		m, err := rs.GetLastMsgForSubject(ctx, events.DeviceReceiptSubject("t1", "a", a.r.Log().Device()))
		if err != nil {
			return false
		}
		rc, err := events.DecodeReceipt(m.Data)
		return err == nil && rc.Event == id && rc.Outcome == events.OutcomeRejected
	})
	if err := rs.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the dedupe window to pass", func() bool { return time.Since(published) > 10*window })

	a.online(t, s)
	rep, err := a.r.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rejs, err := a.r.Rejections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rejs) != 1 || rejs[0].Event != id || rejs[0].Outcome != events.OutcomeDuplicate || rejs[0].Reason == "" {
		t.Fatalf("rejections %+v: want %s recorded as of unknown fate", rejs, id)
	}
	if rep.Rejected != 1 {
		t.Errorf("sync reported %d rejected, want 1", rep.Rejected)
	}
	want, err := server.Get(ctx, events.DocAddress{Tenant: "t1", Collection: "reject", Doc: "d"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := a.r.Get(ctx, "reject", "d")
	if err != nil {
		t.Fatal(err)
	}
	if d.Version != want.Version || d.Pending != 0 || !fieldsEqual(d.Fields, want.Fields) {
		t.Errorf("A's view %+v, want the server's v%d %s", d, want.Version, want.Fields)
	}
}
