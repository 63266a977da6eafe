package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// TestErrors_AlwaysJSON: every error answer, including those of the router
// itself (no route, wrong method), is a JSON object with an error message.
func TestErrors_AlwaysJSON(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, method, path string
		wantCode           int
		wantAllow          string
	}{
		{"no such route", "GET", "/nope", 404, ""},
		{"unencoded slash in a doc id", "GET", "/v1/acme/docs/todos/a/b", 404, ""},
		{"too few segments", "GET", "/v1/acme", 404, ""},
		{"wrong method on events", "GET", "/v1/acme/events", 405, "POST"},
		{"wrong method on changes", "POST", "/v1/acme/changes", 405, "GET"},
		{"wrong method on healthz", "DELETE", "/healthz", 405, "GET"},
		{"missing document", "GET", "/v1/acme/docs/todos/nope", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := e.srv.URL + tt.path
			code, body, hdr := e.doHeader(t, tt.method, req)
			if code != tt.wantCode {
				t.Fatalf("status %d, want %d: %s", code, tt.wantCode, body)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q, want application/json: %s", ct, body)
			}
			var ae struct{ Error string }
			if err := json.Unmarshal(body, &ae); err != nil || ae.Error == "" {
				t.Fatalf("body %q is not a JSON error: %v", body, err)
			}
			if tt.wantAllow != "" && !strings.Contains(hdr.Get("Allow"), tt.wantAllow) {
				t.Fatalf("Allow %q, want %s", hdr.Get("Allow"), tt.wantAllow)
			}
		})
	}
}

// TestRoutes_PercentEncodingInEverySegment: tenant, collection, document
// and client names are each one percent-encoded path segment, whatever
// they hold ('/', '.', '..', '%', spaces, non-ASCII).
func TestRoutes_PercentEncodingInEverySegment(t *testing.T) {
	e := newEnv(t)
	names := []struct{ tenant, coll, doc, client string }{
		{"t/1", "c/1", "d/1", "p/q"},
		{"acme", "todos", "..", "."},
		{"acme", "todos", ".", "phone"},
		{"100%", "a b", "x?y#z", "日本"},
		{"acme", "todos", "a%2Fb", "tablet"}, // the id's own text is "a%2Fb"
	}
	for _, n := range names {
		t.Run(n.tenant+"|"+n.coll+"|"+n.doc, func(t *testing.T) {
			publishChange(t, e.js, events.Change{Tenant: n.tenant, Collection: n.coll, Doc: n.doc, Version: 1, Event: "e", Client: n.client,
				Fields: events.Fields{"k": json.RawMessage(`1`)}})
			r := events.Receipt{Schema: 1, Event: "e", Tenant: n.tenant, Client: n.client, Seq: 1, Outcome: events.OutcomeApplied}
			data, _ := events.EncodeReceipt(&r)
			publishRaw(t, e, events.ReceiptSubject(n.tenant, n.client), data)

			ten, coll, doc, cl := url.PathEscape(n.tenant), url.PathEscape(n.coll), url.PathEscape(n.doc), url.PathEscape(n.client)
			// PathEscape leaves '.' alone; a segment "." or ".." must be
			// escaped or a client library cleans it away.
			dot := func(s string) string {
				if s == "." || s == ".." {
					return strings.ReplaceAll(s, ".", "%2E")
				}
				return s
			}
			doc, cl = dot(doc), dot(cl)

			code, body := e.do(t, "GET", fmt.Sprintf("/v1/%s/docs/%s/%s", ten, coll, doc), nil)
			var rec gateway.DocRecord
			json.Unmarshal(body, &rec)
			if code != 200 || rec.ID != n.doc || rec.Collection != n.coll {
				t.Fatalf("get: %d %s", code, body)
			}
			code, body = e.do(t, "GET", fmt.Sprintf("/v1/%s/docs/%s", ten, coll), nil)
			var list gateway.DocsResponse
			json.Unmarshal(body, &list)
			if code != 200 || len(list.Docs) == 0 {
				t.Fatalf("list: %d %s", code, body)
			}
			code, body = e.do(t, "GET", fmt.Sprintf("/v1/%s/receipts/%s", ten, cl), nil)
			var rr gateway.ReceiptsResponse
			json.Unmarshal(body, &rr)
			if code != 200 || len(rr.Receipts) != 1 || rr.Receipts[0].Receipt.Client != n.client {
				t.Fatalf("receipts: %d %s", code, body)
			}
			code, body = e.do(t, "GET", fmt.Sprintf("/v1/%s/changes", ten), nil)
			var cr gateway.ChangesResponse
			json.Unmarshal(body, &cr)
			if code != 200 || len(cr.Changes) == 0 {
				t.Fatalf("changes: %d %s", code, body)
			}
		})
	}
}

// TestListDocsAndConflicts_Paged: GET /docs/{collection} and /conflicts
// page like the changes feed: after and limit in, last_seq and more out,
// every document once.
func TestListDocsAndConflicts_Paged(t *testing.T) {
	e := newEnv(t)
	for i := range 7 {
		c := events.Change{Tenant: "acme", Collection: "todos", Doc: fmt.Sprint("d", i), Version: 1, Event: "e", Client: "c",
			Fields: events.Fields{"n": json.RawMessage(fmt.Sprint(i))}}
		if i%2 == 0 {
			c.Conflicts = []events.Conflict{{ID: fmt.Sprint("x", i), Policy: events.PolicyManual, Status: events.ConflictOpen}}
		}
		if i == 6 {
			c.Deleted, c.Fields, c.Conflicts = true, nil, nil
		}
		publishChange(t, e.js, c)
	}
	publishChange(t, e.js, events.Change{Tenant: "acme", Collection: "other", Doc: "o", Version: 1, Event: "e", Client: "c"})

	pageAll := func(path string) []string {
		t.Helper()
		var ids []string
		after := uint64(0)
		for pages := 0; ; pages++ {
			sep := "?"
			if strings.Contains(path, "?") {
				sep = "&"
			}
			code, body := e.do(t, "GET", fmt.Sprintf("%s%safter=%d&limit=2", path, sep, after), nil)
			var resp gateway.DocsResponse
			if err := json.Unmarshal(body, &resp); code != 200 || err != nil {
				t.Fatalf("%s after %d: %d %s", path, after, code, body)
			}
			if len(resp.Docs) > 2 {
				t.Fatalf("%s: a page of %d, limit 2", path, len(resp.Docs))
			}
			for _, d := range resp.Docs {
				ids = append(ids, d.Collection+"/"+d.ID)
			}
			if !resp.More {
				return ids
			}
			if resp.LastSeq <= after || pages > 20 {
				t.Fatalf("%s: no progress at after=%d: %s", path, after, body)
			}
			after = resp.LastSeq
		}
	}
	if got := fmt.Sprint(pageAll("/v1/acme/docs/todos")); got != "[todos/d0 todos/d1 todos/d2 todos/d3 todos/d4 todos/d5]" {
		t.Fatalf("docs pages: %s", got)
	}
	if got := fmt.Sprint(pageAll("/v1/acme/docs/todos?deleted=true")); got != "[todos/d0 todos/d1 todos/d2 todos/d3 todos/d4 todos/d5 todos/d6]" {
		t.Fatalf("docs pages with deleted: %s", got)
	}
	if got := fmt.Sprint(pageAll("/v1/acme/conflicts")); got != "[todos/d0 todos/d2 todos/d4]" {
		t.Fatalf("conflict pages: %s", got)
	}
	// Without limit the default page (MaxPage, 50 here) holds them all.
	code, body := e.do(t, "GET", "/v1/acme/docs/todos", nil)
	var resp gateway.DocsResponse
	json.Unmarshal(body, &resp)
	if code != 200 || len(resp.Docs) != 6 || resp.More {
		t.Fatalf("default page: %d %s", code, body)
	}
	if code, body := e.do(t, "GET", "/v1/acme/docs/todos?limit=51", nil); code != 400 {
		t.Fatalf("limit over the maximum: %d %s", code, body)
	}
}
