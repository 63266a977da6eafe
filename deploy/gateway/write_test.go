package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// writeEnv is a server as `ebb serve` runs it: embedded NATS with the
// streams, a projector on a bbolt view, and the gateway with a Writer.
type writeEnv struct {
	s    *embedded.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	dir  string // the writer's directory
	w    *gateway.Writer
	srv  *httptest.Server
	view string // the projector's view store
	proj *projection.Projector
	stop func() // stops proj and closes its store
	// users, if set, turns authentication on; send's headers may then
	// carry "user" (a name whose password is name+"-pw").
	users *auth.Users
	// groups, if set, is the gateway's Config.Groups.
	groups func(auth.User) []string
	// visibility, if set, is the gateway's Config.Visibility (sync rules).
	visibility gateway.Visibility
	// wcfg, if set, changes the WriterConfig openWriter opens the Writer with.
	wcfg func(*gateway.WriterConfig)
}

// writePolicies: "todos" last writer wins, "strict" rejects stale writes,
// "shared" keeps conflicts for a person to settle.
var writePolicies = projection.Policies{Collections: map[string]projection.Resolver{
	"strict": projection.Reject, "shared": projection.Manual}}

// newWriteEnv starts the server, with its projector if withProjector, and
// a gateway whose writes wait up to wait for their receipts.
func newWriteEnv(t *testing.T, withProjector bool, wait time.Duration) *writeEnv {
	t.Helper()
	s := embeddedtest.MustStart(t, func(c *embedded.Config) { c.Sync.Interval = time.Minute })
	e := &writeEnv{s: s, dir: filepath.Join(t.TempDir(), "gateway"), view: filepath.Join(t.TempDir(), "view.db")}
	e.nc = embeddedtest.MustConnect(t, s)
	e.js = embeddedtest.MustJetStream(t, e.nc)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, e.js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if withProjector {
		e.startProjector(t)
	}
	e.openWriter(t, wait)
	return e
}

func (e *writeEnv) startProjector(t *testing.T) {
	t.Helper()
	store, err := projection.OpenBolt(e.view, projection.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := projection.New(e.js, store, projection.Config{Policies: writePolicies})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	stopped := false
	e.proj, e.stop = p, func() {
		if !stopped {
			stopped = true
			_ = p.Close()
			_ = store.Close()
		}
	}
	t.Cleanup(e.stop)
}

// openWriter opens the Writer on e.dir and serves a gateway with it.
func (e *writeEnv) openWriter(t *testing.T, wait time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	wc := gateway.WriterConfig{Dir: e.dir, JetStream: e.js, Conn: e.nc}
	if e.wcfg != nil {
		e.wcfg(&wc)
	}
	w, err := gateway.OpenWriter(ctx, wc)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{JetStream: e.js, Writer: w, WriteWait: wait, Users: e.users, Groups: e.groups, Visibility: e.visibility})
	if err != nil {
		t.Fatal(err)
	}
	e.w, e.srv = w, httptest.NewServer(g)
	t.Cleanup(func() { e.closeWriter(t) })
}

func (e *writeEnv) closeWriter(t *testing.T) {
	if e.srv != nil {
		e.srv.Close()
		if err := e.w.Close(); err != nil {
			t.Errorf("close writer: %v", err)
		}
		e.srv = nil
	}
}

type answer struct {
	status int
	header http.Header
	body   gateway.WriteResponse
	raw    string
}

func (e *writeEnv) send(t *testing.T, method, path, body string, headers ...string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "user" {
			req.SetBasicAuth(headers[i+1], headers[i+1]+"-pw")
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

func (a answer) want(t *testing.T, status int) answer {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.raw)
	}
	return a
}

// countEvents is how many events EVENTS holds.
func (e *writeEnv) countEvents(t *testing.T) uint64 {
	t.Helper()
	st, err := e.js.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestWrite_PutCreatesAndReplicaReceives: a curl-like PUT creates the
// document (201, ETag "1", the receipt's outcome), the event is the
// server's (its client id is the writing identity, its sequence 1), and a
// replica that syncs the tenant receives the document.
func TestWrite_PutCreatesAndReplicaReceives(t *testing.T) {
	e := newWriteEnv(t, true, 10*time.Second)
	a := e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"title":"milk","done":false}`).want(t, http.StatusCreated)
	if a.header.Get("ETag") != `"1"` || a.body.Status != "applied" || a.body.Version != 1 || a.body.Event == "" {
		t.Fatalf("answer: ETag %q, %+v", a.header.Get("ETag"), a.body)
	}
	if loc := a.header.Get("Location"); loc != "/v1/acme/docs/todos/t1" {
		t.Fatalf("Location %q", loc)
	}
	st, err := e.js.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.DecodeEvent(m.Data, events.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != a.body.Event || ev.Client != gateway.DefaultWriteClient || ev.Seq != 1 || ev.Device == "" || ev.HLC.Wall == 0 {
		t.Fatalf("event in EVENTS: %+v", ev)
	}

	r, err := consumer.OpenReplica(t.Context(), consumer.ReplicaConfig{Dir: t.TempDir(), Tenant: "acme", Conn: e.nc, Policies: writePolicies})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	var doc consumer.Doc
	embeddedtest.WaitFor(t, 10*time.Second, "the replica receives t1", func() bool {
		doc, err = r.Get(t.Context(), "todos", "t1")
		return err == nil
	})
	if doc.Version != 1 || string(doc.Fields["title"]) != `"milk"` {
		t.Fatalf("replica doc: %+v", doc)
	}
}

// TestWrite_StaleIfMatch: If-Match with the current version writes on
// it; with an older one the answer is 412 with the current ETag and
// nothing is written.
func TestWrite_StaleIfMatch(t *testing.T) {
	e := newWriteEnv(t, true, 10*time.Second)
	e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"title":"a"}`).want(t, http.StatusCreated)
	a := e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"title":"b"}`, "If-Match", `"1"`).want(t, http.StatusOK)
	if a.header.Get("ETag") != `"2"` || a.body.Version != 2 {
		t.Fatalf("second put: ETag %q, %+v", a.header.Get("ETag"), a.body)
	}
	n := e.countEvents(t)
	a = e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"title":"c"}`, "If-Match", `"1"`).want(t, http.StatusPreconditionFailed)
	if a.header.Get("ETag") != `"2"` || !strings.Contains(a.raw, "version 2") {
		t.Fatalf("stale put: ETag %q, %s", a.header.Get("ETag"), a.raw)
	}
	e.send(t, "PATCH", "/v1/acme/docs/todos/t1", `{"title":"c"}`, "If-Match", "1").want(t, http.StatusPreconditionFailed)
	e.send(t, "DELETE", "/v1/acme/docs/todos/t1", ``, "If-Match", `"1"`).want(t, http.StatusPreconditionFailed)
	e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"title":"c"}`, "If-None-Match", "*").want(t, http.StatusPreconditionFailed)
	e.send(t, "PUT", "/v1/acme/docs/todos/nope", `{"title":"c"}`, "If-Match", `"1"`).want(t, http.StatusPreconditionFailed)
	if got := e.countEvents(t); got != n {
		t.Fatalf("EVENTS holds %d events after refused writes, want %d", got, n)
	}
	e.send(t, "GET", "/v1/acme/docs/todos/t1", "").want(t, http.StatusOK)
}

// TestWrite_IdempotencyKeyAppliesOnce: the same request sent again with
// the same Idempotency-Key answers from the first event (replayed), even
// though the document's version moved on because of it, and writes
// nothing; the key with another request is 422.
func TestWrite_IdempotencyKeyAppliesOnce(t *testing.T) {
	e := newWriteEnv(t, true, 10*time.Second)
	first := e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":1}`, "Idempotency-Key", "k-1").want(t, http.StatusCreated)
	again := e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":1}`, "Idempotency-Key", "k-1").want(t, http.StatusCreated)
	if again.body.Event != first.body.Event || !again.body.Replayed || again.body.Version != 1 {
		t.Fatalf("retry: %+v, first %+v", again.body, first.body)
	}
	// With If-Match too: the retry is not 412 although the version is 2 now.
	up := e.send(t, "PATCH", "/v1/acme/docs/todos/t1", `{"n":2}`, "If-Match", `"1"`, "Idempotency-Key", "k-2").want(t, http.StatusOK)
	e.send(t, "PATCH", "/v1/acme/docs/todos/t1", `{"n":2}`, "If-Match", `"1"`, "Idempotency-Key", "k-2").want(t, http.StatusOK)
	if got := e.countEvents(t); got != 2 {
		t.Fatalf("EVENTS holds %d events, want 2", got)
	}
	a := e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":3}`, "Idempotency-Key", "k-1").want(t, http.StatusUnprocessableEntity)
	if !strings.Contains(a.raw, "reused") {
		t.Fatalf("reused key: %s", a.raw)
	}
	doc := e.send(t, "GET", "/v1/acme/docs/todos/t1", "").want(t, http.StatusOK)
	var rec gateway.DocRecord
	if err := json.Unmarshal([]byte(doc.raw), &rec); err != nil || rec.Version != 2 || string(rec.Doc["n"]) != "2" {
		t.Fatalf("doc %s (%v), want version 2 (patch %s)", doc.raw, err, up.body.Event)
	}
}

// TestWrite_Outcomes: PATCH and DELETE need If-Match (428); a delete
// applies; a stale write that races past the gateway's check is settled
// by the collection's policy: 412 under reject, 409 with the conflict id
// under manual.
func TestWrite_Outcomes(t *testing.T) {
	e := newWriteEnv(t, true, 10*time.Second)
	e.send(t, "PATCH", "/v1/acme/docs/todos/t1", `{"n":1}`).want(t, http.StatusPreconditionRequired)
	e.send(t, "DELETE", "/v1/acme/docs/todos/t1", ``).want(t, http.StatusPreconditionRequired)
	e.send(t, "PUT", "/v1/acme/docs/todos/t1", `[1]`).want(t, http.StatusBadRequest)
	e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":1}`, "If-Match", `W/"1"`).want(t, http.StatusBadRequest)
	e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":1}`, "If-None-Match", "*").want(t, http.StatusCreated)
	e.send(t, "DELETE", "/v1/acme/docs/todos/t1", ``, "If-Match", "*").want(t, http.StatusOK)
	e.send(t, "GET", "/v1/acme/docs/todos/t1", "").want(t, http.StatusNotFound)

	// A race the gateway's check cannot see: a client's event on version
	// 1 is in EVENTS, not applied yet (the projector is stopped), when the
	// HTTP write reads version 1 and is written on it. The projector then
	// applies the client's first, and the HTTP write is stale: under
	// reject it is rejected (412, since it had If-Match), under manual it
	// is kept as a conflict (409 with the conflict's id).
	for _, tc := range []struct {
		coll, ifMatch string
		status        int
		want          string
	}{{"strict", `"1"`, http.StatusPreconditionFailed, "rejected"}, {"shared", "", http.StatusConflict, "conflict"}} {
		top := t // the projector outlives each subtest
		t.Run(tc.coll, func(t *testing.T) {
			e.send(t, "PUT", "/v1/acme/docs/"+tc.coll+"/d", `{"n":1}`).want(t, http.StatusCreated)
			e.stop()
			clk, ids := events.NewClock(nil, 0), events.NewIDSource(nil)
			ev := events.Event{Schema: 1, ID: ids.New().String(), Tenant: "acme", Collection: tc.coll, Doc: "d", Op: events.OpPut,
				Fields: events.Fields{"n": json.RawMessage("7")}, BaseVersion: 1, HLC: clk.Now(), Client: "phone-" + tc.coll, Seq: 1}
			body, _ := json.Marshal([]events.Event{ev})
			e.send(t, "POST", "/v1/acme/events", string(body)).want(t, http.StatusOK)
			n := e.countEvents(t)
			done := make(chan answer, 1)
			headers := []string{}
			if tc.ifMatch != "" {
				headers = []string{"If-Match", tc.ifMatch}
			}
			go func() { done <- e.send(t, "PUT", "/v1/acme/docs/"+tc.coll+"/d", `{"n":2}`, headers...) }()
			embeddedtest.WaitFor(t, 10*time.Second, "the HTTP write reaches EVENTS", func() bool { return e.countEvents(t) > n })
			e.startProjector(top)
			a := (<-done).want(t, tc.status)
			if a.body.Status != tc.want || a.body.Error == "" || (tc.want == "conflict" && a.body.Conflict == "") {
				t.Fatalf("answer %+v", a.body)
			}
		})
	}
}

// TestWrite_AcceptedWithoutReceiptThenPolled: with no projector running
// the receipt cannot come: the write is answered 202 with the event and a
// Location to poll; once a projector runs, the poll shows it applied.
func TestWrite_AcceptedWithoutReceiptThenPolled(t *testing.T) {
	e := newWriteEnv(t, false, 200*time.Millisecond)
	a := e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":1}`).want(t, http.StatusAccepted)
	loc := a.header.Get("Location")
	if a.body.Event == "" || loc != "/v1/acme/writes/"+a.body.Event || (a.body.Status != "pending" && a.body.Status != "published") {
		t.Fatalf("202: Location %q, %+v", loc, a.body)
	}
	e.startProjector(t)
	embeddedtest.WaitFor(t, 10*time.Second, "the poll shows the write applied", func() bool {
		p := e.send(t, "GET", loc, "").want(t, http.StatusOK)
		return p.body.Status == "applied" && p.body.Version == 1
	})
	e.send(t, "GET", "/v1/acme/writes/01ARZ3NDEKTSV4RRFFQ69G5FAV", "").want(t, http.StatusNotFound)
}

// TestWrite_AcknowledgedSurvivesWriterRestart: a write answered 202 while
// JetStream cannot take it (no EVENTS stream yet) is in the writer's log:
// after the writer closes and opens again on the same directory it is
// published and applied, once.
func TestWrite_AcknowledgedSurvivesWriterRestart(t *testing.T) {
	e := newWriteEnv(t, false, 200*time.Millisecond)
	if err := e.js.DeleteStream(t.Context(), events.StreamEvents); err != nil {
		t.Fatal(err)
	}
	a := e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":1}`, "Idempotency-Key", "once").want(t, http.StatusAccepted)
	if a.body.Status != "pending" {
		t.Fatalf("202 body %+v, want pending", a.body)
	}
	e.closeWriter(t)

	if err := events.EnsureStreams(t.Context(), e.js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	e.startProjector(t)
	e.openWriter(t, 10*time.Second)
	again := e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":1}`, "Idempotency-Key", "once").want(t, http.StatusCreated)
	if again.body.Event != a.body.Event || !again.body.Replayed {
		t.Fatalf("retry after restart: %+v, first %+v", again.body, a.body)
	}
	if n := e.countEvents(t); n != 1 {
		t.Fatalf("EVENTS holds %d events, want 1", n)
	}
}

// TestWrite_NoWriter: without a Writer the write routes say so (501).
func TestWrite_NoWriter(t *testing.T) {
	e := newEnv(t)
	code, body := e.do(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":1}`)
	if code != http.StatusNotImplemented || !strings.Contains(string(body), "writes are off") {
		t.Fatalf("%d %s", code, body)
	}
}

// TestWrite_IdentityUnderAuth: under authentication a service (or a
// client) of the tenant writes as itself: the event's client id is its
// user name and only it can poll the write; a user of another tenant gets
// 403, no credentials 401.
func TestWrite_IdentityUnderAuth(t *testing.T) {
	users, err := auth.Parse([]byte(`users:
  - {name: billing, password: billing-pw, tenant: acme, role: service}
  - {name: alice, password: alice-pw, tenant: acme, role: client}
  - {name: eve, password: eve-pw, tenant: other, role: client}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := embeddedtest.MustStart(t, func(c *embedded.Config) { c.Sync.Interval = time.Minute })
	e := &writeEnv{s: s, dir: filepath.Join(t.TempDir(), "gateway"), view: filepath.Join(t.TempDir(), "view.db"), users: users}
	e.nc = embeddedtest.MustConnect(t, s)
	e.js = embeddedtest.MustJetStream(t, e.nc)
	if err := events.EnsureStreams(t.Context(), e.js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	e.startProjector(t)
	e.openWriter(t, 10*time.Second)

	a := e.send(t, "PUT", "/v1/acme/docs/invoices/i1", `{"total":12}`, "user", "billing").want(t, http.StatusCreated)
	m, err := e.js.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := events.DecodeEvent(raw.Data, events.Limits{}); err != nil || ev.Client != "billing" {
		t.Fatalf("event %+v (%v), want client billing", ev, err)
	}
	e.send(t, "GET", "/v1/acme/writes/"+a.body.Event, "", "user", "billing").want(t, http.StatusOK)
	e.send(t, "GET", "/v1/acme/writes/"+a.body.Event, "", "user", "alice").want(t, http.StatusNotFound)
	e.send(t, "PATCH", "/v1/acme/docs/invoices/i1", `{"paid":true}`, "user", "alice", "If-Match", `"1"`).want(t, http.StatusOK)
	e.send(t, "PUT", "/v1/acme/docs/invoices/i2", `{"total":1}`, "user", "eve").want(t, http.StatusForbidden)
	e.send(t, "PUT", "/v1/acme/docs/invoices/i2", `{"total":1}`).want(t, http.StatusUnauthorized)
}

// TestWrite_ContinuesClientTrace: a write's traceparent is the parent of
// the gateway's ebb.gateway.write span, the producer's append and publish
// spans follow it, and the event in EVENTS carries the trace on to the
// projector, as a client's own write does.
func TestWrite_ContinuesClientTrace(t *testing.T) {
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	if err := events.EnsureStreams(t.Context(), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	w, err := gateway.OpenWriter(t.Context(), gateway.WriterConfig{Dir: t.TempDir(), JetStream: js, Conn: nc, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	g, err := gateway.New(gateway.Config{JetStream: js, Writer: w, WriteWait: 100 * time.Millisecond, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	e := &writeEnv{srv: srv, js: js}
	phoneTrace, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	phoneSpan, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":1}`, "traceparent", "00-"+phoneTrace.String()+"-"+phoneSpan.String()+"-01").
		want(t, http.StatusAccepted) // no projector: no receipt
	var m *jetstream.RawStreamMsg
	embeddedtest.WaitFor(t, 10*time.Second, "the event in EVENTS", func() bool {
		st, err := js.Stream(t.Context(), events.StreamEvents)
		if err != nil {
			return false
		}
		m, err = st.GetMsg(t.Context(), 1)
		return err == nil
	})
	byName := map[string]sdktrace.ReadOnlySpan{}
	embeddedtest.WaitFor(t, 10*time.Second, "the write, append and publish spans", func() bool {
		for _, sp := range exp.GetSpans().Snapshots() {
			byName[sp.Name()] = sp
		}
		return byName["ebb.gateway.write"] != nil && byName["ebb.producer.append"] != nil && byName["ebb.producer.publish"] != nil
	})
	write, appendSpan, publish := byName["ebb.gateway.write"], byName["ebb.producer.append"], byName["ebb.producer.publish"]
	if write.SpanContext().TraceID() != phoneTrace || write.Parent().SpanID() != phoneSpan {
		t.Fatalf("write span %s parent %s, want the phone's", write.SpanContext().TraceID(), write.Parent().SpanID())
	}
	if appendSpan.Parent().SpanID() != write.SpanContext().SpanID() || publish.Parent().SpanID() != appendSpan.SpanContext().SpanID() {
		t.Fatalf("append parent %s, publish parent %s: want write %s -> append %s", appendSpan.Parent().SpanID(),
			publish.Parent().SpanID(), write.SpanContext().SpanID(), appendSpan.SpanContext().SpanID())
	}
	carried := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), events.HeaderCarrier(m.Header)))
	if carried.TraceID() != phoneTrace || carried.SpanID() != publish.SpanContext().SpanID() {
		t.Fatalf("event carries %s/%s, want the publish span's", carried.TraceID(), carried.SpanID())
	}
}

// TestWrite_ConcurrentSameKeyWritesOnce: requests with the same
// Idempotency-Key sent at once (a client retrying before its first answer
// came) write one event; every answer names it.
func TestWrite_ConcurrentSameKeyWritesOnce(t *testing.T) {
	e := newWriteEnv(t, true, 10*time.Second)
	const n = 8
	answers := make(chan answer, n)
	for range n {
		go func() { answers <- e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"n":1}`, "Idempotency-Key", "same") }()
	}
	ids := map[string]int{}
	for range n {
		a := <-answers
		if a.status != http.StatusCreated {
			t.Errorf("status %d: %s", a.status, a.raw)
		}
		ids[a.body.Event]++
	}
	if len(ids) != 1 {
		t.Fatalf("answers name %d events (%v), want 1", len(ids), ids)
	}
	if got := e.countEvents(t); got != 1 {
		t.Fatalf("EVENTS holds %d events, want 1", got)
	}
}
