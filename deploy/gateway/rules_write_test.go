package gateway_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// rulesWriteEnv is a writeEnv under sync rules (ownerRules) with users ann
// and bob, and no projector: a write that passes its precondition answers
// 202.
func rulesWriteEnv(t *testing.T) *writeEnv {
	t.Helper()
	users, err := auth.Parse([]byte(`users:
  - {name: ann, password: ann-pw, tenant: acme, role: client}
  - {name: bob, password: bob-pw, tenant: acme, role: client}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := embeddedtest.MustStart(t, func(c *embedded.Config) { c.Sync.Interval = time.Minute })
	e := &writeEnv{s: s, dir: filepath.Join(t.TempDir(), "gateway"), users: users, visibility: ownerRules{}}
	e.nc = embeddedtest.MustConnect(t, s)
	e.js = embeddedtest.MustJetStream(t, e.nc)
	if err := events.EnsureStreams(t.Context(), e.js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	e.openWriter(t, 50*time.Millisecond)
	return e
}

// TestRules_WritePreconditionHidesState: under sync rules, a precondition
// on a document the user may not read answers 404 whatever its value, as
// GET does, with no ETag and no version, and writes nothing; the reader of
// the document still gets the current ETag. GET of a deleted document says
// no version to a filtered user.
func TestRules_WritePreconditionHidesState(t *testing.T) {
	e := rulesWriteEnv(t)
	publishChange(t, e.js, events.Change{Tenant: "acme", Collection: "lists", Doc: "bobs", Version: 3, Event: "e", Client: "bob", Fields: owned("bob")})
	publishChange(t, e.js, events.Change{Tenant: "acme", Collection: "lists", Doc: "gone", Version: 7, Deleted: true, Event: "e", Client: "bob"})
	noState := func(what string, a answer) {
		t.Helper()
		if a.status != http.StatusNotFound || a.header.Get("ETag") != "" || strings.Contains(a.raw, "3") {
			t.Errorf("%s: %d ETag %q %s, want 404 with no ETag and no version", what, a.status, a.header.Get("ETag"), a.raw)
		}
	}
	for _, h := range [][]string{{"If-Match", `"1"`}, {"If-Match", `"3"`}, {"If-Match", "*"}, {"If-None-Match", "*"}} {
		noState("ann PUT bobs "+h[0]+" "+h[1], e.send(t, "PUT", "/v1/acme/docs/lists/bobs", `{"owner":"ann"}`, "user", "ann", h[0], h[1]))
	}
	noState("ann DELETE bobs", e.send(t, "DELETE", "/v1/acme/docs/lists/bobs", "", "user", "ann", "If-Match", `"3"`))
	noState("ann PATCH bobs", e.send(t, "PATCH", "/v1/acme/docs/lists/bobs", `{"n":1}`, "user", "ann", "If-Match", `"3"`))
	// The same answer as ann's GET of bob's list.
	hidden := e.send(t, "PUT", "/v1/acme/docs/lists/bobs", `{"owner":"ann"}`, "user", "ann", "If-Match", `"1"`)
	if get := e.send(t, "GET", "/v1/acme/docs/lists/bobs", "", "user", "ann"); hidden.raw != get.raw {
		t.Errorf("If-Match on a hidden list answers %s, GET of it %s", hidden.raw, get.raw)
	}
	if n := e.countEvents(t); n != 0 {
		t.Fatalf("%d events written by refused preconditions", n)
	}
	// Bob reads his list: his stale If-Match learns its version.
	a := e.send(t, "PUT", "/v1/acme/docs/lists/bobs", `{"owner":"bob"}`, "user", "bob", "If-Match", `"1"`).want(t, http.StatusPreconditionFailed)
	if a.header.Get("ETag") != `"3"` {
		t.Fatalf("bob's stale If-Match: ETag %q, want \"3\"", a.header.Get("ETag"))
	}
	g := e.send(t, "GET", "/v1/acme/docs/lists/gone", "", "user", "ann")
	if g.status != http.StatusNotFound || strings.Contains(g.raw, "7") || strings.Contains(g.raw, "deleted") {
		t.Errorf("ann GET a deleted list: %d %s, want 404 saying neither that it was deleted nor its version", g.status, g.raw)
	}
}
