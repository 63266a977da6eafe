package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/server"
	"github.com/ebbsync/ebb/events"
)

func (w *rulesWorld) httpH(user, method, path, body string, h map[string]string) (int, http.Header, string) {
	w.t.Helper()
	req, err := http.NewRequest(method, w.srv.URL()+path, strings.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	req.SetBasicAuth(user, user+"-secret")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// HOLE: a write's precondition check (gateway/write.go checkPrecondition)
// runs before and without the rules' read check: ann learns that bob's
// list exists and its exact version (ETag header and error text), and a
// deleted document's version (getDoc answers "deleted at version N"
// before mayRead).
func TestRulesHole_WritePreconditionLeaksVersion(t *testing.T) {
	w := startRulesWorld(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	bob := w.replica("bob")
	for _, p := range [][]string{{"owner", "bob", "title", "v1"}, {"owner", "bob", "title", "v2"}, {"owner", "bob", "title", "v3"}} {
		if _, err := bob.Put(ctx, "lists", "l-bob", fields(p...)); err != nil {
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
	// ann may not read l-bob: GET says 404.
	if code, _, _ := w.httpH("ann", http.MethodGet, "/v1/acme/docs/lists/l-bob", "", nil); code != http.StatusNotFound {
		t.Fatalf("ann GET l-bob: %d, want 404", code)
	}
	leaks := 0
	code, h, body := w.httpH("ann", http.MethodPut, "/v1/acme/docs/lists/l-bob", `{"owner":"ann"}`, map[string]string{"If-Match": `"1"`})
	t.Logf("ann PUT l-bob If-Match 1: %d ETag=%q %s", code, h.Get("ETag"), strings.TrimSpace(body))
	if h.Get("ETag") != "" || strings.Contains(body, "version 3") {
		leaks++
		t.Errorf("LEAK: ann learns bob's list version through If-Match: ETag %q, body %s", h.Get("ETag"), body)
	}
	code, h, body = w.httpH("ann", http.MethodPut, "/v1/acme/docs/lists/l-bob", `{"owner":"ann"}`, map[string]string{"If-None-Match": "*"})
	t.Logf("ann PUT l-bob If-None-Match *: %d ETag=%q %s", code, h.Get("ETag"), strings.TrimSpace(body))
	if h.Get("ETag") != "" || strings.Contains(body, "version 3") {
		leaks++
		t.Errorf("LEAK: ann learns bob's list exists at its version through If-None-Match: ETag %q, body %s", h.Get("ETag"), body)
	}
	code, _, body = w.httpH("ann", http.MethodGet, "/v1/acme/docs/lists/l-gone", "", nil)
	t.Logf("ann GET deleted l-gone: %d %s", code, strings.TrimSpace(body))
	if strings.Contains(body, "deleted at version") {
		leaks++
		t.Errorf("LEAK: ann learns bob's deleted list existed and its version: %s", body)
	}
	// The e2e test's "HTTP DELETE l-bob refused" was refused before any
	// rule: DELETE without If-Match is 428 whatever the rules say. It now
	// sends the valid If-Match, as here: only the rules refuse it.
	code, h, body = w.httpH("ann", http.MethodDelete, "/v1/acme/docs/lists/l-bob", "", map[string]string{"If-Match": `"3"`})
	t.Logf("ann DELETE l-bob If-Match 3 (as rules_e2e_test does): %d %s", code, strings.TrimSpace(body))
	if code != http.StatusNotFound || h.Get("ETag") != "" {
		t.Errorf("ann's DELETE of l-bob at its version: %d ETag %q %s, want 404 as her GET", code, h.Get("ETag"), body)
	}
	if leaks > 0 {
		t.Logf("%d leaks", leaks)
	}
}

// HOLE: turning sync rules on for a tenant whose replicas already synced
// (pre-rules changes carry no Ebb-Readers: everyone read them) leaves
// every document on every replica: checkRules takes the old message's
// missing Ebb-Readers as "nobody" for was-readers, so no Left is sent.
func TestRulesHole_RulesOnLeavesOldCopies(t *testing.T) {
	users, set := rulesUsers(t), rulesSet(t)
	data := filepath.Join(t.TempDir(), "data")
	annDir, bobDir := t.TempDir(), t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	cfg := testConfig(t)
	cfg.Data, cfg.Users = data, users
	s1, err := server.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w1 := &rulesWorld{t: t, srv: s1}
	open := func(w *rulesWorld, user, dir string) *consumer.Replica {
		r, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: dir, Tenant: "acme", Client: user, Conn: w.conn(user)})
		if err != nil {
			t.Fatalf("open %s: %v", user, err)
		}
		return r
	}
	ann, bob := open(w1, "ann", annDir), open(w1, "bob", bobDir)
	if _, err := bob.Put(ctx, "lists", "l-bob", fields("owner", "bob", "team", "blue", "title", "secret")); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Put(ctx, "lists", "l-del", fields("owner", "bob", "title", "deleted before rules")); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Delete(ctx, "lists", "l-del"); err != nil {
		t.Fatal(err)
	}
	syncOK(t, bob)
	syncOK(t, ann)
	if got := holds(t, ann); !slices.Contains(got, "lists/l-bob") {
		t.Fatalf("before rules ann holds %v, want l-bob (tenant-wide)", got)
	}
	_ = ann.Close()
	_ = bob.Close()
	if err := s1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	cfg2 := testConfig(t)
	cfg2.Data, cfg2.Users, cfg2.Rules = data, users.WithFilteredReads(true), set
	w2 := &rulesWorld{t: t, srv: mustStart(t, cfg2)}
	ann = open(w2, "ann", annDir)
	defer ann.Close()
	if code, _ := w2.http("ann", http.MethodGet, "/v1/acme/docs/lists/l-bob", ""); code != http.StatusNotFound {
		t.Fatalf("under rules ann GET l-bob: %d, want 404", code)
	}
	embeddedtest.WaitFor(t, 30*time.Second, "l-bob gone from ann's replica once rules are on", func() bool {
		syncOK(t, ann)
		return !slices.Contains(holds(t, ann), "lists/l-bob")
	})
	// l-del was deleted before the rules, when every user of the tenant
	// read it: ann may learn of the delete (everyone may hold a copy), but
	// only as a tombstone, never with fields.
	msg, err := w2.conn("ann").RequestWithContext(ctx, auth.ChangesSubject, []byte(`{"after":0}`))
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Changes []struct{ Change events.Change }
	}
	if err := json.Unmarshal(msg.Data, &page); err != nil {
		t.Fatalf("ann's change feed: %v: %s", err, msg.Data)
	}
	for _, e := range page.Changes {
		c := e.Change
		if c.Doc == "l-bob" && !c.Left {
			t.Errorf("LEAK: ann's feed sends l-bob's state under rules: %+v", c)
		}
		if c.Doc == "l-del" && (!c.Deleted && !c.Left || len(c.Fields) > 0) {
			t.Errorf("LEAK: a pre-rules tombstone of bob's list reaches ann as more than a delete: %+v", c)
		}
	}
}

// HOLE: CHANGES keeps one message per document, and a change carries only
// the audience of the state just before it (Ebb-Was-Readers). A reader who
// is offline across two changes (the first takes the document out of its
// view, the second is any later edit) finds only the second, whose
// was-readers no longer name it: Skip, no Left notice, and the old copy
// stays on its replica for good.
func TestRulesHole_LeftLostAfterTwoChangesOffline(t *testing.T) {
	w := startRulesWorld(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	annDir := t.TempDir()
	openAnn := func() *consumer.Replica {
		r, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: annDir, Tenant: "acme", Client: "ann", Conn: w.conn("ann")})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ann, bob := openAnn(), w.replica("bob")
	if _, err := bob.Put(ctx, "lists", "l-bob", fields("owner", "bob", "team", "red", "title", "shared")); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Put(ctx, "todos", "t-bob", fields("list", "l-bob", "text", "shared todo")); err != nil {
		t.Fatal(err)
	}
	syncOK(t, bob)
	embeddedtest.WaitFor(t, 30*time.Second, "ann holds l-bob", func() bool {
		syncOK(t, ann)
		return slices.Contains(holds(t, ann), "lists/l-bob")
	})
	// ann is offline (her replica closed): bob unshares, then edits again.
	if err := ann.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Patch(ctx, "lists", "l-bob", fields("team", "blue")); err != nil {
		t.Fatal(err)
	}
	syncOK(t, bob)
	if _, err := bob.Patch(ctx, "lists", "l-bob", fields("title", "now secret")); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Patch(ctx, "todos", "t-bob", fields("text", "secret todo")); err != nil {
		t.Fatal(err)
	}
	syncOK(t, bob)
	if code, _ := w.http("ann", http.MethodGet, "/v1/acme/docs/lists/l-bob", ""); code != http.StatusNotFound {
		t.Fatalf("ann GET l-bob: %d, want 404 (out of her view)", code)
	}
	ann = openAnn()
	defer ann.Close()
	embeddedtest.WaitFor(t, 30*time.Second, "l-bob and t-bob gone from ann's replica after her catch-up", func() bool {
		syncOK(t, ann)
		got := holds(t, ann)
		return !slices.Contains(got, "lists/l-bob") && !slices.Contains(got, "todos/t-bob")
	})
}

// HOLE (rules semantics): a follower whose parent was deleted keeps
// pointing at the parent's id; anyone may create a parent under that id
// (no before state to judge) and so becomes reader and writer of every
// orphan that follows it.
func TestRulesHole_RecreatedParentHijacksOrphans(t *testing.T) {
	w := startRulesWorld(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	ann, bob := w.replica("ann"), w.replica("bob")
	if _, err := bob.Put(ctx, "lists", "l-bob", fields("owner", "bob", "team", "blue")); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Put(ctx, "todos", "t-bob", fields("list", "l-bob", "text", "bob's private todo")); err != nil {
		t.Fatal(err)
	}
	syncOK(t, bob)
	if _, err := bob.Delete(ctx, "lists", "l-bob"); err != nil {
		t.Fatal(err)
	}
	syncOK(t, bob)
	if _, err := ann.Put(ctx, "lists", "l-bob", fields("owner", "ann")); err != nil {
		t.Fatal(err)
	}
	// ann never read l-bob: she may not create it again over its tombstone.
	if rep := syncOK(t, ann); rep.Rejected != 1 {
		t.Errorf("HIJACK: ann's re-creation of bob's deleted list id: %+v, want it rejected", rep)
	}
	syncOK(t, bob)
	syncOK(t, ann)
	code, body := w.http("ann", http.MethodGet, "/v1/acme/docs/todos/t-bob", "")
	t.Logf("ann GET t-bob: %d %s; ann holds %v", code, strings.TrimSpace(body), holds(t, ann))
	if code == http.StatusOK || slices.Contains(holds(t, ann), "todos/t-bob") {
		t.Errorf("HIJACK: ann re-created bob's deleted list id and now reads bob's todo t-bob")
	}
	if _, err := ann.Patch(ctx, "todos", "t-bob", fields("text", "ann was here")); err == nil {
		if rep := syncOK(t, ann); rep.Rejected == 0 {
			t.Errorf("HIJACK: ann's write of bob's todo t-bob applied")
		}
	}
}
