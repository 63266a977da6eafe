package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/feed"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// feedRequests counts the change requests that reach the feed's subject
// (a plain subscriber beside the responder's queue group sees each).
func feedRequests(t *testing.T, nc *nats.Conn) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	sub, err := nc.Subscribe(feed.RequestSubject, func(*nats.Msg) { n.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &n
}

// fakeFeed answers every change request on nc with what answer makes of
// it (nil: no answer), its pages claiming CHANGES as the server has it
// now (its creation time), until the test ends; it returns how many
// requests came.
func fakeFeed(t *testing.T, nc *nats.Conn, js jetstream.JetStream, answer func(n int64, req feed.Request, created time.Time) *feed.Page) *atomic.Int64 {
	t.Helper()
	st, err := js.Stream(t.Context(), events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	created := st.CachedInfo().Created
	var asked atomic.Int64
	sub, err := nc.Subscribe(feed.RequestSubject, func(m *nats.Msg) {
		var req feed.Request
		_ = json.Unmarshal(m.Data, &req)
		if p := answer(asked.Add(1), req, created); p != nil {
			b, _ := json.Marshal(p)
			_ = m.Respond(b)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &asked
}

// serveFeed runs the change responder on nc as ebb serve does without
// auth or rules, until the test ends.
func serveFeed(t *testing.T, nc *nats.Conn, js jetstream.JetStream) {
	t.Helper()
	fr, err := feed.Serve(nc, js, func(string, string) ([]string, bool) { return nil, true }, feed.ResponderConfig{Unfiltered: true, Open: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fr.Close() })
}

// syncedBytes opens a replica of t1 on a connection of its own, syncs it
// and returns it with the bytes that connection received until Sync
// returned.
func syncedBytes(t *testing.T, s interface{ ClientURL() string }, dir string) (*Replica, uint64) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: dir, Tenant: "t1", Client: "alice", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	return r, nc.Stats().InBytes
}

// TestCatchUp_ThroughCompactFeed: with the server's change responder
// running (no auth, no rules: feed.ResponderConfig Open and Unfiltered), a
// fresh replica catches up on a backlog through compact pages, ends equal
// to the server view, in well under the bytes of a catch-up through
// CHANGES directly, and then follows CHANGES directly: a change written
// after it caught up arrives without another page request.
func TestCatchUp_ThroughCompactFeed(t *testing.T) {
	s, nc, js := mustServer(t)
	want := publishChanges(t, js, 2000, 2000)
	publishChange(t, js, testChange("t2", "c", "other-tenant", 1, 0))

	// Without a responder: directly.
	direct, directBytes := syncedBytes(t, s, t.TempDir())
	checkView(t, direct, want)

	serveFeed(t, nc, js)
	reqs := feedRequests(t, nc)
	r, feedBytes := syncedBytes(t, s, t.TempDir())
	checkView(t, r, want)
	if reqs.Load() < 2 {
		t.Fatalf("%d change requests: the catch-up did not read the feed", reqs.Load())
	}
	if feedBytes*10 > directBytes*6 {
		t.Fatalf("catch-up through the feed received %d bytes, directly %d: want at most 0.6 of it", feedBytes, directBytes)
	}
	t.Logf("catch-up of 2000 documents: %d bytes through the feed, %d directly (%d requests)", feedBytes, directBytes, reqs.Load())

	before := reqs.Load()
	ch := testChange("t1", "c", "doc-00007", 2, 77)
	publishChange(t, js, ch)
	want[ch.Doc] = ch
	waitFor(t, 10*time.Second, "the live change", func() bool {
		d, err := r.Get(t.Context(), "c", "doc-00007")
		return err == nil && d.Version == 2
	})
	if n := reqs.Load(); n != before {
		t.Fatalf("%d change requests after catching up: the live tail should follow CHANGES directly", n-before)
	}
	checkView(t, r, want)
}

// TestCatchUp_FilteredPageNotTakenForTheStream: a feed whose page does not
// say it is unfiltered (sync rules judged it for this reader, or a
// responder that predates the flag, whose pages were always filtered) is
// not used for the catch-up of a replica the server lets read CHANGES
// directly: it gets every document, not the page's one.
func TestCatchUp_FilteredPageNotTakenForTheStream(t *testing.T) {
	s, nc, js := mustServer(t)
	want := publishChanges(t, js, 50, 50)
	asked := fakeFeed(t, nc, js, func(_ int64, _ feed.Request, created time.Time) *feed.Page {
		c := testChange("t1", "c", "doc-00001", 1, 1)
		return &feed.Page{Changes: []feed.Entry{{Seq: 1, Change: c}}, LastSeq: 50, More: true,
			StreamState: feed.StreamState{FirstSeq: 1, StreamLastSeq: 50, StreamCreated: created}}
	})
	r, _ := syncedBytes(t, s, t.TempDir())
	checkView(t, r, want)
	if asked.Load() != 1 {
		t.Fatalf("the feed was asked %d times, want the one probe", asked.Load())
	}
}

// TestCatchUp_FeedResetsOnRecreatedChanges: a replica that caught up,
// closed, and comes back to a CHANGES deleted and created again, now
// longer than its cursor, catches up through the feed from the start of
// the new stream: the old documents are gone, the new ones there.
func TestCatchUp_FeedResetsOnRecreatedChanges(t *testing.T) {
	s, nc, js := mustServer(t)
	serveFeed(t, nc, js)
	publishChanges(t, js, 30, 30)
	dir := t.TempDir()
	r, _ := syncedBytes(t, s, dir)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, events.StreamChanges); err != nil {
		t.Fatal(err)
	}
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	want := serverView{}
	for i := range 60 {
		d := "new-" + string(rune('a'+i/26)) + string(rune('a'+i%26))
		ch := testChange("t1", "c", d, 1, 5)
		publishChange(t, js, ch)
		want[d] = ch
	}
	reqs := feedRequests(t, nc)
	r2, _ := syncedBytes(t, s, dir)
	checkView(t, r2, want)
	if reqs.Load() < 2 {
		t.Fatalf("%d change requests: the catch-up after the reset did not read the feed", reqs.Load())
	}
}

// TestCatchUp_StuckFeedFallsBackToDirect: a feed whose pages say more
// changes wait but never move on ends the catch-up session; the replica
// follows CHANGES directly and gets every document.
func TestCatchUp_StuckFeedFallsBackToDirect(t *testing.T) {
	s, nc, js := mustServer(t)
	want := publishChanges(t, js, 40, 40)
	asked := fakeFeed(t, nc, js, func(_ int64, req feed.Request, created time.Time) *feed.Page {
		return &feed.Page{Changes: []feed.Entry{}, LastSeq: req.After, More: true, Unfiltered: true,
			StreamState: feed.StreamState{FirstSeq: 1, StreamLastSeq: 40, StreamCreated: created}}
	})
	r, _ := syncedBytes(t, s, t.TempDir())
	checkView(t, r, want)
	if n := asked.Load(); n != 2 {
		t.Fatalf("the feed was asked %d times, want the probe and one page", n)
	}
}

// TestCatchUp_FeedSettlesOwnWriteByItsChange: a replica's write was
// published and applied while the replica was away, and no receipt will
// come for it (none was stored); its change does. Caught up through the
// compact feed, the change still carries the cause of the replica's own
// write, which settles it as applied: nothing is republished, nothing
// rejected, Sync completes.
func TestCatchUp_FeedSettlesOwnWriteByItsChange(t *testing.T) {
	_, nc, js := mustServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := OpenReplica(ctx, ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "a", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Put(ctx, "c", "mine", events.Fields{"n": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the write published", func() bool {
		es, err := r.Log().Entries(ctx, producer.StatePublished)
		return err == nil && len(es) == 1
	})
	es, err := r.Log().Entries(ctx, producer.StatePublished)
	if err != nil || len(es) != 1 {
		t.Fatalf("published entries %+v, %v", es, err)
	}
	e := es[0].Event
	r.Detach()

	// The projector applied it (its change names the write) and others'
	// writes; the feed serves them all.
	own := &events.Change{Schema: events.SchemaVersion, Tenant: "t1", Collection: "c", Doc: "mine", Version: 1,
		Fields: events.Fields{"n": json.RawMessage(`1`)}, HLC: e.HLC, Event: e.ID, Client: e.Client, Device: e.Device, Seq: e.Seq, AsWritten: true}
	publishChange(t, js, own)
	for _, d := range []string{"x", "y", "z"} {
		publishChange(t, js, testChange("t1", "c", d, 1, 3))
	}
	serveFeed(t, nc, js)
	reqs := feedRequests(t, nc)
	if err := r.Attach(ctx, nc); err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
	defer scancel()
	if _, err := r.Sync(sctx); err != nil {
		t.Fatalf("sync: %v (the write's change came through the feed without its cause?)", err)
	}
	if reqs.Load() < 2 {
		t.Fatalf("%d change requests: the catch-up did not read the feed", reqs.Load())
	}
	if st := r.Status(); st.Pending != 0 {
		t.Fatalf("status %+v: the write is still unsettled", st)
	}
	if rj, err := r.Rejections(ctx); err != nil || len(rj) != 0 {
		t.Fatalf("rejections %+v, %v", rj, err)
	}
	evs, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := evs.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("EVENTS %+v, %v: want the write once, never republished", info, err)
	}
}

// TestCatchUp_FeedKeepsUnreadableForRetry: a change the feed cannot read
// (a newer schema) is not stepped over by a catch-up through the feed: the
// replica hands over to the direct follower before it, which keeps it for
// retry (quarantine) as a direct catch-up does, and applies the rest.
func TestCatchUp_FeedKeepsUnreadableForRetry(t *testing.T) {
	s, nc, js := mustServer(t)
	want := publishChanges(t, js, 20, 20)
	bad := []byte(`{"schema":99,"tenant":"t1","collection":"c","doc":"newer","version":1,"fields":{"n":2}}`)
	if _, err := js.Publish(t.Context(), events.ChangeSubject("t1", "c", "newer"), bad); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"after-1", "after-2", "after-3"} {
		ch := testChange("t1", "c", d, 1, 9)
		publishChange(t, js, ch)
		want[d] = ch
	}
	serveFeed(t, nc, js)
	reqs := feedRequests(t, nc)
	r, _ := syncedBytes(t, s, t.TempDir())
	checkView(t, r, want)
	if reqs.Load() < 2 {
		t.Fatalf("%d change requests: the catch-up did not read the feed", reqs.Load())
	}
	if st := r.Status(); st.Quarantined != 1 || !errors.Is(st.LastQuarantine, events.ErrUnknownSchema) {
		t.Fatalf("quarantined %d (%v): want the newer-schema change kept for retry", st.Quarantined, st.LastQuarantine)
	}
	if k := quarantineKeys(t, r); k != 1 {
		t.Fatalf("%d quarantined messages kept, want the one of a newer schema", k)
	}
}

// TestCatchUp_FeedResumesRestoredStream: a replica that caught up through
// the feed comes back to a CHANGES restored from a backup of the stream it
// read (a new incarnation whose metadata names the old one and its last
// sequence): it resumes from its cursor through the feed, pulling only
// what came after, with no resync.
func TestCatchUp_FeedResumesRestoredStream(t *testing.T) {
	s, nc, js := mustServer(t)
	serveFeed(t, nc, js)
	var chs []*events.Change
	for i := range 30 {
		chs = append(chs, testChange("t1", "c", "doc-"+string(rune('a'+i/26))+string(rune('a'+i%26)), 1, i))
		publishChange(t, js, chs[i])
	}
	dir := t.TempDir()
	r, _ := syncedBytes(t, s, dir)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	old := st.CachedInfo()
	// The restore: the stream made again with the same messages at the
	// same sequences, its metadata naming what it was restored from.
	if err := js.DeleteStream(ctx, events.StreamChanges); err != nil {
		t.Fatal(err)
	}
	cfg := old.Config
	cfg.Metadata = map[string]string{MetaRestoredCreated: old.Created.Format(time.RFC3339Nano), MetaRestoredLastSeq: "30"}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	want := serverView{}
	for _, ch := range chs {
		publishChange(t, js, ch)
		want[ch.Doc] = ch
	}
	for _, d := range []string{"new-1", "new-2", "new-3"} {
		ch := testChange("t1", "c", d, 1, 7)
		publishChange(t, js, ch)
		want[d] = ch
	}
	reqs := feedRequests(t, nc)
	r2, _ := syncedBytes(t, s, dir)
	checkView(t, r2, want)
	if st := r2.Status(); st.Resyncs != 0 || st.Changes.Applied != 3 {
		t.Fatalf("after the restore: %d resyncs, %d applied; want none and the 3 new changes", st.Resyncs, st.Changes.Applied)
	}
	if reqs.Load() < 2 {
		t.Fatalf("%d change requests: the catch-up after the restore did not read the feed", reqs.Load())
	}
}

// TestCatchUp_FeedCatchUpDecidesTheLink: once a catch-up through the feed
// has begun (its page was unfiltered, so the server lets the link read
// CHANGES directly), the link is decided: Sync's target and reset checks
// (activeFeed) do not wait for the catch-up to end, so a Sync during a
// long catch-up is not stuck behind it (nor, detached, until its context
// ends).
func TestCatchUp_FeedCatchUpDecidesTheLink(t *testing.T) {
	_, nc, js := mustServer(t)
	publishChanges(t, js, 50, 50)
	// The probe is answered; the page requests after it never are (a
	// catch-up that takes long).
	asked := fakeFeed(t, nc, js, func(n int64, _ feed.Request, created time.Time) *feed.Page {
		if n > 1 {
			return nil
		}
		return &feed.Page{Changes: []feed.Entry{{Seq: 1, Change: testChange("t1", "c", "doc-00000", 1, 0)}}, LastSeq: 1, More: true,
			Unfiltered: true, StreamState: feed.StreamState{FirstSeq: 1, StreamLastSeq: 50, StreamCreated: created}}
	})
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "alice", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	waitFor(t, 10*time.Second, "the catch-up's first page asked", func() bool { return asked.Load() >= 2 })
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	fd, err := r.activeFeed(ctx)
	if err != nil || fd != nil {
		t.Fatalf("activeFeed during the catch-up: %v, %v; want the link decided, reading CHANGES directly", fd, err)
	}
}

// TestCatchUp_ProbesAgainAfterAnUnansweredProbe: a probe nothing answers
// in time (a responder too busy, or none yet) keeps the link on CHANGES
// only for feedRetryAfter; a later session probes again and catches up
// through the feed.
func TestCatchUp_ProbesAgainAfterAnUnansweredProbe(t *testing.T) {
	old := feedRetryAfter
	feedRetryAfter = 10 * time.Millisecond
	t.Cleanup(func() { feedRetryAfter = old })
	_, nc, js := mustServer(t)
	publishChanges(t, js, 20, 20)
	var seen atomic.Int64
	mute, err := nc.Subscribe(feed.RequestSubject, func(*nats.Msg) { seen.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "alice", Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if seen.Load() != 1 {
		t.Fatalf("probes %d, want the one that timed out", seen.Load())
	}
	if err := mute.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	serveFeed(t, nc, js)
	reqs := feedRequests(t, nc)
	want := publishChanges(t, js, 500, 500)
	r.mu.Lock()
	l := r.link
	r.mu.Unlock()
	l.changes.restart()
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	checkView(t, r, want)
	if reqs.Load() < 2 {
		t.Fatalf("%d feed requests after the retry interval: the link never asked the feed again", reqs.Load())
	}
}
