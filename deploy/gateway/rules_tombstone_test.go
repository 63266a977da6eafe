package gateway_test

import (
	"net/http"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// TestRules_TombstonePreconditionIsWritten: PROTOCOL (Document writes, under
// sync rules): a precondition on a document whose current state the user
// may not read answers 404 as GET does "and nothing is written". GET of
// bob's tombstone answers ann 404, but stateFor never hides a tombstone:
// ann's If-None-Match: * passes, an event is written on the tombstone's
// version, and (with a projector) it comes back 412 with the hidden
// reason, unlike an id that never existed (201).
func TestRules_TombstonePreconditionIsWritten(t *testing.T) {
	e := rulesWriteEnv(t)
	publishChange(t, e.js, events.Change{Tenant: "acme", Collection: "lists", Doc: "gone", Version: 7, Deleted: true, Event: "e", Client: "bob"})
	g := e.send(t, "GET", "/v1/acme/docs/lists/gone", "", "user", "ann")
	a := e.send(t, "PUT", "/v1/acme/docs/lists/gone", `{"owner":"ann"}`, "user", "ann", "If-None-Match", "*")
	t.Logf("GET %d %s; If-None-Match PUT %d %s", g.status, g.raw, a.status, a.raw)
	if n := e.countEvents(t); a.status != http.StatusNotFound || n != 0 {
		t.Fatalf("ann's If-None-Match: * on bob's tombstone (GET: %d): %d, %d events written", g.status, a.status, n)
	}
}
