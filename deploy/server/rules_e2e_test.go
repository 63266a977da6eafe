package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/feed"
	"github.com/ebbsync/ebb/deploy/server"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection/rules"
)

// The rules of issue 18's example: a list is read by its owner and by the
// members of its team, written by its owner; a todo follows its list.
const e2eRules = `collections:
  lists:
    read: [{user: owner}, {group: team}]
    write: [{user: owner}]
  todos:
    follow: {collection: lists, field: list}
`

type rulesWorld struct {
	t   *testing.T
	srv *server.Server
	// natsURL is where clients connect: the server's NATS when empty.
	natsURL string
}

// rulesUsers are ann (group red) and bob (group blue), clients of acme;
// rulesSet is e2eRules.
func rulesUsers(t *testing.T) *auth.Users {
	t.Helper()
	users, err := auth.New([]auth.User{
		{Name: "ann", Password: "ann-secret", Tenant: "acme", Role: auth.RoleClient, Groups: []string{"red"}},
		{Name: "bob", Password: "bob-secret", Tenant: "acme", Role: auth.RoleClient, Groups: []string{"blue"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return users
}

func rulesSet(t *testing.T) *rules.Set {
	t.Helper()
	set, err := rules.Parse([]byte(e2eRules))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func startRulesWorld(t *testing.T) *rulesWorld {
	t.Helper()
	cfg := testConfig(t)
	cfg.Users, cfg.Rules = rulesUsers(t).WithFilteredReads(true), rulesSet(t)
	return &rulesWorld{t: t, srv: mustStart(t, cfg)}
}

func (w *rulesWorld) conn(user string) *nats.Conn {
	w.t.Helper()
	url := w.natsURL
	if url == "" {
		url = w.srv.NATSURL()
	}
	nc, err := nats.Connect(url, nats.UserInfo(user, user+"-secret"), nats.CustomInboxPrefix(auth.InboxPrefix(user)))
	if err != nil {
		w.t.Fatalf("connect as %s: %v", user, err)
	}
	w.t.Cleanup(nc.Close)
	return nc
}

func (w *rulesWorld) replica(user string) *consumer.Replica {
	w.t.Helper()
	r, err := consumer.OpenReplica(w.t.Context(), consumer.ReplicaConfig{Dir: w.t.TempDir(), Tenant: "acme", Client: user, Conn: w.conn(user)})
	if err != nil {
		w.t.Fatalf("open %s's replica: %v", user, err)
	}
	w.t.Cleanup(func() { _ = r.Close() })
	return r
}

func (w *rulesWorld) http(user, method, path, body string) (int, string) {
	w.t.Helper()
	req, err := http.NewRequest(method, w.srv.URL()+path, strings.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	req.SetBasicAuth(user, user+"-secret")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func fields(kv ...string) events.Fields {
	f := events.Fields{}
	for i := 0; i < len(kv); i += 2 {
		b, _ := json.Marshal(kv[i+1])
		f[kv[i]] = b
	}
	return f
}

func syncOK(t *testing.T, r *consumer.Replica) consumer.SyncReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	rep, err := r.Sync(ctx)
	if err != nil {
		t.Fatalf("sync %s: %v", r.Client(), err)
	}
	return rep
}

// holds is the sorted "collection/id" of the live documents of r.
func holds(t *testing.T, r *consumer.Replica) []string {
	t.Helper()
	var out []string
	for _, c := range []string{"lists", "todos", "notes"} {
		ds, err := r.List(t.Context(), c, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			out = append(out, c+"/"+d.ID)
		}
	}
	slices.Sort(out)
	return out
}

// TestSyncRules_TwoUsersSeeExactlyTheirDocuments is issue 18's "done when"
// for rules: two users of one tenant each hold exactly the documents the
// rules let them read; every forbidden read and write, over NATS and HTTP,
// is refused (and counted); a document moving out of a user's view leaves
// that user's replica, and comes back when it moves back; a fresh replica
// downloads each visible document once.
func TestSyncRules_TwoUsersSeeExactlyTheirDocuments(t *testing.T) {
	w := startRulesWorld(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	ann, bob := w.replica("ann"), w.replica("bob")
	must := func(_ consumer.Doc, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ann.Put(ctx, "lists", "l-ann", fields("owner", "ann", "team", "red", "title", "groceries")))
	must(ann.Put(ctx, "todos", "t-ann", fields("list", "l-ann", "text", "milk")))
	must(ann.Put(ctx, "notes", "n1", fields("text", "tenant-wide: no rule names notes")))
	must(bob.Put(ctx, "lists", "l-bob", fields("owner", "bob", "team", "blue", "title", "secret plans")))
	must(bob.Put(ctx, "todos", "t-bob", fields("list", "l-bob", "text", "hide the cake")))
	for i := range 3 { // more versions of bob's list: still one document to send
		must(bob.Patch(ctx, "lists", "l-bob", fields("title", fmt.Sprintf("secret plans v%d", i))))
	}
	if rep := syncOK(t, bob); rep.Rejected != 0 {
		t.Fatalf("bob's own writes rejected: %+v", rep)
	}
	if rep := syncOK(t, ann); rep.Rejected != 0 {
		t.Fatalf("ann's own writes rejected: %+v", rep)
	}
	syncOK(t, bob)
	if got, want := holds(t, ann), []string{"lists/l-ann", "notes/n1", "todos/t-ann"}; !slices.Equal(got, want) {
		t.Fatalf("ann holds %v, want %v", got, want)
	}
	if got, want := holds(t, bob), []string{"lists/l-bob", "notes/n1", "todos/t-bob"}; !slices.Equal(got, want) {
		t.Fatalf("bob holds %v, want %v", got, want)
	}

	// Forbidden reads, as ann, of bob's documents.
	refused, tried := 0, 0
	refuse := func(what string, ok bool) {
		t.Helper()
		tried++
		if ok {
			refused++
		} else {
			t.Errorf("forbidden read or write allowed: %s", what)
		}
	}
	nc := w.conn("ann")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 3*time.Second) }
	for _, filter := range []string{events.TenantChanges("acme"), events.CollectionChanges("acme", "lists"),
		events.ChangeSubject("acme", "lists", "l-bob")} {
		c, cancel := short()
		_, err := js.OrderedConsumer(c, events.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
		cancel()
		refuse("NATS ordered consumer on "+filter, err != nil)
		c, cancel = short()
		_, err = js.CreateOrUpdateConsumer(c, events.StreamChanges, jetstream.ConsumerConfig{Durable: "ann-peek", FilterSubject: filter})
		cancel()
		refuse("NATS durable on "+filter, err != nil)
	}
	// Reading l-bob's last change by the JetStream API itself, whether or
	// not ann may get a stream handle: the request fails, or its reply
	// holds nothing of bob's list.
	lbob := events.ChangeSubject("acme", "lists", "l-bob")
	for _, api := range []struct{ subject, body string }{
		{"$JS.API.STREAM.MSG.GET." + events.StreamChanges, fmt.Sprintf(`{"last_by_subj":%q}`, lbob)},
		{"$JS.API.DIRECT.GET." + events.StreamChanges, fmt.Sprintf(`{"last_by_subj":%q}`, lbob)},
		{"$JS.API.DIRECT.GET." + events.StreamChanges + "." + lbob, ""},
	} {
		c, cancel := short()
		m, err := nc.RequestWithContext(c, api.subject, []byte(api.body))
		cancel()
		refuse(fmt.Sprintf("NATS %s %s", api.subject, api.body), err != nil || (!strings.Contains(string(m.Data), "secret") &&
			m.Header.Get("Nats-Subject") == "" && !strings.Contains(string(m.Data), `"message"`)))
	}
	// The change responder, asked by ann for everything, answers a page
	// that holds her documents and none of bob's.
	msg, err := nc.RequestWithContext(ctx, auth.ChangesSubject, []byte(`{"after":0,"limit":1000}`))
	if err != nil {
		t.Fatalf("ann's change feed request: %v", err)
	}
	var page feed.Page
	var feedErr feed.ErrorReply
	if err := json.Unmarshal(msg.Data, &feedErr); err != nil || feedErr.Error != "" {
		t.Fatalf("ann's change feed request answered an error: %s", msg.Data)
	}
	if err := json.Unmarshal(msg.Data, &page); err != nil {
		t.Fatalf("ann's change feed reply is not a page: %v: %s", err, msg.Data)
	}
	var fed []string
	for _, e := range page.Changes {
		if !e.Change.Left {
			fed = append(fed, e.Change.Collection+"/"+e.Change.Doc)
		}
	}
	slices.Sort(fed)
	refuse(fmt.Sprintf("NATS change feed sends ann %v, want exactly her documents", fed),
		slices.Equal(fed, []string{"lists/l-ann", "notes/n1", "todos/t-ann"}))
	// HTTP.
	for _, p := range []string{"/v1/acme/docs/lists/l-bob", "/v1/acme/docs/todos/t-bob", "/v1/acme/docs/lists/l-bob/history"} {
		code, _ := w.http("ann", http.MethodGet, p, "")
		refuse("HTTP GET "+p, code == http.StatusNotFound)
	}
	for _, p := range []string{"/v1/acme/docs/lists", "/v1/acme/docs/todos", "/v1/acme/changes?after=0", "/v1/acme/changes?after=0&collection=lists&collection=todos", "/v1/acme/conflicts"} {
		code, body := w.http("ann", http.MethodGet, p, "")
		refuse("HTTP GET "+p+" lists bob's documents", code == http.StatusOK && !strings.Contains(body, "l-bob") && !strings.Contains(body, "t-bob"))
	}

	// The console (/ui) shows whole tenants: under rules it is not for
	// client users.
	for _, p := range []string{"/ui/api/doc?tenant=acme&collection=lists&id=l-bob", "/ui/api/docs?tenant=acme&collection=lists",
		"/ui/api/conflicts?tenant=acme", "/ui/api/dead?tenant=acme", "/ui/api/rejections?tenant=acme",
		"/ui/api/journey?tenant=acme&collection=lists&id=l-bob"} {
		code, body := w.http("ann", http.MethodGet, p, "")
		refuse(fmt.Sprintf("console GET %s: %d", p, code), code == http.StatusForbidden || (code == http.StatusNotFound && !strings.Contains(body, "l-bob")))
	}

	// Forbidden writes, as ann: over NATS each is rejected with a receipt.
	must(ann.Put(ctx, "lists", "l-bob", fields("owner", "ann", "team", "red", "title", "mine now")))
	must(ann.Put(ctx, "todos", "t-bob", fields("list", "l-bob", "text", "eat the cake")))
	must(ann.Put(ctx, "todos", "t-sneak", fields("list", "l-bob", "text", "a todo in bob's list")))
	must(ann.Put(ctx, "lists", "l-framed", fields("owner", "bob", "team", "blue", "title", "made for bob")))
	rep := syncOK(t, ann)
	rejs, err := ann.Rejections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{"l-bob", "t-bob", "t-sneak", "l-framed"} {
		found := false
		for _, r := range rejs {
			found = found || (r.Doc == doc && strings.Contains(r.Reason, "sync rules"))
		}
		refuse("NATS write of "+doc, found)
	}
	if rep.Rejected != 4 {
		t.Errorf("ann's sync reported %d rejected, want 4: %+v", rep.Rejected, rejs)
	}
	// Over HTTP.
	for _, p := range []string{"/v1/acme/docs/lists/l-bob", "/v1/acme/docs/todos/t-bob"} {
		code, body := w.http("ann", http.MethodPut, p, `{"owner":"ann","list":"l-bob"}`)
		refuse(fmt.Sprintf("HTTP PUT %s: %d %s", p, code, body), code >= 400 && code < 500 && !strings.Contains(body, `"version"`))
	}
	// DELETE with l-bob's current version in If-Match (bob's replica
	// knows it; the server's GET shows bob the same): no precondition
	// fails, so only the rules refuse it, 404 as ann's GET.
	lb, err := bob.Get(ctx, "lists", "l-bob")
	if err != nil {
		t.Fatal(err)
	}
	ifMatch := fmt.Sprintf(`"%d"`, lb.Version)
	if _, _, b := w.httpH("bob", http.MethodGet, "/v1/acme/docs/lists/l-bob", "", nil); !strings.Contains(b, fmt.Sprintf(`"version":%d,`, lb.Version)) {
		t.Fatalf("bob's GET of l-bob: %s, his replica says version %d", b, lb.Version)
	}
	code, h, body := w.httpH("ann", http.MethodDelete, "/v1/acme/docs/lists/l-bob", "", map[string]string{"If-Match": ifMatch})
	refuse(fmt.Sprintf("HTTP DELETE l-bob If-Match %s: %d %s", ifMatch, code, body),
		code == http.StatusNotFound && h.Get("ETag") == "" && !strings.Contains(body, "version"))
	t.Logf("forbidden reads and writes: %d tried, %d refused", tried, refused)
	const wantTried = 31 // 6 consumers, 3 JetStream API gets, the feed, 14 HTTP and console reads, 7 writes
	if tried != wantTried || refused != tried {
		t.Fatalf("%d of %d forbidden reads and writes refused, want all of %d", refused, tried, wantTried)
	}
	syncOK(t, bob)
	if d, err := bob.Get(ctx, "lists", "l-bob"); err != nil || !strings.Contains(string(d.Fields["title"]), "secret plans v2") {
		t.Fatalf("bob's list after ann's attempts: %+v, %v", d, err)
	}
	if got, want := holds(t, bob), []string{"lists/l-bob", "notes/n1", "todos/t-bob"}; !slices.Equal(got, want) {
		t.Fatalf("bob holds %v after ann's attempts, want %v", got, want)
	}

	// A fresh replica of ann downloads each visible document once.
	fresh := w.replica("ann")
	if rep := syncOK(t, fresh); rep.Pulled != 3 {
		t.Fatalf("a fresh replica of ann pulled %d changes, want 3 (l-ann, t-ann, n1)", rep.Pulled)
	}
	if got, want := holds(t, fresh), []string{"lists/l-ann", "notes/n1", "todos/t-ann"}; !slices.Equal(got, want) {
		t.Fatalf("ann's fresh replica holds %v, want %v", got, want)
	}

	// bob shares his list with team red: ann gains it and its todo; then
	// takes it back: both leave ann's replica.
	must(bob.Patch(ctx, "lists", "l-bob", fields("team", "red")))
	syncOK(t, bob)
	embeddedtest.WaitFor(t, 30*time.Second, "l-bob and t-bob on ann's replica", func() bool {
		syncOK(t, ann)
		return slices.Equal(holds(t, ann), []string{"lists/l-ann", "lists/l-bob", "notes/n1", "todos/t-ann", "todos/t-bob"})
	})
	must(bob.Patch(ctx, "lists", "l-bob", fields("team", "blue")))
	syncOK(t, bob)
	embeddedtest.WaitFor(t, 30*time.Second, "l-bob and t-bob gone from ann's replica", func() bool {
		syncOK(t, ann)
		return slices.Equal(holds(t, ann), []string{"lists/l-ann", "notes/n1", "todos/t-ann"})
	})
	if _, err := ann.Get(ctx, "todos", "t-bob"); !errors.Is(err, consumer.ErrNotFound) {
		t.Fatalf("t-bob on ann's replica after it left her view: %v", err)
	}
}
