package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/gateway"
)

// TestRules_HTTPRoutesHideOthersState: under sync rules no gateway route
// tells ann anything of the state of bob's documents: her refused write of
// his list (no precondition: the rules judge it) answers 409 without a
// version, and so do its poll (writes/{event}) and its receipt; the
// history of his deleted list is 404 as of a document that never was; a
// list with deleted documents and the conflict list leave his out.
func TestRules_HTTPRoutesHideOthersState(t *testing.T) {
	w := startRulesWorld(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	bob := w.replica("bob")
	for _, title := range []string{"v1", "v2", "v3"} {
		if _, err := bob.Put(ctx, "lists", "l-bob", fields("owner", "bob", "title", title)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.Put(ctx, "lists", "l-gone", fields("owner", "bob")); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Delete(ctx, "lists", "l-gone"); err != nil {
		t.Fatal(err)
	}
	syncOK(t, bob)

	code, h, body := w.httpH("ann", http.MethodPut, "/v1/acme/docs/lists/l-bob", `{"owner":"ann","title":"mine"}`, nil)
	var wr gateway.WriteResponse
	if err := json.Unmarshal([]byte(body), &wr); err != nil || code != http.StatusConflict || wr.Status != "rejected" {
		t.Fatalf("ann's PUT of l-bob: %d %s, want 409 rejected", code, body)
	}
	hidesState := func(what string, version uint64, reason string, h http.Header) {
		t.Helper()
		if version != 0 || strings.Contains(reason, "version") || strings.Contains(reason, "v3") || (h != nil && h.Get("ETag") != "") {
			t.Errorf("%s tells ann of bob's list: version %d, reason %q, ETag %q", what, version, reason, h.Get("ETag"))
		}
	}
	hidesState("the answer", wr.Version, wr.Reason+wr.Error, h)
	code, _, body = w.httpH("ann", http.MethodGet, "/v1/acme/writes/"+wr.Event, "", nil)
	var polled gateway.WriteResponse
	if err := json.Unmarshal([]byte(body), &polled); err != nil || code != http.StatusOK || polled.Status != "rejected" {
		t.Fatalf("ann polls her write %s: %d %s", wr.Event, code, body)
	}
	hidesState("the poll", polled.Version, polled.Reason, nil)
	code, _, body = w.httpH("ann", http.MethodGet, "/v1/acme/receipts/ann?after=0", "", nil)
	var rcpts gateway.ReceiptsResponse
	if err := json.Unmarshal([]byte(body), &rcpts); err != nil || code != http.StatusOK {
		t.Fatalf("ann's receipts: %d %s", code, body)
	}
	found := false
	for _, r := range rcpts.Receipts {
		if r.Receipt.Event == wr.Event {
			found = true
			hidesState("the receipt", r.Receipt.Version, r.Receipt.Reason, nil)
		}
	}
	if !found {
		t.Fatalf("ann's receipts hold none of event %s: %s", wr.Event, body)
	}

	_, _, never := w.httpH("ann", http.MethodGet, "/v1/acme/docs/lists/l-never/history", "", nil)
	code, _, body = w.httpH("ann", http.MethodGet, "/v1/acme/docs/lists/l-gone/history", "", nil)
	if code != http.StatusNotFound || strings.Contains(body, "version") || strings.Contains(body, "deleted") ||
		strings.ReplaceAll(body, "l-gone", "l-never") != never {
		t.Errorf("ann's GET of the history of bob's deleted list: %d %s, want 404 as of l-never: %s", code, body, never)
	}
	for _, p := range []string{"/v1/acme/docs/lists?deleted=true", "/v1/acme/conflicts"} {
		code, _, body := w.httpH("ann", http.MethodGet, p, "", nil)
		var docs gateway.DocsResponse
		if err := json.Unmarshal([]byte(body), &docs); err != nil || code != http.StatusOK {
			t.Fatalf("ann GET %s: %d %s", p, code, body)
		}
		if len(docs.Docs) != 0 {
			t.Errorf("ann GET %s lists %+v, want none of bob's", p, docs.Docs)
		}
	}
}
