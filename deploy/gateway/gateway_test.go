package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

type env struct {
	gw  *gateway.Gateway
	js  jetstream.JetStream
	srv *httptest.Server
	ids *events.IDSource
	clk *events.Clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{JetStream: js, MaxPage: 50, MaxWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return &env{gw: g, js: js, srv: srv, ids: events.NewIDSource(nil), clk: events.NewClock(nil, 0)}
}

func (e *env) event(tenant, coll, doc string, seq uint64) events.Event {
	return events.Event{Schema: 1, ID: e.ids.New().String(), Tenant: tenant, Collection: coll, Doc: doc, Op: events.OpPut,
		Fields: events.Fields{"title": json.RawMessage(`"x"`)}, HLC: e.clk.Now(), Client: "phone", Seq: seq}
}

func (e *env) do(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func TestPushEvents_IdempotentAndPerEventResults(t *testing.T) {
	e := newEnv(t)
	good1, good2 := e.event("acme", "todos", "a.b", 1), e.event("acme", "todos", "t2", 2)
	other := e.event("other", "todos", "t3", 3)
	batch := []any{good1, good2, map[string]any{"schema": 1, "id": "bogus"}, other}

	for round, want := range []string{gateway.StatusAccepted, gateway.StatusDuplicate} {
		code, body := e.do(t, "POST", "/v1/acme/events", batch)
		if code != http.StatusOK {
			t.Fatalf("round %d: status %d: %s", round, code, body)
		}
		var resp gateway.PushResponse
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		got := []string{}
		for _, r := range resp.Results {
			got = append(got, r.Status)
		}
		wantAll := []string{want, want, gateway.StatusInvalid, gateway.StatusInvalid}
		if fmt.Sprint(got) != fmt.Sprint(wantAll) {
			t.Fatalf("round %d: statuses %v, want %v (%s)", round, got, wantAll, body)
		}
		if resp.Results[2].Field != "id" || resp.Results[3].Field != "tenant" {
			t.Fatalf("invalid results must name the field: %+v", resp.Results[2:])
		}
	}
	st, _ := e.js.Stream(context.Background(), events.StreamEvents)
	info, _ := st.Info(context.Background())
	if info.State.Msgs != 2 {
		t.Fatalf("EVENTS holds %d messages after pushing the batch twice, want 2", info.State.Msgs)
	}
	m, err := st.GetLastMsgForSubject(context.Background(), events.EventSubject("acme", "phone", "todos", "a.b"))
	if err != nil || m.Header.Get(jetstream.MsgIDHeader) != good1.ID {
		t.Fatalf("event stored under its subject with Nats-Msg-Id: %v %v", m, err)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, method, path string
		body               any
		wantCode           int
		wantErr            string
	}{
		{"not json", "POST", "/v1/acme/events", "{{", 400, "want a JSON array"},
		{"object not array", "POST", "/v1/acme/events", `{"a":1}`, 400, "want a JSON array"},
		{"trailing", "POST", "/v1/acme/events", `[] []`, 400, "trailing data"},
		{"bad tenant", "POST", "/v1/%20%01/events", `[]`, 400, "tenant"},
		{"after not a number", "GET", "/v1/acme/changes?after=x", nil, 400, "after"},
		{"limit too big", "GET", "/v1/acme/changes?limit=100000", nil, 400, "limit"},
		{"bad wait", "GET", "/v1/acme/changes?wait=soon", nil, 400, "wait"},
		{"missing doc", "GET", "/v1/acme/docs/todos/nope", nil, 404, "not found"},
		{"too big", "POST", "/v1/acme/events", "[" + strings.Repeat(`"x",`, 3<<20) + `"x"]`, 413, "over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := e.do(t, tt.method, tt.path, tt.body)
			if code != tt.wantCode {
				t.Fatalf("status %d, want %d: %s", code, tt.wantCode, body)
			}
			var ae struct{ Error string }
			if err := json.Unmarshal(body, &ae); err != nil || !strings.Contains(ae.Error, tt.wantErr) {
				t.Fatalf("error body %s does not mention %q", body, tt.wantErr)
			}
		})
	}
}

func publishChange(t *testing.T, js jetstream.JetStream, c events.Change) uint64 {
	t.Helper()
	c.Schema = 1
	data, _ := events.EncodeChange(&c)
	ack, err := js.Publish(context.Background(), events.ChangeSubject(c.Tenant, c.Collection, c.Doc), data)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func TestPullChanges_PagesDocsAndLongPoll(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		publishChange(t, e.js, events.Change{Tenant: "acme", Collection: "todos", Doc: fmt.Sprint("d", i), Version: 1,
			Fields: events.Fields{"n": json.RawMessage(fmt.Sprint(i))}, Event: "e", Client: "c"})
	}
	publishChange(t, e.js, events.Change{Tenant: "other", Collection: "todos", Doc: "secret", Version: 1, Event: "e", Client: "c"})
	// d0 changes again: compaction keeps only its last state.
	publishChange(t, e.js, events.Change{Tenant: "acme", Collection: "todos", Doc: "d0", Version: 2, Deleted: true, Event: "e", Client: "c"})
	publishChange(t, e.js, events.Change{Tenant: "acme", Collection: "todos", Doc: "d1", Version: 2, Event: "e", Client: "c",
		Fields:    events.Fields{"n": json.RawMessage(`1`)},
		Conflicts: []events.Conflict{{ID: "x", Policy: events.PolicyManual, Status: events.ConflictOpen}}})

	var all []gateway.ChangeEntry
	after := uint64(0)
	for {
		code, body := e.do(t, "GET", fmt.Sprintf("/v1/acme/changes?after=%d&limit=2", after), nil)
		if code != 200 {
			t.Fatalf("pull: %d %s", code, body)
		}
		var resp gateway.ChangesResponse
		json.Unmarshal(body, &resp)
		all = append(all, resp.Changes...)
		after = resp.LastSeq
		if !resp.More {
			break
		}
	}
	docs := map[string]uint64{}
	for _, c := range all {
		if c.Change.Tenant != "acme" {
			t.Fatalf("pull for acme returned tenant %q", c.Change.Tenant)
		}
		if _, dup := docs[c.Change.Doc]; dup {
			t.Fatalf("document %s travelled twice", c.Change.Doc)
		}
		docs[c.Change.Doc] = c.Change.Version
	}
	if len(docs) != 5 || docs["d0"] != 2 || docs["d1"] != 2 {
		t.Fatalf("pulled %v, want each of 5 docs once at its last version", docs)
	}

	// Docs: the deleted one is hidden, the conflicted one listed.
	code, body := e.do(t, "GET", "/v1/acme/docs/todos", nil)
	var list gateway.DocsResponse
	json.Unmarshal(body, &list)
	if code != 200 || len(list.Docs) != 4 {
		t.Fatalf("list: %d, %d docs: %s", code, len(list.Docs), body)
	}
	if code, _ := e.do(t, "GET", "/v1/acme/docs/todos/d0", nil); code != 404 {
		t.Fatalf("deleted doc: status %d, want 404", code)
	}
	code, body = e.do(t, "GET", "/v1/acme/docs/todos/d3", nil)
	var rec gateway.DocRecord
	json.Unmarshal(body, &rec)
	if code != 200 || rec.Version != 1 || string(rec.Doc["n"]) != "3" {
		t.Fatalf("get d3: %d %s", code, body)
	}
	code, body = e.do(t, "GET", "/v1/acme/conflicts", nil)
	list = gateway.DocsResponse{}
	json.Unmarshal(body, &list)
	if code != 200 || len(list.Docs) != 1 || list.Docs[0].ID != "d1" {
		t.Fatalf("conflicts: %d %s", code, body)
	}

	// Long-poll: a pull past the end waits for the next change.
	got := make(chan gateway.ChangesResponse, 1)
	go func() {
		_, body := e.do(t, "GET", fmt.Sprintf("/v1/acme/changes?after=%d&wait=5s", after), nil)
		var resp gateway.ChangesResponse
		json.Unmarshal(body, &resp)
		got <- resp
	}()
	seq := publishChange(t, e.js, events.Change{Tenant: "acme", Collection: "todos", Doc: "late", Version: 1, Event: "e", Client: "c"})
	select {
	case resp := <-got:
		if len(resp.Changes) != 1 || resp.LastSeq != seq {
			t.Fatalf("long-poll got %+v, want the change at %d", resp, seq)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long-poll did not return")
	}
	// And an empty long-poll returns empty after the wait.
	code, body = e.do(t, "GET", fmt.Sprintf("/v1/acme/changes?after=%d&wait=200ms", seq), nil)
	var empty gateway.ChangesResponse
	json.Unmarshal(body, &empty)
	if code != 200 || len(empty.Changes) != 0 || empty.LastSeq != seq {
		t.Fatalf("empty long-poll: %d %s", code, body)
	}
}

func TestPullReceipts(t *testing.T) {
	e := newEnv(t)
	for i, client := range []string{"phone", "laptop", "phone"} {
		r := events.Receipt{Schema: 1, Event: fmt.Sprint("e", i), Tenant: "acme", Client: client, Seq: uint64(i + 1), Outcome: events.OutcomeApplied}
		data, _ := events.EncodeReceipt(&r)
		msg := nats.NewMsg(events.ReceiptSubject("acme", client))
		msg.Data = data
		if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	code, body := e.do(t, "GET", "/v1/acme/receipts/phone?after=0", nil)
	var resp gateway.ReceiptsResponse
	json.Unmarshal(body, &resp)
	if code != 200 || len(resp.Receipts) != 2 || resp.Receipts[1].Receipt.Event != "e2" || resp.More {
		t.Fatalf("receipts: %d %s", code, body)
	}
	code, body = e.do(t, "GET", fmt.Sprintf("/v1/acme/receipts/phone?after=%d", resp.LastSeq), nil)
	json.Unmarshal(body, &resp)
	if code != 200 || len(resp.Receipts) != 0 {
		t.Fatalf("receipts after the last: %d %s", code, body)
	}
}

// doHeader sends a request without a body and returns the status, body
// and headers of the answer.
func (e *env) doHeader(t *testing.T, method, url string) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out, resp.Header
}
