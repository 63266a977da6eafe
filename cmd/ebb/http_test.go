package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// phone is an app that speaks only HTTP: it keeps its own ids, clock and
// sequence, as a client in another language would from PROTOCOL.md.
type phone struct {
	t      *testing.T
	base   string
	client string
	device string // empty: the client's legacy log
	seq    uint64
	ids    *events.IDSource
	clock  *events.Clock
	rcpt   uint64 // last receipt sequence read
}

func newPhone(t *testing.T, base, client string) *phone {
	return &phone{t: t, base: base, client: client, ids: events.NewIDSource(nil), clock: events.NewClock(nil, 0)}
}

func (p *phone) event(op events.Op, coll, doc string, base uint64, fields string) events.Event {
	p.seq++
	e := events.Event{Schema: 1, ID: p.ids.New().String(), Tenant: "acme", Collection: coll, Doc: doc, Op: op,
		BaseVersion: base, HLC: p.clock.Now(), Client: p.client, Device: p.device, Seq: p.seq}
	if fields != "" {
		if err := json.Unmarshal([]byte(fields), &e.Fields); err != nil {
			p.t.Fatal(err)
		}
	}
	return e
}

func (p *phone) call(method, path string, body any, out any) int {
	p.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, p.base+path, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			p.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// push posts a batch and returns each event's status.
func (p *phone) push(batch ...events.Event) []string {
	p.t.Helper()
	var resp gateway.PushResponse
	if code := p.call("POST", "/v1/acme/events", batch, &resp); code != 200 {
		p.t.Fatalf("push: status %d: %+v", code, resp)
	}
	var st []string
	for _, r := range resp.Results {
		st = append(st, r.Status)
	}
	return st
}

// receipt long-polls the phone's receipts until the one for id arrives.
func (p *phone) receipt(id string) *events.Receipt {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var resp gateway.ReceiptsResponse
		path := fmt.Sprintf("/v1/acme/receipts/%s?after=%d&wait=5s", p.client, p.rcpt)
		if p.device != "" {
			path += "&device=" + p.device
		}
		if code := p.call("GET", path, nil, &resp); code != 200 {
			p.t.Fatalf("receipts: %d", code)
		}
		for _, r := range resp.Receipts {
			p.rcpt = r.Seq
			if r.Receipt.Event == id {
				return r.Receipt
			}
		}
	}
	p.t.Fatalf("no receipt for %s", id)
	return nil
}

func (p *phone) doc(coll, id string) gateway.DocRecord {
	p.t.Helper()
	var rec gateway.DocRecord
	if code := p.call("GET", "/v1/acme/docs/"+coll+"/"+id, nil, &rec); code != 200 {
		p.t.Fatalf("get %s/%s: %d", coll, id, code)
	}
	return rec
}

func TestHTTP_PhoneScenario(t *testing.T) {
	base := serveInProcess(t, "", "--policy", "todos=manual").http
	a, b := newPhone(t, base, "phone-a"), newPhone(t, base, "phone-b")

	// a creates a document; a retry of the same batch is harmless.
	create := a.event(events.OpPut, "todos", "t1", 0, `{"title":"milk"}`)
	if st := a.push(create); st[0] != gateway.StatusAccepted {
		t.Fatalf("push: %v", st)
	}
	if st := a.push(create); st[0] != gateway.StatusDuplicate {
		t.Fatalf("retried push: %v, want duplicate", st)
	}
	if r := a.receipt(create.ID); r.Outcome != events.OutcomeApplied || r.Version != 1 {
		t.Fatalf("create receipt %+v", r)
	}

	// b catches up by pulling changes.
	var pulled gateway.ChangesResponse
	b.call("GET", "/v1/acme/changes?after=0", nil, &pulled)
	if len(pulled.Changes) != 1 || pulled.Changes[0].Change.Version != 1 {
		t.Fatalf("b pulled %+v", pulled)
	}

	// Both edit offline from version 1; a's edit lands first, b's is a conflict.
	ea := a.event(events.OpPatch, "todos", "t1", 1, `{"title":"oat milk"}`)
	eb := b.event(events.OpPatch, "todos", "t1", 1, `{"title":"soy milk"}`)
	a.push(ea)
	if r := a.receipt(ea.ID); r.Outcome != events.OutcomeApplied || r.Version != 2 {
		t.Fatalf("a's edit: %+v", r)
	}
	b.push(eb)
	rb := b.receipt(eb.ID)
	if rb.Outcome != events.OutcomeConflict || rb.Conflict == "" {
		t.Fatalf("b's stale edit under manual: %+v", rb)
	}
	var conflictPage gateway.DocsResponse
	b.call("GET", "/v1/acme/conflicts", nil, &conflictPage)
	conflicted := conflictPage.Docs
	if len(conflicted) != 1 || len(conflicted[0].Conflicts) != 1 || conflicted[0].Conflicts[0].ID != rb.Conflict {
		t.Fatalf("conflicts: %+v", conflicted)
	}
	if got := string(b.doc("todos", "t1").Doc["title"]); got != `"oat milk"` {
		t.Fatalf("conflicted doc keeps the first value, got %s", got)
	}

	// b resolves; the retried batch (the old edit and the resolve) changes nothing more.
	res := b.event(events.OpResolve, "todos", "t1", 2, `{"title":"oat milk, 2l"}`)
	res.Resolves = rb.Conflict
	if st := b.push(res); st[0] != gateway.StatusAccepted {
		t.Fatalf("resolve push: %v", st)
	}
	if r := b.receipt(res.ID); r.Outcome != events.OutcomeApplied {
		t.Fatalf("resolve receipt %+v", r)
	}
	before := b.doc("todos", "t1")
	if string(before.Doc["title"]) != `"oat milk, 2l"` || len(before.Conflicts) != 0 {
		t.Fatalf("after resolve: %+v", before)
	}
	if st := b.push(eb, res); st[0] != gateway.StatusDuplicate || st[1] != gateway.StatusDuplicate {
		t.Fatalf("retried batch: %v", st)
	}
	if after := b.doc("todos", "t1"); after.Version != before.Version {
		t.Fatalf("a retried batch changed the version %d -> %d", before.Version, after.Version)
	}

	// a pulls from where it was and sees the resolution, once.
	var more gateway.ChangesResponse
	a.call("GET", fmt.Sprintf("/v1/acme/changes?after=%d", pulled.LastSeq), nil, &more)
	last := more.Changes[len(more.Changes)-1].Change
	if last.Version != before.Version || last.Settled == nil || last.Settled.Status != events.ConflictResolved {
		t.Fatalf("a's pull ends with %+v", last)
	}
}
