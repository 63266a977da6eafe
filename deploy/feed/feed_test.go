package feed_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/feed"
	"github.com/ebbsync/ebb/events"
)

type env struct {
	nc *nats.Conn
	js jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return &env{nc: nc, js: js}
}

// put publishes a change of tenant/coll/doc at version to CHANGES with the
// audience headers the projector writes (readers nil: no header, an
// unruled collection; "-" for was: no header).
func (e *env) put(t *testing.T, tenant, coll, doc string, version uint64, readers, was []string) uint64 {
	t.Helper()
	c := events.Change{Schema: events.SchemaVersion, Tenant: tenant, Collection: coll, Doc: doc, Version: version,
		Fields: events.Fields{"v": json.RawMessage(`1`)}, Event: "ev-" + doc, Client: "w", Seq: version}
	data, err := events.EncodeChange(&c)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(events.ChangeSubject(tenant, coll, doc))
	m.Data = data
	if readers != nil {
		m.Header.Set(events.HeaderReaders, events.EncodeAudience(readers))
	}
	if was != nil {
		m.Header.Set(events.HeaderWasReaders, events.EncodeAudience(was))
	}
	return e.raw(t, m)
}

func (e *env) raw(t *testing.T, m *nats.Msg) uint64 {
	t.Helper()
	ack, err := e.js.PublishMsg(t.Context(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

var (
	ann = events.UserPrincipal("ann")
	bob = events.UserPrincipal("bob")
	red = events.GroupPrincipal("red")
)

// TestChanges_FilterSendLeftSkip: a ruled user gets the changes it reads,
// a Left notice for a document that left its view, nothing of documents it
// never read, and every unruled change; the cursor moves past all of them,
// and a change with an unreadable audience is skipped and counted.
func TestChanges_FilterSendLeftSkip(t *testing.T) {
	e := newEnv(t)
	e.put(t, "acme", "lists", "mine", 1, []string{ann}, nil)           // send
	e.put(t, "acme", "lists", "team", 1, []string{red}, nil)           // send (group)
	e.put(t, "acme", "lists", "bobs", 1, []string{bob}, nil)           // skip
	e.put(t, "acme", "lists", "gone", 2, []string{bob}, []string{ann}) // left
	e.put(t, "acme", "notes", "open", 1, nil, nil)                     // send: unruled
	e.put(t, "acme", "lists", "none", 1, []string{}, nil)              // skip: audience of nobody
	bad := nats.NewMsg(events.ChangeSubject("acme", "lists", "bad"))
	bad.Data, _ = events.EncodeChange(&events.Change{Schema: 1, Tenant: "acme", Collection: "lists", Doc: "bad", Version: 1, Event: "e", Client: "w"})
	bad.Header.Set(events.HeaderReaders, "u:ann *") // unsorted: not an audience
	last := e.raw(t, bad)
	e.put(t, "other", "lists", "x", 1, nil, nil) // another tenant: never read

	var skipped []error
	src := &feed.Source{JetStream: e.js, Skipped: func(_ context.Context, _ string, _ uint64, _ string, err error) {
		skipped = append(skipped, err)
	}}
	page, err := src.Changes(t.Context(), feed.Query{Tenant: "acme", Limit: 100, Filtered: true,
		Principals: events.Principals("ann", []string{"red"})})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, en := range page.Changes {
		c := en.Change
		if got[c.Doc] {
			t.Fatalf("%s sent twice", c.Doc)
		}
		got[c.Doc] = c.Left
		if c.Left && (c.Fields != nil || c.Version != 2 || c.Event != "ev-gone") {
			t.Fatalf("left notice carries more or less than address, version, event: %+v", c)
		}
	}
	want := map[string]bool{"mine": false, "team": false, "gone": true, "open": false}
	if len(got) != len(want) {
		t.Fatalf("sent %v, want %v", got, want)
	}
	for d, left := range want {
		if l, ok := got[d]; !ok || l != left {
			t.Fatalf("sent %v, want %v", got, want)
		}
	}
	if page.LastSeq != last || page.More {
		t.Fatalf("last_seq %d more %v, want %d false: the cursor moves past skipped changes", page.LastSeq, page.More, last)
	}
	if len(skipped) != 1 || !errors.Is(skipped[0], feed.ErrAudience) {
		t.Fatalf("skipped %v, want one ErrAudience", skipped)
	}
	if page.StreamLastSeq != last+1 || page.StreamCreated.IsZero() {
		t.Fatalf("stream state %+v", page.StreamState)
	}
	// Unfiltered (a service): every change of the tenant as stored.
	all, err := src.Changes(t.Context(), feed.Query{Tenant: "acme", Limit: 100})
	if err != nil || len(all.Changes) != 7 {
		t.Fatalf("unfiltered page: %d changes, %v", len(all.Changes), err)
	}
}

// TestChanges_OnceEachAcrossPages: paging with a small limit sends each
// visible change exactly once and ends at the last sequence.
func TestChanges_OnceEachAcrossPages(t *testing.T) {
	e := newEnv(t)
	for i, d := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		r := []string{ann}
		if i%2 == 1 {
			r = []string{bob}
		}
		e.put(t, "acme", "lists", d, 1, r, nil)
	}
	src := &feed.Source{JetStream: e.js}
	seen := map[string]int{}
	after := uint64(0)
	for range 20 {
		p, err := src.Changes(t.Context(), feed.Query{Tenant: "acme", After: after, Limit: 2, Filtered: true, Principals: events.Principals("ann", nil)})
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range p.Changes {
			seen[en.Change.Doc]++
		}
		after = p.LastSeq
		if !p.More {
			break
		}
	}
	if len(seen) != 4 || seen["a"] != 1 || seen["c"] != 1 || seen["e"] != 1 || seen["g"] != 1 {
		t.Fatalf("seen %v, want a c e g once each", seen)
	}
	if after != 7 {
		t.Fatalf("cursor %d, want 7", after)
	}
}

// TestChanges_Collections: a query naming collections reads only theirs.
func TestChanges_Collections(t *testing.T) {
	e := newEnv(t)
	e.put(t, "acme", "lists", "l", 1, nil, nil)
	e.put(t, "acme", "todos", "t", 1, nil, nil)
	e.put(t, "acme", "notes", "n", 1, nil, nil)
	src := &feed.Source{JetStream: e.js}
	p, err := src.Changes(t.Context(), feed.Query{Tenant: "acme", Collections: []string{"todos", "lists", "todos"}, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Changes) != 2 || p.Changes[0].Change.Doc != "l" || p.Changes[1].Change.Doc != "t" {
		t.Fatalf("changes %+v, want l and t", p.Changes)
	}
	if _, err := src.Changes(t.Context(), feed.Query{Tenant: "acme", Collections: []string{"bad\x01name"}, Limit: 10}); !errors.Is(err, feed.ErrBadRequest) {
		t.Fatalf("bad collection name: %v, want ErrBadRequest", err)
	}
}

// TestChanges_LongPollWaitsPastSkipped: a long-poll whose first new change
// is not the reader's keeps waiting and answers with the next one it may
// read.
func TestChanges_LongPollWaitsPastSkipped(t *testing.T) {
	e := newEnv(t)
	src := &feed.Source{JetStream: e.js}
	type res struct {
		p   feed.Page
		err error
	}
	done := make(chan res, 1)
	go func() {
		p, err := src.Changes(context.Background(), feed.Query{Tenant: "acme", Limit: 10, Wait: 10 * time.Second, Filtered: true,
			Principals: events.Principals("ann", nil)})
		done <- res{p, err}
	}()
	// Bob's change comes while the long-poll waits, and ann's only once
	// the long-poll has skipped bob's and waits again (a second consumer).
	consumers := func(n int) func() bool {
		return func() bool {
			st, err := e.js.Stream(t.Context(), events.StreamChanges)
			if err != nil {
				return false
			}
			info, err := st.Info(t.Context())
			return err == nil && info.State.Consumers >= n
		}
	}
	embeddedtest.WaitFor(t, 10*time.Second, "the long-poll's consumer", consumers(1))
	e.put(t, "acme", "lists", "bobs", 1, []string{bob}, nil)
	embeddedtest.WaitFor(t, 10*time.Second, "the long-poll waiting again past bob's change", consumers(2))
	e.put(t, "acme", "lists", "anns", 1, []string{ann}, nil)
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if len(r.p.Changes) != 1 || r.p.Changes[0].Change.Doc != "anns" || r.p.LastSeq != 2 {
			t.Fatalf("long-poll answered %+v, want anns at 2", r.p)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("long-poll did not answer")
	}
}

func request(t *testing.T, nc *nats.Conn, user, tenant string, req feed.Request) (feed.Page, error) {
	t.Helper()
	body, _ := json.Marshal(req)
	m, err := nc.RequestWithContext(t.Context(), feed.UserSubject(user, tenant), body)
	if err != nil {
		t.Fatal(err)
	}
	return feed.DecodeReply(m.Data)
}

// TestResponder_FilteredPage: the responder answers each user with its own
// filtered page, groups looked up at request time; an unknown user is
// refused 403, a bad request 400.
func TestResponder_FilteredPage(t *testing.T) {
	e := newEnv(t)
	e.put(t, "acme", "lists", "mine", 1, []string{ann}, nil)
	e.put(t, "acme", "lists", "team", 1, []string{red}, nil)
	e.put(t, "acme", "todos", "bobs", 1, []string{bob}, nil)
	var lookups atomic.Int32
	ids := func(tenant, user string) ([]string, bool) {
		lookups.Add(1)
		switch {
		case tenant == "acme" && user == "ann":
			return []string{"red"}, true
		case tenant == "acme" && user == "bob":
			return nil, true
		}
		return nil, false
	}
	r, err := feed.Serve(e.nc, e.js, ids, feed.ResponderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })

	p, err := request(t, e.nc, "ann", "acme", feed.Request{})
	if err != nil || len(p.Changes) != 2 || p.LastSeq != 3 || p.StreamCreated.IsZero() {
		t.Fatalf("ann: %+v %v", p, err)
	}
	p, err = request(t, e.nc, "bob", "acme", feed.Request{Collections: []string{"todos"}})
	if err != nil || len(p.Changes) != 1 || p.Changes[0].Change.Doc != "bobs" {
		t.Fatalf("bob: %+v %v", p, err)
	}
	var re *feed.ReplyError
	if _, err := request(t, e.nc, "eve", "acme", feed.Request{}); !errors.As(err, &re) || re.Status != 403 {
		t.Fatalf("unknown user: %v, want 403", err)
	}
	if _, err := request(t, e.nc, "ann", "acme", feed.Request{Limit: 5000}); !errors.As(err, &re) || re.Status != 400 {
		t.Fatalf("limit over max: %v, want 400", err)
	}
	if lookups.Load() < 3 {
		t.Fatalf("groups looked up %d times, want once per admitted request", lookups.Load())
	}
}

// TestResponder_LongPollCapPerUser: a user's long-polls beyond its cap are
// refused 429 at once while the first waits, and Close ends the waiting
// one.
func TestResponder_LongPollCapPerUser(t *testing.T) {
	e := newEnv(t)
	ids := func(tenant, user string) ([]string, bool) { return nil, true }
	r, err := feed.Serve(e.nc, e.js, ids, feed.ResponderConfig{MaxLongPollsPerUser: 1})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(feed.Request{WaitMS: 20000})
	first := make(chan error, 1)
	go func() {
		_, err := e.nc.Request(feed.UserSubject("ann", "acme"), body, 30*time.Second)
		first <- err
	}()
	embeddedtest.WaitFor(t, 10*time.Second, "the first long-poll in flight", func() bool { return r.ActiveLongPolls() == 1 })
	if _, err := request(t, e.nc, "ann", "acme", feed.Request{WaitMS: 20000}); err == nil {
		t.Fatal("second long-poll of one user admitted over a cap of 1")
	} else if re := (*feed.ReplyError)(nil); !errors.As(err, &re) || re.Status != 429 {
		t.Fatalf("second long-poll: %v, want 429", err)
	}
	if _, err := request(t, e.nc, "bob", "acme", feed.Request{}); err != nil {
		t.Fatalf("another user's pull: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if r.ActiveLongPolls() != 0 {
		t.Fatal("Close returned with a long-poll in flight")
	}
	<-first
}

// TestChanges_ShortWaitOverBeforeAsked: a long-poll whose wait is over
// before the fetch is even asked (a short wait on a busy machine) is an
// empty page, not an error (FetchContext refuses a deadline already past).
func TestChanges_ShortWaitOverBeforeAsked(t *testing.T) {
	e := newEnv(t)
	src := &feed.Source{JetStream: e.js}
	for range 20 {
		p, err := src.Changes(t.Context(), feed.Query{Tenant: "acme", Limit: 10, Wait: time.Nanosecond})
		if err != nil {
			t.Fatalf("a long-poll of 1ns: %v, want an empty page", err)
		}
		if len(p.Changes) != 0 {
			t.Fatalf("changes %+v on an empty stream", p.Changes)
		}
	}
}

// TestResponder_CompactPage: asked for a compact page, the responder
// answers the same changes as the full page, with the writer's device and
// sequence only on the asking client's own.
func TestResponder_CompactPage(t *testing.T) {
	e := newEnv(t)
	e.put(t, "acme", "lists", "mine", 1, []string{ann}, nil)
	e.put(t, "acme", "todos", "both", 2, nil, nil)
	r, err := feed.Serve(e.nc, e.js, func(string, string) ([]string, bool) { return nil, true }, feed.ResponderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	full, err := request(t, e.nc, "ann", "acme", feed.Request{})
	if err != nil || len(full.Changes) != 2 {
		t.Fatalf("full page: %+v %v", full, err)
	}
	for _, asker := range []string{"w", "ann"} {
		m, err := e.nc.RequestWithContext(t.Context(), feed.UserSubject("ann", "acme"), mustJSON(t, feed.Request{Compact: true, Client: asker}))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(m.Data, []byte(`"format":"compact"`)) {
			t.Fatalf("asked for a compact page, got %s", m.Data)
		}
		got, err := feed.DecodeReply(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		want := full
		want.Changes = nil
		for _, en := range full.Changes {
			c := *en.Change
			if asker != c.Client {
				c.Event, c.Device, c.Seq, c.AsWritten, c.Settled = "", "", 0, false, nil
			}
			want.Changes = append(want.Changes, feed.Entry{Seq: en.Seq, Change: &c})
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("asker %q: compact page %+v, want %+v", asker, got, want)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestResponder_OpenUnfiltered: a responder for a server without auth and
// without rules answers the bare request subject for the tenant its body
// names, every change as stored (audience headers ignored), its pages
// marked unfiltered; a filtering one marks its pages filtered, and Open
// without Unfiltered is refused.
func TestResponder_OpenUnfiltered(t *testing.T) {
	e := newEnv(t)
	e.put(t, "acme", "lists", "mine", 1, []string{ann}, nil)
	e.put(t, "acme", "lists", "theirs", 1, []string{bob}, nil)
	e.put(t, "other", "lists", "x", 1, nil, nil)
	if _, err := feed.Serve(e.nc, e.js, func(string, string) ([]string, bool) { return nil, true }, feed.ResponderConfig{Open: true}); err == nil {
		t.Fatal("an Open responder that filters started")
	}
	r, err := feed.Serve(e.nc, e.js, func(string, string) ([]string, bool) { return nil, false }, feed.ResponderConfig{Open: true, Unfiltered: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.nc.RequestWithContext(t.Context(), feed.RequestSubject, mustJSON(t, feed.Request{Tenant: "acme", Compact: true}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := feed.DecodeReply(m.Data)
	if err != nil || len(p.Changes) != 2 || !p.Unfiltered || p.Changes[0].Change.Doc != "mine" || p.Changes[1].Change.Doc != "theirs" {
		t.Fatalf("open page: %+v %v", p, err)
	}
	m, err = e.nc.RequestWithContext(t.Context(), feed.RequestSubject, mustJSON(t, feed.Request{}))
	if err != nil {
		t.Fatal(err)
	}
	var re *feed.ReplyError
	if _, err := feed.DecodeReply(m.Data); !errors.As(err, &re) || re.Status != 400 || !strings.Contains(re.Msg, "tenant") {
		t.Fatalf("bad tenant: %v, want 400 naming the tenant", err)
	}
	_ = r.Close()

	f, err := feed.Serve(e.nc, e.js, func(string, string) ([]string, bool) { return nil, true }, feed.ResponderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	p, err = request(t, e.nc, "ann", "acme", feed.Request{Compact: true})
	if err != nil || len(p.Changes) != 1 || p.Unfiltered {
		t.Fatalf("filtered page: %+v %v", p, err)
	}
	// Without Open nothing serves the bare subject.
	if _, err := e.nc.RequestWithContext(t.Context(), feed.RequestSubject, mustJSON(t, feed.Request{Tenant: "acme"})); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("bare subject without Open: %v, want no responders", err)
	}
}

// TestState_CarriesRestoreMetadata: a page's stream state carries the
// metadata `ebb restore` writes (keys "ebb.restored_..."), and no other,
// so a reader through the feed resumes a restored stream as a direct one
// does instead of resyncing.
func TestState_CarriesRestoreMetadata(t *testing.T) {
	e := newEnv(t)
	st, err := e.js.Stream(t.Context(), events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Metadata = map[string]string{"ebb.restored_from_created": "2026-12-01T10:00:00Z", "ebb.restored_last_seq": "35", "other": "x"}
	if _, err := e.js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	src := &feed.Source{JetStream: e.js}
	got, err := src.State(t.Context(), events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ebb.restored_from_created": "2026-12-01T10:00:00Z", "ebb.restored_last_seq": "35"}
	if !reflect.DeepEqual(got.Restored, want) {
		t.Fatalf("restored %v, want %v", got.Restored, want)
	}
}

// TestResponder_UnfilteredServesOnlyItsOwnSubject: an unfiltered
// responder (a server without rules, with auth) answers the requests the
// accounts without filtered reads route (AllUserSubject), every change
// as stored, and refuses a user the tenant does not have; a request routed
// by filtered-reads accounts (UserSubject) never reaches it, so it can
// never answer a client under rules with every change; and on the bare
// subject, where nobody vouches for the asker, an Open responder serves
// pages but no long-polls.
func TestResponder_UnfilteredServesOnlyItsOwnSubject(t *testing.T) {
	e := newEnv(t)
	e.put(t, "acme", "lists", "mine", 1, []string{ann}, nil)
	e.put(t, "acme", "lists", "theirs", 1, []string{bob}, nil)
	ids := func(tenant, user string) ([]string, bool) { return nil, user == "ann" && tenant == "acme" }
	r, err := feed.Serve(e.nc, e.js, ids, feed.ResponderConfig{Unfiltered: true})
	if err != nil {
		t.Fatal(err)
	}
	ask := func(subject string, req feed.Request) (feed.Page, error) {
		t.Helper()
		m, err := e.nc.RequestWithContext(t.Context(), subject, mustJSON(t, req))
		if err != nil {
			return feed.Page{}, err
		}
		return feed.DecodeReply(m.Data)
	}
	if p, err := ask(feed.AllUserSubject("ann", "acme"), feed.Request{Compact: true}); err != nil || !p.Unfiltered || len(p.Changes) != 2 {
		t.Fatalf("ann: %+v %v", p, err)
	}
	var re *feed.ReplyError
	if _, err := ask(feed.AllUserSubject("mallory", "acme"), feed.Request{}); !errors.As(err, &re) || re.Status != 403 {
		t.Fatalf("stranger: %v, want 403", err)
	}
	if _, err := ask(feed.UserSubject("ann", "acme"), feed.Request{}); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("a filtered-reads request at an unfiltered responder: %v, want no responders", err)
	}
	if _, err := ask(feed.RequestSubject, feed.Request{Tenant: "acme"}); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("the bare subject without Open: %v, want no responders", err)
	}
	_ = r.Close()

	o, err := feed.Serve(e.nc, e.js, ids, feed.ResponderConfig{Unfiltered: true, Open: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close() })
	if _, err := ask(feed.RequestSubject, feed.Request{Tenant: "acme", WaitMS: 1000}); !errors.As(err, &re) || re.Status != 400 || !strings.Contains(re.Msg, "wait_ms") {
		t.Fatalf("a long-poll on the bare subject: %v, want 400 naming wait_ms", err)
	}
	if p, err := ask(feed.RequestSubject, feed.Request{Tenant: "acme"}); err != nil || len(p.Changes) != 2 {
		t.Fatalf("a page on the bare subject: %+v %v", p, err)
	}
}
