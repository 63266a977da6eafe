package gateway_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// ownerRules is a Visibility: a "lists" document is readable by the user
// its "owner" field names and by the group its "team" field names; other
// collections are not ruled.
type ownerRules struct{}

func (ownerRules) Audience(_ context.Context, _, coll, _ string, f events.Fields) ([]string, bool, error) {
	if coll != "lists" {
		return nil, false, nil
	}
	var aud []string
	var s string
	if json.Unmarshal(f["owner"], &s) == nil && s != "" {
		aud = append(aud, events.UserPrincipal(s))
	}
	if json.Unmarshal(f["team"], &s) == nil && s != "" {
		aud = append(aud, events.GroupPrincipal(s))
	}
	return aud, true, nil
}

var ruleGroups = map[string][]string{"ann": {"red"}, "bob": {"blue", "a b"}}

func rulesEnv(t *testing.T) *env {
	t.Helper()
	users, err := auth.Parse([]byte(`users:
  - {name: ann, password: ann-pw, tenant: acme, role: client}
  - {name: bob, password: bob-pw, tenant: acme, role: client}
  - {name: svc, password: svc-pw, tenant: acme, role: service}
`))
	if err != nil {
		t.Fatal(err)
	}
	return newEnvWith(t, func(c *gateway.Config) {
		c.Users, c.Visibility = users, ownerRules{}
		c.Groups = func(u auth.User) []string { return ruleGroups[u.Name] }
		c.History = noHistory{}
	})
}

func basic(user string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+user+"-pw"))
}

// publishRuled stores c on CHANGES with the audience headers the projector
// writes: readers and the previous state's readers (nil: no header).
func publishRuled(t *testing.T, js jetstream.JetStream, c events.Change, readers, was []string) uint64 {
	t.Helper()
	c.Schema = 1
	data, err := events.EncodeChange(&c)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(events.ChangeSubject(c.Tenant, c.Collection, c.Doc))
	m.Data = data
	if readers != nil {
		m.Header.Set(events.HeaderReaders, events.EncodeAudience(readers))
	}
	if was != nil {
		m.Header.Set(events.HeaderWasReaders, events.EncodeAudience(was))
	}
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func owned(owner string) events.Fields {
	return events.Fields{"owner": json.RawMessage(fmt.Sprintf("%q", owner))}
}

func pullAs(t *testing.T, e *env, user, query string) gateway.ChangesResponse {
	t.Helper()
	code, body, _ := e.as(t, "GET", "/v1/acme/changes?"+query, basic(user), nil)
	if code != 200 {
		t.Fatalf("pull as %s ?%s: %d %s", user, query, code, body)
	}
	var resp gateway.ChangesResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestPull_CollectionParameter: ?collection= repeats; the pull reads only
// the collections it names, and refuses a bad name with 400.
func TestPull_CollectionParameter(t *testing.T) {
	e := newEnv(t)
	for _, c := range []string{"lists", "todos", "notes"} {
		publishChange(t, e.js, events.Change{Tenant: "acme", Collection: c, Doc: c + "-1", Version: 1, Event: "e", Client: "c"})
	}
	code, body := e.do(t, "GET", "/v1/acme/changes?collection=todos&collection=lists", nil)
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var resp gateway.ChangesResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range resp.Changes {
		got[c.Change.Collection] = true
	}
	if len(got) != 2 || !got["lists"] || !got["todos"] || resp.LastSeq != 2 {
		t.Fatalf("collections %v last_seq %d, want lists and todos up to 2", got, resp.LastSeq)
	}
	if code, body := e.do(t, "GET", "/v1/acme/changes?collection="+url.QueryEscape("a\x01"), nil); code != 400 {
		t.Fatalf("bad collection name: %d %s, want 400", code, body)
	}
}

// TestRules_PullFiltered: under sync rules a client user pulls only its
// documents, a Left notice for one that left its view and every change of
// an unruled collection; a service pulls the whole tenant.
func TestRules_PullFiltered(t *testing.T) {
	e := rulesEnv(t)
	ann, bob, red := events.UserPrincipal("ann"), events.UserPrincipal("bob"), events.GroupPrincipal("red")
	publishRuled(t, e.js, events.Change{Tenant: "acme", Collection: "lists", Doc: "anns", Version: 1, Event: "e1", Client: "c", Fields: owned("ann")}, []string{ann}, nil)
	publishRuled(t, e.js, events.Change{Tenant: "acme", Collection: "lists", Doc: "bobs", Version: 1, Event: "e2", Client: "c", Fields: owned("bob")}, []string{bob}, nil)
	publishRuled(t, e.js, events.Change{Tenant: "acme", Collection: "lists", Doc: "reds", Version: 1, Event: "e3", Client: "c"}, []string{red}, nil)
	publishRuled(t, e.js, events.Change{Tenant: "acme", Collection: "lists", Doc: "moved", Version: 2, Event: "e4", Client: "c", Fields: owned("bob")}, []string{bob}, []string{ann})
	last := publishRuled(t, e.js, events.Change{Tenant: "acme", Collection: "notes", Doc: "n", Version: 1, Event: "e5", Client: "c"}, nil, nil)

	resp := pullAs(t, e, "ann", "")
	got := map[string]bool{}
	for _, c := range resp.Changes {
		got[c.Change.Doc] = c.Change.Left
		if c.Change.Left && c.Change.Fields != nil {
			t.Fatalf("a Left notice carries fields: %+v", c.Change)
		}
	}
	want := map[string]bool{"anns": false, "reds": false, "moved": true, "n": false}
	if fmt.Sprint(got) != fmt.Sprint(want) || resp.LastSeq != last {
		t.Fatalf("ann pulled %v up to %d, want %v up to %d", got, resp.LastSeq, want, last)
	}
	// Bob with ?collection=lists: his two, nothing of notes.
	resp = pullAs(t, e, "bob", "collection=lists")
	if len(resp.Changes) != 2 || resp.Changes[0].Change.Doc != "bobs" || resp.Changes[1].Change.Doc != "moved" || resp.Changes[1].Change.Left {
		t.Fatalf("bob pulled %+v", resp.Changes)
	}
	if resp = pullAs(t, e, "svc", ""); len(resp.Changes) != 5 {
		t.Fatalf("a service pulled %d changes, want all 5", len(resp.Changes))
	}
}

// TestRules_DocReads: a document the user may not read answers 404 on GET
// and on its history, and is left out of lists and the conflict list; the
// owner reads it.
func TestRules_DocReads(t *testing.T) {
	e := rulesEnv(t)
	conflict := []events.Conflict{{ID: "x", Policy: events.PolicyManual, Status: events.ConflictOpen}}
	publishChange(t, e.js, events.Change{Tenant: "acme", Collection: "lists", Doc: "anns", Version: 1, Event: "e", Client: "c", Fields: owned("ann"), Conflicts: conflict})
	publishChange(t, e.js, events.Change{Tenant: "acme", Collection: "lists", Doc: "bobs", Version: 1, Event: "e", Client: "c", Fields: owned("bob"), Conflicts: conflict})

	if code, body, _ := e.as(t, "GET", "/v1/acme/docs/lists/bobs", basic("ann"), nil); code != 404 {
		t.Fatalf("ann reads bob's list: %d %s, want 404", code, body)
	}
	if code, body, _ := e.as(t, "GET", "/v1/acme/docs/lists/anns", basic("ann"), nil); code != 200 {
		t.Fatalf("ann reads her list: %d %s", code, body)
	}
	if code, body, _ := e.as(t, "GET", "/v1/acme/docs/lists/bobs", basic("svc"), nil); code != 200 {
		t.Fatalf("a service reads bob's list: %d %s", code, body)
	}
	if code, body, _ := e.as(t, "GET", "/v1/acme/docs/lists/bobs/history", basic("ann"), nil); code != 404 {
		t.Fatalf("ann reads the history of bob's list: %d %s, want 404", code, body)
	}
	for _, path := range []string{"/v1/acme/docs/lists", "/v1/acme/conflicts"} {
		code, body, _ := e.as(t, "GET", path, basic("ann"), nil)
		var resp gateway.DocsResponse
		if code != 200 || json.Unmarshal([]byte(body), &resp) != nil {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		if len(resp.Docs) != 1 || resp.Docs[0].ID != "anns" {
			t.Fatalf("%s as ann: %+v, want only anns", path, resp.Docs)
		}
	}
}

// TestRules_PushStampsWriterGroups: an event pushed by a user carries the
// user's groups in events.HeaderWriterGroups, set by the gateway.
func TestRules_PushStampsWriterGroups(t *testing.T) {
	e := rulesEnv(t)
	ev := e.event("acme", "lists", "l1", 1)
	ev.Client = "bob"
	code, body, _ := e.as(t, "POST", "/v1/acme/events", basic("bob"), []any{ev})
	if code != 200 {
		t.Fatalf("push: %d %s", code, body)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	st, err := e.js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, ev.Subject())
	if err != nil {
		t.Fatal(err)
	}
	want := "blue " + events.EncodeToken("a b") // encoded names, sorted
	if got := m.Header.Values(events.HeaderWriterGroups); len(got) != 1 || got[0] != want {
		t.Fatalf("writer groups %q, want [%q]", got, want)
	}
}

// TestRules_NeedsAuth: Visibility without users or tokens is refused.
func TestRules_NeedsAuth(t *testing.T) {
	if _, err := gateway.New(gateway.Config{JetStream: jetstreamStub{}, Visibility: ownerRules{}}); err == nil {
		t.Fatal("gateway with sync rules and no authentication accepted")
	}
}

type jetstreamStub struct{ gateway.JetStream }

type noHistory struct{}

func (noHistory) Conflicts(context.Context, events.DocAddress) ([]events.Conflict, error) {
	return nil, nil
}

// TestRules_DocWriteStampsWriterGroups: an HTTP document write publishes
// its event with the writing user's groups in events.HeaderWriterGroups,
// and a user's later write carries its groups as they are then.
func TestRules_DocWriteStampsWriterGroups(t *testing.T) {
	users, err := auth.Parse([]byte(`users:
  - {name: bob, password: bob-pw, tenant: acme, role: client}
`))
	if err != nil {
		t.Fatal(err)
	}
	groups := []string{"blue", "a b"}
	var mu sync.Mutex
	s := embeddedtest.MustStart(t, func(c *embedded.Config) { c.Sync.Interval = time.Minute })
	e := &writeEnv{s: s, dir: filepath.Join(t.TempDir(), "gateway"), users: users,
		groups: func(auth.User) []string { mu.Lock(); defer mu.Unlock(); return groups }}
	e.nc = embeddedtest.MustConnect(t, s)
	e.js = embeddedtest.MustJetStream(t, e.nc)
	if err := events.EnsureStreams(t.Context(), e.js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	e.openWriter(t, 50*time.Millisecond) // no projector: the write answers 202
	e.send(t, "PUT", "/v1/acme/docs/lists/l1", `{"n":1}`, "user", "bob").want(t, http.StatusAccepted)
	mu.Lock()
	groups = nil
	mu.Unlock()
	e.send(t, "PUT", "/v1/acme/docs/lists/l2", `{"n":2}`, "user", "bob").want(t, http.StatusAccepted)
	st, err := e.js.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	for doc, want := range map[string]string{"l1": "blue " + events.EncodeToken("a b"), "l2": ""} {
		var m *jetstream.RawStreamMsg
		embeddedtest.WaitFor(t, 10*time.Second, "the write of "+doc+" in EVENTS", func() bool {
			m, err = st.GetLastMsgForSubject(t.Context(), events.EventSubject("acme", "bob", "lists", doc))
			return err == nil
		})
		if got := m.Header.Values(events.HeaderWriterGroups); len(got) != 1 || got[0] != want {
			t.Fatalf("%s: writer groups %q, want [%q]", doc, got, want)
		}
	}
}
