package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestStreams_StateAndLag reports the four streams and the projector's lag.
func TestStreams_StateAndLag(t *testing.T) {
	e := newAdminEnv(t, projection.Config{})
	ids := events.NewIDSource(nil)
	for i := range 3 {
		ev := &events.Event{Schema: events.SchemaVersion, ID: ids.New().String(), Tenant: "acme", Collection: "todos", Doc: "t1",
			Op: events.OpPut, Fields: events.Fields{"n": json.RawMessage(itoa(uint64(i)))}, BaseVersion: uint64(i),
			HLC: events.HLC{Wall: time.Now().UnixMilli(), Logical: uint32(i)}, Client: "alice", Seq: uint64(i + 1)}
		data, _ := events.EncodeEvent(ev)
		if _, err := e.js.Publish(t.Context(), ev.Subject(), data, jetstream.WithMsgID(ev.ID)); err != nil {
			t.Fatal(err)
		}
	}
	var rec streamsRecord
	embeddedtest.WaitFor(t, 10*time.Second, "the projector caught up", func() bool {
		e.ebb(t, &rec, "streams")
		return len(rec.Projectors) == 1 && rec.Projectors[0].Lag == 0 && rec.Projectors[0].AckFloor == 3
	})
	// One streams call reads the streams before the durable, so it is no
	// snapshot: the streams it read may predate the publishes behind the
	// ack floor it read. The projector acks only what it has published, so
	// a second call, after the ack floor was seen at 3, must see them.
	e.ebb(t, &rec, "streams")
	if len(rec.Streams) != 4 || rec.Streams[0].Name != events.StreamEvents || rec.Streams[0].Messages != 3 || rec.Streams[0].LastSeq != 3 ||
		rec.Streams[1].Messages != 1 || rec.Streams[0].Replicas != 1 || rec.Projectors[0].Durable != projection.DefaultDurable || rec.Projectors[0].AckFloor != 3 {
		t.Fatalf("streams: %+v", rec)
	}
	// Stopped projector, one more event: lag 1.
	if err := e.proj.Close(); err != nil {
		t.Fatal(err)
	}
	ev := &events.Event{Schema: events.SchemaVersion, ID: ids.New().String(), Tenant: "acme", Collection: "todos", Doc: "t2",
		Op: events.OpPut, HLC: events.HLC{Wall: time.Now().UnixMilli()}, Client: "alice", Seq: 4}
	data, _ := events.EncodeEvent(ev)
	if _, err := e.js.Publish(context.Background(), ev.Subject(), data); err != nil {
		t.Fatal(err)
	}
	e.ebb(t, &rec, "streams")
	if rec.Projectors[0].Lag != 1 || rec.Streams[0].LastSeq != 4 {
		t.Fatalf("streams with a stopped projector: %+v", rec.Projectors)
	}
	out, _, code := runIn(t, map[string]string{"EBB_NATS": e.url}, "streams")
	if code != 0 || !strings.Contains(out, "EVENTS") || !strings.Contains(out, projection.DefaultDurable) {
		t.Fatalf("streams: %d\n%s", code, out)
	}
}

// With --http, streams also shows the checkpoint the server committed,
// from its /metrics.
func TestStreams_ServerCheckpoint(t *testing.T) {
	s := serveInProcess(t, "")
	env := map[string]string{"EBB_NATS": s.nats, "EBB_DATA": filepath.Join(t.TempDir(), "alice"), "EBB_TENANT": "acme"}
	if out, stderr, code := runIn(t, env, "put", "todos", "t1", `{"title":"milk"}`); code != 0 {
		t.Fatalf("put: %d %s %s", code, out, stderr)
	}
	var rec streamsRecord
	embeddedtest.WaitFor(t, 10*time.Second, "the server's checkpoint 1", func() bool {
		out, _, code := runIn(t, env, "streams", "--http", s.http, "--json")
		return code == 0 && json.Unmarshal([]byte(out), &rec) == nil && rec.Server != nil && rec.Server.Checkpoint == 1
	})
	if !rec.Server.Applying || rec.Server.Lag != 0 || rec.Streams[0].LastSeq != 1 {
		t.Fatalf("streams --http: %+v", rec.Server)
	}
	if out, _, code := runIn(t, env, "streams", "--http", s.http); code != 0 || !strings.Contains(out, "projector checkpoint 1, lag 0") {
		t.Fatalf("streams --http: %d\n%s", code, out)
	}
}
