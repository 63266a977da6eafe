package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// waitFor waits on a condition with a deadline.
var waitFor = embeddedtest.WaitFor

// mustOpen opens a log in dir for tenant "t1".
func mustOpen(t testing.TB, path string, mod ...func(*LogConfig)) *Log {
	t.Helper()
	cfg := LogConfig{Tenant: "t1"}
	for _, m := range mod {
		m(&cfg)
	}
	l, err := Open(path, cfg)
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func tempLog(t testing.TB, mod ...func(*LogConfig)) *Log {
	t.Helper()
	return mustOpen(t, filepath.Join(t.TempDir(), "log.db"), mod...)
}

// put is a put write of doc with one field.
func put(collection, doc string, v any) Write {
	b, _ := json.Marshal(v)
	return Write{Collection: collection, Doc: doc, Op: events.OpPut, Fields: events.Fields{"v": b}}
}

func mustAppend(t testing.TB, l *Log, ws ...Write) []*events.Event {
	t.Helper()
	evs, err := l.AppendBatch(t.Context(), ws)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return evs
}

func mustPublisher(t testing.TB, l *Log, js JetStream, conn Conn, cfg PublisherConfig) *Publisher {
	t.Helper()
	p, err := NewPublisher(l, js, conn, cfg)
	if err != nil {
		t.Fatalf("new publisher: %v", err)
	}
	if err := p.Start(t.Context()); err != nil {
		t.Fatalf("start publisher: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func mustEnsureStreams(t testing.TB, js jetstream.JetStream, o events.StreamOptions) {
	t.Helper()
	if err := events.EnsureStreams(t.Context(), js, o); err != nil {
		t.Fatalf("ensure streams: %v", err)
	}
}

// storedEvent is one message of EVENTS.
type storedEvent struct {
	StreamSeq uint64
	MsgID     string
	Header    nats.Header
	Event     *events.Event
}

// readEvents returns every message in EVENTS in stream order.
func readEvents(t testing.TB, js jetstream.JetStream) []storedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	var out []storedEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("get msg %d: %v", seq, err)
		}
		e, err := events.DecodeEvent(m.Data, events.Limits{})
		if err != nil {
			t.Fatalf("decode msg %d: %v", seq, err)
		}
		out = append(out, storedEvent{StreamSeq: seq, MsgID: m.Header.Get(jetstream.MsgIDHeader), Header: m.Header, Event: e})
	}
	return out
}

// entryByID returns the log entry of event id.
func entryByID(t testing.TB, l *Log, id string) Entry {
	t.Helper()
	es, err := l.Entries(t.Context())
	if err != nil {
		t.Fatalf("entries: %v", err)
	}
	for _, e := range es {
		if e.Event.ID == id {
			return e
		}
	}
	t.Fatalf("no entry %s", id)
	return Entry{}
}

func stateOf(t testing.TB, l *Log, id string) State { return entryByID(t, l, id).State }

// checkOrder fails t unless the first copy of each event in the stream
// comes, per document, in client-sequence order (invariant 5), and no event
// is overtaken by one window or more client sequences later (the bound the
// projector's hole window relies on). Events of different documents may
// overtake one another within that bound.
func checkOrder(t testing.TB, stored []storedEvent, window uint64) {
	t.Helper()
	last := map[string]uint64{} // document subject -> client seq
	high := map[string]uint64{} // tenant/client -> highest client seq so far
	seen := map[string]bool{}
	for _, s := range stored {
		if seen[s.MsgID] {
			continue
		}
		seen[s.MsgID] = true
		subj := s.Event.Subject()
		if s.Event.Seq <= last[subj] {
			t.Errorf("stream seq %d: event %s of %s has client seq %d after %d of the same document",
				s.StreamSeq, s.MsgID, subj, s.Event.Seq, last[subj])
		}
		last[subj] = s.Event.Seq
		ck := s.Event.Tenant + "/" + s.Event.Client
		if h := high[ck]; h >= s.Event.Seq+window {
			t.Errorf("stream seq %d: event %s (client seq %d) overtaken by client seq %d, window %d",
				s.StreamSeq, s.MsgID, s.Event.Seq, h, window)
		}
		high[ck] = max(high[ck], s.Event.Seq)
		if s.MsgID != s.Event.ID {
			t.Errorf("stream seq %d: Nats-Msg-Id %q, event id %q", s.StreamSeq, s.MsgID, s.Event.ID)
		}
	}
}

func fmtStates(es []Entry) string {
	s := ""
	for _, e := range es {
		s += fmt.Sprintf("%d:%s ", e.Event.Seq, e.State)
	}
	return s
}
