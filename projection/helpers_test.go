package projection_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// env is a real embedded JetStream with ebb's four streams.
type env struct {
	srv *embedded.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

func newEnv(tb testing.TB, opts ...func(*embedded.Config)) *env {
	tb.Helper()
	s := embeddedtest.MustStart(tb, opts...)
	nc := embeddedtest.MustConnect(tb, s)
	js := embeddedtest.MustJetStream(tb, nc)
	if err := events.EnsureStreams(context.Background(), js, events.StreamOptions{}); err != nil {
		tb.Fatal(err)
	}
	return &env{srv: s, nc: nc, js: js}
}

func mustOpenBolt(tb testing.TB, path string) *projection.BoltStore {
	tb.Helper()
	if path == "" {
		path = filepath.Join(tb.TempDir(), "view.db")
	}
	s, err := projection.OpenBolt(path, projection.BoltOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// waitFor waits on a condition with a deadline.
var waitFor = embeddedtest.WaitFor

func lastSeq(tb testing.TB, js jetstream.JetStream, stream string) uint64 {
	tb.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.LastSeq
}

func msgCount(tb testing.TB, js jetstream.JetStream, stream string) uint64 {
	tb.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Msgs
}

// readAll returns every message of a stream.
func readAll(tb testing.TB, js jetstream.JetStream, stream string) []jetstream.Msg {
	tb.Helper()
	n := msgCount(tb, js, stream)
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		tb.Fatal(err)
	}
	defer it.Stop()
	var out []jetstream.Msg
	for uint64(len(out)) < n {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			tb.Fatalf("read %s: %v after %d of %d", stream, err, len(out), n)
		}
		out = append(out, m)
	}
	return out
}

// writer is one test client: ids, sequence, clock offset.
type writer struct {
	tenant, client string
	seq            uint64
	ids            *events.IDSource
	offset         time.Duration // clock error
}

func newWriter(tenant, client string, offset time.Duration) *writer {
	return &writer{tenant: tenant, client: client, ids: events.NewIDSource(nil), offset: offset}
}

func (w *writer) event(coll, doc string, op events.Op, base uint64, fields map[string]any) *events.Event {
	w.seq++
	ev := &events.Event{
		Schema: events.SchemaVersion, ID: w.ids.New().String(), Tenant: w.tenant, Collection: coll, Doc: doc,
		Op: op, BaseVersion: base, HLC: events.HLC{Wall: time.Now().Add(w.offset).UnixMilli(), Logical: uint32(w.seq)},
		Client: w.client, Seq: w.seq,
	}
	for k, v := range fields {
		if ev.Fields == nil {
			ev.Fields = events.Fields{}
		}
		b, _ := json.Marshal(v)
		ev.Fields[k] = b
	}
	return ev
}

func eventMsg(tb testing.TB, ev *events.Event) *nats.Msg {
	tb.Helper()
	data, err := events.EncodeEvent(ev)
	if err != nil {
		tb.Fatal(err)
	}
	m := nats.NewMsg(ev.Subject())
	m.Data = data
	return m
}

func publish(tb testing.TB, js jetstream.JetStream, m *nats.Msg, msgID string) uint64 {
	tb.Helper()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := js.PublishMsg(context.Background(), m, opts...)
	if err != nil {
		tb.Fatalf("publish %s: %v", m.Subject, err)
	}
	return ack.Sequence
}

func startProjector(tb testing.TB, js jetstream.JetStream, store projection.Store, cfg projection.Config) *projection.Projector {
	tb.Helper()
	p, err := projection.New(js, store, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Errorf("close projector: %v", err)
		}
	})
	return p
}

func waitCheckpoint(tb testing.TB, p *projection.Projector, seq uint64) {
	tb.Helper()
	waitFor(tb, 30*time.Second, fmt.Sprintf("checkpoint %d", seq), func() bool {
		select {
		case <-p.Done():
			tb.Fatalf("projector stopped: %v", p.Err())
		default:
		}
		return p.Stats().Checkpoint >= seq
	})
}

// testPolicies is the per-collection configuration the tests use.
func testPolicies() projection.Policies {
	return projection.Policies{Default: projection.LWW, Collections: map[string]projection.Resolver{
		"notes": projection.LWW, "profiles": projection.Merge, "orders": projection.Reject, "contracts": projection.Manual,
	}}
}
