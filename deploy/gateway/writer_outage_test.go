package gateway_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// receiptsConsumers is how many consumers RECEIPTS has.
func receiptsConsumers(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	st, err := js.Stream(t.Context(), events.StreamReceipts)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Consumers
}

// TestWriter_ClosedLogReopensWithNATSDown: a closed log's receipts
// consumer is deleted on the server; with the writer's NATS connection
// down, the log reopens without it: GET of its settled write answers from
// the file, a new write is accepted durably (202), and once NATS is back
// it is published and settles.
func TestWriter_ClosedLogReopensWithNATSDown(t *testing.T) {
	s := embeddedtest.MustStart(t, func(c *embedded.Config) { c.Sync.Interval = time.Minute; c.Listen = "127.0.0.1:-1" })
	e := &writeEnv{s: s, dir: filepath.Join(t.TempDir(), "gateway"), view: filepath.Join(t.TempDir(), "view.db")}
	e.nc = embeddedtest.MustConnect(t, s)
	e.js = embeddedtest.MustJetStream(t, e.nc)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, e.js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	e.startProjector(t)
	u, err := url.Parse(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	px := newCutProxy(t, u.Host)
	wnc, err := nats.Connect("nats://"+px.ln.Addr().String(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wnc.Close)
	wjs := embeddedtest.MustJetStream(t, wnc)
	w, err := gateway.OpenWriter(ctx, gateway.WriterConfig{Dir: e.dir, JetStream: wjs, Conn: wnc, IdleClose: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{JetStream: e.js, Writer: w, WriteWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.w, e.srv = w, httptest.NewServer(g)
	t.Cleanup(func() { e.closeWriter(t) })

	first := e.send(t, "PUT", "/v1/acme/docs/todos/a", `{"x":1}`)
	if first.status != http.StatusCreated && first.status != http.StatusAccepted {
		t.Fatalf("first write: %d %s", first.status, first.raw)
	}
	embeddedtest.WaitFor(t, 10*time.Second, "the first write applies", func() bool {
		return e.send(t, "GET", "/v1/acme/writes/"+first.body.Event, "").body.Status == "applied"
	})
	embeddedtest.WaitFor(t, 10*time.Second, "the idle log is closed and its receipts consumer deleted", func() bool {
		return openLogFiles(t, "self", e.dir) == 0 && receiptsConsumers(t, e.js) == 0
	})

	px.cut()
	embeddedtest.WaitFor(t, 10*time.Second, "the writer's connection is down", func() bool { return !wnc.IsConnected() })
	start := time.Now()
	if got := e.send(t, "GET", "/v1/acme/writes/"+first.body.Event, "").want(t, http.StatusOK); got.body.Status != "applied" {
		t.Fatalf("GET of the settled write with NATS down: %s", got.raw)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("GET of a write with NATS down took %v: it waited on NATS", d)
	}
	second := e.send(t, "PUT", "/v1/acme/docs/todos/b", `{"x":2}`).want(t, http.StatusAccepted)
	if second.body.Status != "pending" {
		t.Fatalf("a write with NATS down: %s, want pending", second.raw)
	}

	px.heal()
	embeddedtest.WaitFor(t, 20*time.Second, "the write taken during the outage applies", func() bool {
		return e.send(t, "GET", "/v1/acme/writes/"+second.body.Event, "").body.Status == "applied"
	})
}

// TestWriter_ConsumerLimitDoesNotFailReopen: when RECEIPTS refuses a
// log's consumer (its consumer limit, shared with users' consumers, is
// reached), the write is still accepted and published, the refusal is
// logged, and once a consumer frees the follower starts and the write
// settles.
func TestWriter_ConsumerLimitDoesNotFailReopen(t *testing.T) {
	logs := &embeddedtest.Buffer{}
	e := newUsersWriteEnv(t, 1, true, 300*time.Millisecond, func(c *gateway.WriterConfig) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		c.Publisher.BackoffMax = 200 * time.Millisecond // retry the follower often
	})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := e.js.Stream(ctx, events.StreamReceipts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxConsumers = 1
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.CreateConsumer(ctx, events.StreamReceipts, jetstream.ConsumerConfig{Durable: "filler"}); err != nil {
		t.Fatal(err)
	}

	a := e.send(t, "PUT", "/v1/acme/docs/todos/a", `{"x":1}`, "user", userName(0)).want(t, http.StatusAccepted)
	embeddedtest.WaitFor(t, 10*time.Second, "the write is published though its log has no follower", func() bool { return e.countEvents(t) == 1 })
	embeddedtest.WaitFor(t, 10*time.Second, "the refused consumer is logged", func() bool {
		return strings.Contains(logs.String(), "consumer limit is reached")
	})
	if got := e.send(t, "GET", "/v1/acme/writes/"+a.body.Event, "", "user", userName(0)).want(t, http.StatusOK); got.body.Status != "published" {
		t.Fatalf("the write without a follower: %s, want published", got.raw)
	}

	if err := e.js.DeleteConsumer(ctx, events.StreamReceipts, "filler"); err != nil {
		t.Fatal(err)
	}
	embeddedtest.WaitFor(t, 15*time.Second, "the write settles once the follower gets a consumer", func() bool {
		return e.send(t, "GET", "/v1/acme/writes/"+a.body.Event, "", "user", userName(0)).body.Status == "applied"
	})
	if !strings.Contains(logs.String(), "receipt follower started") {
		t.Errorf("no log line for the follower's late start:\n%s", logs.String())
	}
}
