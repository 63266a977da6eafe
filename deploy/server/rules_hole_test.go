package server_test

import (
	"context"
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
	"github.com/ebbsync/ebb/projection/rules"
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
	users, err := auth.New([]auth.User{
		{Name: "ann", Password: "ann-secret", Tenant: "acme", Role: auth.RoleClient, Groups: []string{"red"}},
		{Name: "bob", Password: "bob-secret", Tenant: "acme", Role: auth.RoleClient, Groups: []string{"blue"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.Parse([]byte(e2eRules))
	if err != nil {
		t.Fatal(err)
	}
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
	for range 3 {
		syncOK(t, ann)
		time.Sleep(300 * time.Millisecond)
	}
	if code, _ := w2.http("ann", http.MethodGet, "/v1/acme/docs/lists/l-bob", ""); code != http.StatusNotFound {
		t.Fatalf("under rules ann GET l-bob: %d, want 404", code)
	}
	if msg, err := w2.conn("ann").RequestWithContext(ctx, auth.ChangesSubject, []byte(`{"after":0}`)); err != nil {
		t.Fatal(err)
	} else if strings.Contains(string(msg.Data), "l-del") {
		t.Errorf("LEAK: a pre-rules tombstone of bob's list (no Ebb-Readers) is sent to ann: %s", msg.Data)
	}
	if got := holds(t, ann); slices.Contains(got, "lists/l-bob") {
		d, _ := ann.Get(ctx, "lists", "l-bob")
		t.Errorf("LEAK: rules on, ann may not read l-bob (HTTP 404) yet her replica still holds it: %v (%s)", got, d.Fields["title"])
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
	time.Sleep(time.Second)
	if code, _ := w.http("ann", http.MethodGet, "/v1/acme/docs/lists/l-bob", ""); code != http.StatusNotFound {
		t.Fatalf("ann GET l-bob: %d, want 404 (out of her view)", code)
	}
	ann = openAnn()
	defer ann.Close()
	for range 3 {
		syncOK(t, ann)
		time.Sleep(200 * time.Millisecond)
	}
	if got := holds(t, ann); slices.Contains(got, "lists/l-bob") || slices.Contains(got, "todos/t-bob") {
		t.Errorf("LEAK: l-bob left ann's view while she was offline; after catch-up her replica still holds %v", got)
	}
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
	if rep := syncOK(t, ann); rep.Rejected != 0 {
		t.Logf("ann's re-creation rejected: %+v", rep)
		return
	}
	embeddedtest.WaitFor(t, 10*time.Second, "ann's sync", func() bool { syncOK(t, ann); return true })
	time.Sleep(time.Second)
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

// DUP: a parent's audience change re-emits every follower to the new
// audience, including readers who could read it before and already hold
// that version: bob, the owner, downloads his unchanged todos again.
func TestRulesHole_FollowerReemitResendsToStableReaders(t *testing.T) {
	w := startRulesWorld(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	bob := w.replica("bob")
	if _, err := bob.Put(ctx, "lists", "l-bob", fields("owner", "bob", "team", "blue")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"t1", "t2", "t3", "t4", "t5"} {
		if _, err := bob.Put(ctx, "todos", id, fields("list", "l-bob")); err != nil {
			t.Fatal(err)
		}
	}
	syncOK(t, bob)
	syncOK(t, bob)
	if _, err := bob.Patch(ctx, "lists", "l-bob", fields("team", "red")); err != nil {
		t.Fatal(err)
	}
	syncOK(t, bob)
	time.Sleep(time.Second)
	rep := syncOK(t, bob)
	rep2 := syncOK(t, bob)
	t.Logf("bob's syncs after changing his list's team: %+v then %+v", rep, rep2)
	if rep.Pulled+rep2.Pulled > 1 {
		t.Errorf("DUP: bob changed one document and pulled %d changes (his 5 unchanged todos again)", rep.Pulled+rep2.Pulled)
	}
}
