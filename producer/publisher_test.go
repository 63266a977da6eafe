package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// reconnecting are connection options for a client that must survive a
// server restart.
func reconnecting() []nats.Option {
	return []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(20 * time.Millisecond), nats.ReconnectJitter(0, 0)}
}

func TestPublisher_DrainsInOrderWithHeaders(t *testing.T) {
	s := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	mustEnsureStreams(t, js, events.StreamOptions{})
	l := tempLog(t)

	// A trace context on the append travels in the message headers.
	tid, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	sid, _ := trace.SpanIDFromHex("b7ad6b7169203331")
	ctx := trace.ContextWithSpanContext(t.Context(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled,
	}))
	var ws []Write
	for i := range 300 {
		ws = append(ws, put("todo", []string{"a", "b.c", "d e"}[i%3], i))
	}
	if _, err := l.AppendBatch(ctx, ws); err != nil {
		t.Fatal(err)
	}
	p := mustPublisher(t, l, js, nc, PublisherConfig{MaxInFlight: 16})
	fctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := p.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	es, err := l.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	stored := readEvents(t, js)
	if len(stored) != len(es) {
		t.Fatalf("stream holds %d events, log %d", len(stored), len(es))
	}
	byID := map[string]storedEvent{}
	for _, s := range stored {
		byID[s.MsgID] = s
	}
	for i, e := range es {
		if s, ok := byID[e.Event.ID]; e.State != StatePublished || !ok || e.StreamSeq != s.StreamSeq {
			t.Fatalf("entry %d: %+v vs stored %+v", i, e, s)
		}
	}
	checkOrder(t, stored, 16)
	tp := stored[0].Header["traceparent"]
	if len(tp) != 1 || !strings.Contains(tp[0], "0af7651916cd43dd8448eb211c80319c") {
		t.Fatalf("traceparent header %q (headers %v)", tp, stored[0].Header)
	}
	// The committer reports the push just after Flush sees the entries stored.
	waitFor(t, 5*time.Second, "status to show the push", func() bool { return !p.Status().LastPush.IsZero() })
	if st := p.Status(); st.Pending != 0 || st.Failed != 0 || !st.Connected {
		t.Fatalf("status %+v", st)
	}
}

// TestPublisher_Offline: appends made while the server is down drain by
// themselves once it is back on the same storage and port.
func TestPublisher_Offline(t *testing.T) {
	s := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, s, reconnecting()...)
	js := embeddedtest.MustJetStream(t, nc)
	mustEnsureStreams(t, js, events.StreamOptions{})
	l := tempLog(t)
	p := mustPublisher(t, l, js, nc, PublisherConfig{BackoffInitial: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond})

	mustAppend(t, l, put("c", "d1", 0))
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}

	cfg := s.Config()
	sctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "publisher to see the disconnect", func() bool { return !p.Status().Connected })
	for i := 1; i <= 20; i++ {
		if _, err := l.Append(t.Context(), put("c", []string{"d1", "d2"}[i%2], i)); err != nil {
			t.Fatalf("offline append %d: %v", i, err)
		}
	}
	if st := p.Status(); st.Pending != 20 || st.OldestPending.IsZero() {
		t.Fatalf("offline status %+v", st)
	}

	embeddedtest.MustStart(t, embeddedtest.WithConfig(cfg))
	waitFor(t, 20*time.Second, "the log to drain", func() bool {
		es, err := l.Entries(t.Context(), StatePending)
		return err == nil && len(es) == 0
	})
	stored := readEvents(t, js)
	if len(stored) != 21 {
		t.Fatalf("stream holds %d events, want 21", len(stored))
	}
	checkOrder(t, stored, DefaultMaxInFlight)
	waitFor(t, 5*time.Second, "status to show the recovery", func() bool {
		st := p.Status()
		return st.Connected && !st.Retrying && st.Pending == 0
	})
}

// TestPublisher_DuplicateBeyondDedupeWindow shows what JetStream's dedupe
// does and does not cover: a re-publish inside the window is dropped (and
// acked as a duplicate); one after it reaches EVENTS a second time, which
// the projector must drop by the client's sequence high-water mark.
func TestPublisher_DuplicateBeyondDedupeWindow(t *testing.T) {
	const window = 300 * time.Millisecond
	s := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	mustEnsureStreams(t, js, events.StreamOptions{DedupeWindow: window})
	l := tempLog(t)
	p := mustPublisher(t, l, js, nc, PublisherConfig{})

	e := mustAppend(t, l, put("c", "d1", 1))[0]
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	first := entryByID(t, l, e.ID)

	// Lose the ack: the entry goes back to pending, as after a crash between
	// the publish and storing its ack, and a new publisher starts.
	p = restartWithLostAck(t, p, l, js, nc, e.Seq)
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := readEvents(t, js); len(got) != 1 {
		t.Fatalf("inside the window: stream holds %d copies, want 1", len(got))
	}
	if again := entryByID(t, l, e.ID); again.StreamSeq != first.StreamSeq {
		t.Fatalf("duplicate ack stream seq %d, want the original %d", again.StreamSeq, first.StreamSeq)
	}

	waitFor(t, 10*time.Second, "the dedupe window to pass", func() bool {
		return time.Since(first.PublishedAt) > 2*window
	})
	p = restartWithLostAck(t, p, l, js, nc, e.Seq)
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := readEvents(t, js)
	if len(got) != 2 || got[0].MsgID != e.ID || got[1].MsgID != e.ID || got[1].Event.Seq != e.Seq {
		t.Fatalf("after the window: stream %+v, want two copies of %s", got, e.ID)
	}
}

// restartWithLostAck closes p, puts entry seq back to pending and starts a
// new publisher.
func restartWithLostAck(t *testing.T, p *Publisher, l *Log, js JetStream, nc Conn, seq uint64) *Publisher {
	t.Helper()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	loseAck(t, l, seq)
	return mustPublisher(t, l, js, nc, PublisherConfig{})
}

// loseAck puts entry seq back to pending.
func loseAck(t *testing.T, l *Log, seq uint64) {
	t.Helper()
	err := l.DB().Update(func(tx *bbolt.Tx) error {
		st, err := l.getState(tx, seq)
		if err != nil {
			return err
		}
		var e events.Event
		if err := json.Unmarshal(tx.Bucket(bucketEvents).Get(seqKey(seq)), &e); err != nil {
			return err
		}
		st.State = StatePending
		if err := l.putState(tx, seq, st); err != nil {
			return err
		}
		ob, _ := json.Marshal(outbound{ID: e.ID, Subject: e.Subject()})
		return tx.Bucket(bucketPending).Put(seqKey(seq), ob)
	})
	if err != nil {
		t.Fatal(err)
	}
	l.countMu.Lock()
	l.pendingN++
	l.countMu.Unlock()
	l.appended.notify()
}

// big is a field value of n bytes.
func big(n int) Write {
	return Write{Collection: "c", Doc: "big", Op: events.OpPut,
		Fields: events.Fields{"v": json.RawMessage(`"` + strings.Repeat("x", n) + `"`)}}
}

func TestPublisher_OversizedFails(t *testing.T) {
	tests := []struct {
		name    string
		server  func(*embedded.Config)
		streams events.StreamOptions
	}{
		// The stream refuses it: a JetStream API error.
		{"stream max msg size", func(*embedded.Config) {}, events.StreamOptions{MaxMsgSize: 1024}},
		// The client refuses it before sending: nats.ErrMaxPayload.
		{"server max payload", func(c *embedded.Config) { c.MaxPayload = 1024 }, events.StreamOptions{MaxMsgSize: 1024}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := embeddedtest.MustStart(t, tt.server)
			nc := embeddedtest.MustConnect(t, s)
			js := embeddedtest.MustJetStream(t, nc)
			mustEnsureStreams(t, js, tt.streams)
			l := tempLog(t)
			var mu sync.Mutex
			var reported []Entry
			p := mustPublisher(t, l, js, nc, PublisherConfig{OnFailure: func(e Entry) {
				mu.Lock()
				defer mu.Unlock()
				reported = append(reported, e)
			}})
			evs := mustAppend(t, l, put("c", "d1", 1), big(4096), put("c", "d1", 2))
			if err := p.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			failed := entryByID(t, l, evs[1].ID)
			if failed.State != StateFailed || failed.Err == "" {
				t.Fatalf("oversized entry %+v, want failed with a reason", failed)
			}
			t.Logf("reason: %s", failed.Err)
			for _, i := range []int{0, 2} {
				if st := stateOf(t, l, evs[i].ID); st != StatePublished {
					t.Fatalf("event %d behind the failure is %s", i, st)
				}
			}
			stored := readEvents(t, js)
			if len(stored) != 2 || stored[0].MsgID != evs[0].ID || stored[1].MsgID != evs[2].ID {
				t.Fatalf("stream %+v", stored)
			}
			// OnFailure runs just after the failure is stored.
			waitFor(t, 5*time.Second, "OnFailure", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(reported) > 0
			})
			mu.Lock()
			defer mu.Unlock()
			if len(reported) != 1 || reported[0].Event.ID != evs[1].ID {
				t.Fatalf("OnFailure got %+v", reported)
			}
			if st := p.Status(); st.Failed != 1 || st.LastError == "" {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

// TestPublisher_PermissionDenied runs nats-server directly: embedded.Config
// has no users or permissions.
func TestPublisher_PermissionDenied(t *testing.T) {
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoSigs: true, JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{{
			Username: "app", Password: "pw",
			Permissions: &server.Permissions{Publish: &server.SubjectPermission{
				Allow: []string{">"},
				Deny:  []string{events.EventsPrefix + ".t1.*.secret.>"},
			}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("app", "pw"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	mustEnsureStreams(t, js, events.StreamOptions{})
	l := tempLog(t)
	p := mustPublisher(t, l, js, nc, PublisherConfig{AckTimeout: 300 * time.Millisecond, BackoffInitial: 10 * time.Millisecond})

	evs := mustAppend(t, l, put("ok", "a", 1), put("secret", "b", 2), put("ok", "c", 3))
	fctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := p.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	failed := entryByID(t, l, evs[1].ID)
	if failed.State != StateFailed || !strings.Contains(strings.ToLower(failed.Err), "permission") {
		t.Fatalf("denied entry %+v, want failed with the permission violation", failed)
	}
	t.Logf("reason: %s", failed.Err)
	for _, i := range []int{0, 2} {
		if st := stateOf(t, l, evs[i].ID); st != StatePublished {
			t.Fatalf("event %d is %s, want published", i, st)
		}
	}
	stored := readEvents(t, js)
	if len(stored) != 2 {
		t.Fatalf("stream holds %d events, want 2", len(stored))
	}
}

func TestPermanent(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"max payload", nats.ErrMaxPayload, true},
		{"permission", errors.Join(nats.ErrPermissionViolation, errors.New("x")), true},
		{"too large", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum}, true},
		{"headers too large", &jetstream.APIError{Code: 400, ErrorCode: 10097}, true},
		{"account out of storage (400, but passes once space is freed)", &jetstream.APIError{Code: 400, ErrorCode: 10002}, false},
		{"stream not found (yet)", &jetstream.APIError{Code: 404, ErrorCode: jetstream.JSErrCodeStreamNotFound}, false},
		{"sealed stream", &jetstream.APIError{Code: 400, ErrorCode: 10109}, false},
		{"unavailable", &jetstream.APIError{Code: 503, ErrorCode: 10008}, false},
		{"no responders", jetstream.ErrNoStreamResponse, false},
		{"disconnected", nats.ErrDisconnected, false},
		{"timeout", ErrAckTimeout, false},
		{"stalled", jetstream.ErrTooManyStalledMsgs, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := permanent(tt.err); got != tt.want {
				t.Fatalf("permanent(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestPublisher_PublishesWhileStoringIsSlow: storing acks (a bbolt commit
// with an fsync) never holds publishing back. While the log's file is held
// by another write transaction, the publisher keeps sending until every
// pending entry is in EVENTS; the acks are stored once the file is free,
// each entry published exactly once.
func TestPublisher_PublishesWhileStoringIsSlow(t *testing.T) {
	const n = 3000 // well above MaxInFlight times any fixed number of queued batches
	s := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	mustEnsureStreams(t, js, events.StreamOptions{})
	l := tempLog(t)
	var ws []Write
	for i := range n {
		ws = append(ws, put("c", fmt.Sprintf("d%d", i%512), i))
	}
	mustAppend(t, l, ws...)

	// Hold the file's writer lock: every commit of the publisher waits.
	held, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = l.db.Update(func(*bbolt.Tx) error { close(held); <-release; return nil })
	}()
	<-held
	released := false
	defer func() {
		if !released {
			close(release)
		}
		wg.Wait()
	}()

	p := mustPublisher(t, l, js, nc, PublisherConfig{MaxInFlight: 16})
	stream, err := js.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "every entry in EVENTS while acks cannot be stored", func() bool {
		info, err := stream.Info(t.Context())
		return err == nil && info.State.Msgs == n
	})
	if st := p.Status(); st.Pending != n {
		t.Fatalf("with the file held: %d pending, want all %d (nothing stored yet)", st.Pending, n)
	}
	close(release)
	released = true
	fctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := p.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	es, err := l.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.State != StatePublished || e.Duplicate {
			t.Fatalf("entry %d: %s duplicate=%v, want published once", e.Event.Seq, e.State, e.Duplicate)
		}
	}
	stored := readEvents(t, js)
	if len(stored) != n {
		t.Fatalf("stream holds %d events, want %d", len(stored), n)
	}
	checkOrder(t, stored, 16)
}
