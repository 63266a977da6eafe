package main

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// adminEnv is a JetStream with ebb's streams and a projector on a bbolt
// view, for the operator commands.
type adminEnv struct {
	url   string
	nc    *nats.Conn
	js    jetstream.JetStream
	store *projection.BoltStore
	proj  *projection.Projector
}

func newAdminEnv(t *testing.T, cfg projection.Config) *adminEnv {
	t.Helper()
	srv := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, srv)
	js := embeddedtest.MustJetStream(t, nc)
	if err := events.EnsureStreams(t.Context(), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	store, err := projection.OpenBolt(filepath.Join(t.TempDir(), "view.db"), projection.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &adminEnv{url: srv.ClientURL(), nc: nc, js: js, store: store}
	e.startProjector(t, cfg)
	return e
}

// startProjector (re)starts the projector on the view with cfg.
func (e *adminEnv) startProjector(t *testing.T, cfg projection.Config) {
	t.Helper()
	if e.proj != nil {
		if err := e.proj.Close(); err != nil {
			t.Fatal(err)
		}
	}
	p, err := projection.New(e.js, e.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	e.proj = p
}

func (e *adminEnv) msgs(t *testing.T, stream string) uint64 {
	t.Helper()
	s, err := e.js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// ebb runs an admin command against the env and decodes its --json output into v.
func (e *adminEnv) ebb(t *testing.T, v any, args ...string) string {
	t.Helper()
	out, stderr, code := runIn(t, map[string]string{"EBB_NATS": e.url}, append(args, "--json")...)
	if code != 0 {
		t.Fatalf("ebb %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("ebb %s --json: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return out
}

// A dead-lettered event, replayed after the fix, is judged again by the
// projector and applies; a second replay changes nothing; an event that
// fails again gets a new dead letter; each replay is recorded.
func TestDead_ListShowReplayAfterFix(t *testing.T) {
	// The projector refuses clocks more than 1s ahead of EVENTS' time.
	e := newAdminEnv(t, projection.Config{MaxDrift: time.Second})
	ids := events.NewIDSource(nil)
	ev := &events.Event{Schema: events.SchemaVersion, ID: ids.New().String(), Tenant: "acme", Collection: "todos", Doc: "t1",
		Op: events.OpPut, Fields: events.Fields{"title": json.RawMessage(`"milk"`)},
		HLC: events.HLC{Wall: time.Now().Add(time.Minute).UnixMilli()}, Client: "alice", Seq: 1}
	data, err := events.EncodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.PublishMsg(t.Context(), &nats.Msg{Subject: ev.Subject(), Data: data, Header: nats.Header{"traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}}, jetstream.WithMsgID(ev.ID)); err != nil {
		t.Fatal(err)
	}
	// Garbage on an event subject: dead now, and dead again when replayed.
	if _, err := e.js.Publish(t.Context(), events.EventSubject("acme", "bob", "todos", "t2"), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	embeddedtest.WaitFor(t, 10*time.Second, "two dead letters", func() bool { return e.msgs(t, events.StreamDead) == 2 })

	var list []deadRecord
	e.ebb(t, &list, "dead", "list")
	if len(list) != 2 || list[0].Letter.Event != ev.ID || !list[0].Replayable || list[0].Replay != nil || !strings.Contains(list[0].Letter.Reason, "hlc") {
		t.Fatalf("dead list: %+v", list)
	}
	clockID, garbageID := list[0].ID, list[1].ID
	var only []deadRecord
	if e.ebb(t, &only, "dead", "list", "--tenant", "nobody"); len(only) != 0 {
		t.Fatalf("dead list --tenant nobody: %+v", only)
	}
	if doc, err := e.store.Get(t.Context(), ev.Address()); err != nil || doc.Version != 0 {
		t.Fatalf("dead-lettered event changed the view: %+v %v", doc, err)
	}

	// The fix: the default drift bound (5 minutes).
	e.startProjector(t, projection.Config{})
	var res []replayResult
	e.ebb(t, &res, "dead", "replay", itoa(clockID))
	if len(res) != 1 || !res[0].Replayed || res[0].Record == nil || res[0].Record.Source != "events" || res[0].Record.Event != ev.ID {
		t.Fatalf("dead replay: %+v", res)
	}
	seq := res[0].Record.Seq
	embeddedtest.WaitFor(t, 10*time.Second, "the replayed event applied", func() bool {
		doc, err := e.store.Get(t.Context(), ev.Address())
		return err == nil && doc.Version == 1 && string(doc.Fields["title"]) == `"milk"`
	})
	// Its receipt has the first receipt's Nats-Msg-Id: inside RECEIPTS'
	// duplicate window JetStream drops it (as ebb help dead says), once
	// the projector has published its batch and acked it.
	embeddedtest.WaitFor(t, 10*time.Second, "the projector's ack of the replay", func() bool {
		var rec streamsRecord
		e.ebb(t, &rec, "streams")
		return len(rec.Projectors) == 1 && rec.Projectors[0].AckFloor >= res[0].Record.Seq
	})
	if n := e.msgs(t, events.StreamReceipts); n != 1 {
		t.Fatalf("RECEIPTS holds %d receipts, want the first (invalid) one only", n)
	}
	// The copy is the original: same payload and trace context, marked as a replay.
	evs, _ := e.js.Stream(t.Context(), events.StreamEvents)
	cp, err := evs.GetMsg(t.Context(), seq)
	if err != nil || string(cp.Data) != string(data) || cp.Header.Get("traceparent") == "" || cp.Header.Get(replayHeader) != itoa(clockID) {
		t.Fatalf("replayed copy at %d: %v %+v", seq, err, cp)
	}

	// Again: recorded, nothing re-submitted.
	before := e.msgs(t, events.StreamEvents)
	e.ebb(t, &res, "dead", "replay", itoa(clockID))
	if len(res) != 1 || res[0].Replayed || res[0].Record == nil || res[0].Record.Seq != seq || e.msgs(t, events.StreamEvents) != before {
		t.Fatalf("second replay: %+v (EVENTS %d -> %d)", res, before, e.msgs(t, events.StreamEvents))
	}
	var shown deadRecord
	e.ebb(t, &shown, "dead", "show", itoa(clockID))
	if shown.Replay == nil || shown.Replay.Seq != seq {
		t.Fatalf("dead show after replay: %+v", shown)
	}

	// --all replays the garbage, which is refused again: a new dead letter.
	e.ebb(t, &res, "dead", "replay", "--all")
	if len(res) != 1 || res[0].ID != garbageID || !res[0].Replayed {
		t.Fatalf("dead replay --all: %+v", res)
	}
	embeddedtest.WaitFor(t, 10*time.Second, "the garbage dead again", func() bool {
		var l []deadRecord
		e.ebb(t, &l, "dead", "list")
		return len(l) == 3 && l[2].Letter.Stream == res[0].Record.Seq && l[2].Replay == nil && l[2].ReplayOf == garbageID
	})
	if e.ebb(t, &res, "dead", "replay", "--all"); len(res) != 0 {
		t.Fatalf("dead replay --all replays only letters of original events not replayed yet: %+v", res)
	}
	if _, stderr, code := runIn(t, map[string]string{"EBB_NATS": e.url}, "dead", "show", "999"); code != 2 || !strings.Contains(stderr, "no dead letter 999") {
		t.Fatalf("dead show 999: %d %s", code, stderr)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
