package consumer

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ebbsync/ebb/producer"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/feed"
	"github.com/ebbsync/ebb/events"
)

var (
	annP = events.UserPrincipal("ann")
	bobP = events.UserPrincipal("bob")
	redP = events.GroupPrincipal("red")
)

// publishAudience publishes ch to CHANGES with the audience headers the
// projector writes under sync rules (nil: no header).
func publishAudience(tb testing.TB, js jetstream.JetStream, ch *events.Change, readers, was []string) uint64 {
	tb.Helper()
	b, err := events.EncodeChange(ch)
	if err != nil {
		tb.Fatal(err)
	}
	m := nats.NewMsg(events.ChangeSubject(ch.Tenant, ch.Collection, ch.Doc))
	m.Data = b
	if readers != nil {
		m.Header.Set(events.HeaderReaders, events.EncodeAudience(readers))
	}
	if was != nil {
		m.Header.Set(events.HeaderWasReaders, events.EncodeAudience(was))
	}
	ack, err := js.PublishMsg(tb.Context(), m)
	if err != nil {
		tb.Fatal(err)
	}
	return ack.Sequence
}

// startResponder serves the change feed on nc: ann is in group red, bob in
// none.
func startResponder(tb testing.TB, nc *nats.Conn, js jetstream.JetStream) {
	tb.Helper()
	ids := func(tenant, user string) ([]string, bool) {
		switch {
		case tenant == "acme" && user == "ann":
			return []string{"red"}, true
		case tenant == "acme" && user == "bob":
			return nil, true
		}
		return nil, false
	}
	resp, err := feed.Serve(nc, js, ids, feed.ResponderConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = resp.Close() })
}

// openRulesReplica opens ann's replica over the change feed (without auth
// the replica asks on the subject auth would route its requests to).
func openRulesReplica(tb testing.TB, dir string, nc *nats.Conn) *Replica {
	tb.Helper()
	r, err := OpenReplica(tb.Context(), ReplicaConfig{Dir: dir, Tenant: "acme", Client: "ann", Conn: nc,
		RulesFeed: feed.UserSubject("ann", "acme")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = r.Close() })
	return r
}

func syncWithin(tb testing.TB, r *Replica) SyncReport {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 20*time.Second)
	defer cancel()
	rep, err := r.Sync(ctx)
	if err != nil {
		tb.Fatalf("sync: %v", err)
	}
	return rep
}

func docIDs(tb testing.TB, r *Replica, coll string) string {
	tb.Helper()
	ds, err := r.List(tb.Context(), coll, false)
	if err != nil {
		tb.Fatal(err)
	}
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	return fmt.Sprint(ids)
}

func changesCursor(tb testing.TB, r *Replica) cursor {
	tb.Helper()
	var c cursor
	if err := r.log.View(context.Background(), func(tx *producer.Tx) (err error) {
		c, err = getCursor(tx, events.StreamChanges)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	return c
}

// TestReplicaRules_ConvergesOnVisibleDocs: a replica over the change feed
// holds exactly the documents its user may read (its own, its group's,
// unruled ones), each applied once, and its cursor stands past the last
// change of the tenant, the skipped ones included.
func TestReplicaRules_ConvergesOnVisibleDocs(t *testing.T) {
	_, nc, js := mustServer(t)
	startResponder(t, nc, js)
	publishAudience(t, js, testChange("acme", "lists", "anns", 1, 1), []string{annP}, nil)
	publishAudience(t, js, testChange("acme", "lists", "bobs", 1, 2), []string{bobP}, nil)
	publishAudience(t, js, testChange("acme", "lists", "reds", 1, 3), []string{redP}, nil)
	publishAudience(t, js, testChange("acme", "notes", "open", 1, 4), nil, nil)
	last := publishAudience(t, js, testChange("acme", "lists", "bobs2", 1, 5), []string{bobP}, nil)
	publishAudience(t, js, testChange("other", "lists", "x", 1, 6), nil, nil)

	r := openRulesReplica(t, t.TempDir(), nc)
	rep := syncWithin(t, r)
	if got := docIDs(t, r, "lists"); got != "[anns reds]" {
		t.Fatalf("lists %s, want [anns reds]", got)
	}
	if got := docIDs(t, r, "notes"); got != "[open]" {
		t.Fatalf("notes %s, want [open]", got)
	}
	if _, err := r.Get(t.Context(), "lists", "bobs"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bob's list on ann's replica: %v", err)
	}
	if rep.Pulled != 3 {
		t.Fatalf("pulled %d changes, want 3 (each visible one once)", rep.Pulled)
	}
	// Sync waits for the last change the user may read (4); the cursor-only
	// delivery past the skipped one after it commits on its own, possibly
	// just after Sync returned.
	waitFor(t, 10*time.Second, fmt.Sprintf("the cursor at sequence %d with the stream's creation", last), func() bool {
		c := changesCursor(t, r)
		return c.Seq == last && c.Created != 0
	})
	// Live: a new visible change arrives, an invisible one does not.
	publishAudience(t, js, testChange("acme", "lists", "bobs3", 1, 7), []string{bobP}, nil)
	publishAudience(t, js, testChange("acme", "lists", "anns2", 1, 8), []string{annP}, nil)
	waitFor(t, 10*time.Second, "ann's new list", func() bool { return docIDs(t, r, "lists") == "[anns anns2 reds]" })
}

// TestReplicaRules_LeftRemovesLocalCopy: a Left notice removes the
// document from the replica; a write pending on it stays pending (its
// receipt will tell its fate); a later change bringing it back applies.
func TestReplicaRules_LeftRemovesLocalCopy(t *testing.T) {
	_, nc, js := mustServer(t)
	startResponder(t, nc, js)
	publishAudience(t, js, testChange("acme", "lists", "anns", 1, 1), []string{annP}, nil)
	publishAudience(t, js, testChange("acme", "lists", "reds", 1, 2), []string{redP}, nil)
	r := openRulesReplica(t, t.TempDir(), nc)
	syncWithin(t, r)
	if got := docIDs(t, r, "lists"); got != "[anns reds]" {
		t.Fatalf("lists %s", got)
	}
	publishAudience(t, js, testChange("acme", "lists", "anns", 2, 1), []string{bobP}, []string{annP})
	syncWithin(t, r)
	if _, err := r.Get(t.Context(), "lists", "anns"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a document that left ann's view is still on her replica: %v", err)
	}
	// A pending write on a document that then leaves the view stays.
	if _, err := r.Put(t.Context(), "lists", "reds", events.Fields{"n": []byte("9")}); err != nil {
		t.Fatal(err)
	}
	publishAudience(t, js, testChange("acme", "lists", "reds", 2, 2), []string{bobP}, []string{redP})
	seq := changesCursor(t, r).Seq
	waitFor(t, 10*time.Second, "the Left notice of reds applied", func() bool {
		var v uint64
		_ = r.log.View(t.Context(), func(tx *producer.Tx) error { v = syncedVersion(tx, docKey("lists", "reds")); return nil })
		return v == 0 && changesCursor(t, r).Seq > seq // forgotten, not a tombstone
	})
	// The document is gone from the view; the write stays in the log,
	// pending, until its receipt says what became of it.
	if st := r.Status(); st.Pending != 1 {
		t.Fatalf("pending writes after reds left the view: %d, want the write kept pending", st.Pending)
	}
	if _, err := r.Get(t.Context(), "lists", "reds"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("reds left the view but Get finds it: %v", err)
	}
	// Back in view at version 3: applies.
	publishAudience(t, js, testChange("acme", "lists", "anns", 3, 5), []string{annP}, []string{bobP})
	waitFor(t, 10*time.Second, "anns back in view", func() bool {
		d, err := r.Get(t.Context(), "lists", "anns")
		return err == nil && d.Version == 3
	})
}

// TestReplicaRules_ResumesFromCursor: reopened, a replica over the feed
// resumes after its stored cursor: it applies only what came since, and
// none of what it had.
func TestReplicaRules_ResumesFromCursor(t *testing.T) {
	_, nc, js := mustServer(t)
	startResponder(t, nc, js)
	for i := range 5 {
		publishAudience(t, js, testChange("acme", "lists", fmt.Sprint("a", i), 1, i), []string{annP}, nil)
	}
	dir := t.TempDir()
	r := openRulesReplica(t, dir, nc)
	if rep := syncWithin(t, r); rep.Pulled != 5 {
		t.Fatalf("first sync pulled %d, want 5", rep.Pulled)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	publishAudience(t, js, testChange("acme", "lists", "b", 1, 1), []string{bobP}, nil)
	last := publishAudience(t, js, testChange("acme", "lists", "a5", 1, 5), []string{annP}, nil)
	r = openRulesReplica(t, dir, nc)
	if rep := syncWithin(t, r); rep.Pulled != 1 {
		t.Fatalf("sync after reopening pulled %d, want 1 (only the new change)", rep.Pulled)
	}
	if got := docIDs(t, r, "lists"); got != "[a0 a1 a2 a3 a4 a5]" {
		t.Fatalf("lists %s", got)
	}
	if c := changesCursor(t, r); c.Seq != last {
		t.Fatalf("cursor %d, want %d", c.Seq, last)
	}
}

// TestReplicaRules_ResyncsOnRecreatedChanges: CHANGES deleted and created
// again (stream_created moves) makes the replica over the feed start over.
func TestReplicaRules_ResyncsOnRecreatedChanges(t *testing.T) {
	_, nc, js := mustServer(t)
	startResponder(t, nc, js)
	publishAudience(t, js, testChange("acme", "lists", "old", 1, 1), []string{annP}, nil)
	publishAudience(t, js, testChange("acme", "lists", "old2", 1, 1), []string{annP}, nil)
	r := openRulesReplica(t, t.TempDir(), nc)
	syncWithin(t, r)
	if err := js.DeleteStream(t.Context(), events.StreamChanges); err != nil {
		t.Fatal(err)
	}
	if err := events.EnsureStreams(t.Context(), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	publishAudience(t, js, testChange("acme", "lists", "new", 1, 1), []string{annP}, nil)
	rep := syncWithin(t, r)
	if !rep.Resynced {
		t.Fatal("sync over a recreated CHANGES did not resync")
	}
	if got := docIDs(t, r, "lists"); got != "[new]" {
		t.Fatalf("lists %s after the resync, want [new]", got)
	}
}

// TestReplicaRules_RefusalDetected: the server's refusal of a direct read
// under sync rules is told from any other error.
func TestReplicaRules_RefusalDetected(t *testing.T) {
	refusal := &jetstream.APIError{Code: 403, ErrorCode: 10000, Description: "forbidden: this user reads CHANGES through sync rules"}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"refusal", refusal, true},
		{"wrapped refusal", fmt.Errorf("create ordered consumer: %w", refusal), true},
		{"other 403", &jetstream.APIError{Code: 403, Description: "forbidden"}, false},
		{"timeout", nats.ErrTimeout, false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		if got := refusedForRules(tt.err); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// refusingJS refuses ordered consumers on CHANGES as a server with sync
// rules refuses a client's direct read.
type refusingJS struct{ jetstream.JetStream }

func (j refusingJS) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	if stream == events.StreamChanges {
		return nil, &jetstream.APIError{Code: 403, ErrorCode: 10000, Description: "CHANGES is read through the change feed under sync rules"}
	}
	return j.JetStream.OrderedConsumer(ctx, stream, cfg)
}

// TestReplicaRules_SwitchesWhenRefused: a link whose direct read of
// CHANGES is refused with "sync rules" switches to the change feed by
// itself and converges on the visible documents.
func TestReplicaRules_SwitchesWhenRefused(t *testing.T) {
	_, nc, js := mustServer(t)
	startResponder(t, nc, js)
	publishAudience(t, js, testChange("acme", "lists", "anns", 1, 1), []string{annP}, nil)
	publishAudience(t, js, testChange("acme", "lists", "bobs", 1, 2), []string{bobP}, nil)
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "acme", Client: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	l := &link{nc: nc, js: refusingJS{js}, ready: make(chan struct{})}
	f := r.changesLink(l)
	if l.feed.active.Load() {
		t.Fatal("feed active before any refusal")
	}
	// Without auth nothing routes the default subject: ask on ann's.
	l.feed.subject = feed.UserSubject("ann", "acme")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitFor(t, 10*time.Second, "ann's list over the feed", func() bool { return docIDs(t, r, "lists") == "[anns]" })
	if !l.feed.active.Load() {
		t.Fatal("converged without switching to the feed")
	}
	select {
	case <-l.ready:
	default:
		t.Fatal("link not ready after the feed started")
	}
}

// A document that leaves a user's view and comes back without a new write
// (its parent's audience changed twice, so the projector re-published it at
// the same version) is on the replica again: the Left notice must not leave a
// record that makes the copy at the same version look already applied.
func TestReplicaRules_BackInViewAtSameVersion(t *testing.T) {
	_, nc, js := mustServer(t)
	startResponder(t, nc, js)
	publishAudience(t, js, testChange("acme", "todos", "t1", 2, 1), []string{annP}, nil)
	r := openRulesReplica(t, t.TempDir(), nc)
	syncWithin(t, r)
	if got := docIDs(t, r, "todos"); got != "[t1]" {
		t.Fatalf("todos %s", got)
	}
	publishAudience(t, js, testChange("acme", "todos", "t1", 2, 1), []string{bobP}, []string{annP})
	syncWithin(t, r)
	if _, err := r.Get(t.Context(), "todos", "t1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("t1 left ann's view but is still on her replica: %v", err)
	}
	publishAudience(t, js, testChange("acme", "todos", "t1", 2, 1), []string{annP}, []string{bobP})
	syncWithin(t, r)
	d, err := r.Get(t.Context(), "todos", "t1")
	if err != nil || d.Version != 2 {
		t.Fatalf("t1 back in ann's view at version 2: got %+v, %v", d, err)
	}
}
