package console_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
)

// getAPI asks the console API as user:password ("" for none) and decodes
// the answer into out (when not nil); it returns the status.
func getAPI(t *testing.T, st *stack, creds, path string, q url.Values, out any) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, st.url("/ui/api/"+path+"?"+q.Encode()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if creds != "" {
		req.Header.Set("Authorization", "Bearer "+base64.StdEncoding.EncodeToString([]byte(creds)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q, want application/json", path, ct)
	}
	var body json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, body)
		}
	}
	return resp.StatusCode, resp.Header
}

func TestAPI_AuthAdminSeesAllTenantsClientOnlyItsOwn(t *testing.T) {
	users, err := auth.New([]auth.User{
		{Name: "root", Password: "rootpw", Role: auth.RoleAdmin},
		{Name: "alice", Password: "alicepw", Tenant: "acme", Role: auth.RoleClient},
		{Name: "gus", Password: "guspw", Tenant: "globex", Role: auth.RoleClient},
	})
	if err != nil {
		t.Fatal(err)
	}
	st := newStackWith(t, users)
	w := newWriter("alice")
	st.creds = [2]string{"alice", "alicepw"}
	st.push(t, "acme", w.put("acme", "notes", "a1", 0, `{"v":1}`))
	st.creds = [2]string{"gus", "guspw"}
	st.push(t, "globex", newWriter("gus").put("globex", "notes", "g1", 0, `{"v":2}`))
	embeddedtest.WaitFor(t, 10*time.Second, "both documents applied", func() bool {
		return st.get(t, "acme", "notes", "a1").Version == 1 && st.get(t, "globex", "notes", "g1").Version == 1
	})

	for _, tc := range []struct {
		name, creds, path string
		q                 url.Values
		want              int
	}{
		{"no credentials", "", "me", nil, http.StatusUnauthorized},
		{"wrong password", "alice:nope", "docs", url.Values{"tenant": {"acme"}}, http.StatusUnauthorized},
		{"client, own tenant", "alice:alicepw", "docs", url.Values{"tenant": {"acme"}}, http.StatusOK},
		{"client, other tenant", "alice:alicepw", "docs", url.Values{"tenant": {"globex"}}, http.StatusForbidden},
		{"client, other tenant's document", "alice:alicepw", "doc", url.Values{"tenant": {"globex"}, "collection": {"notes"}, "id": {"g1"}}, http.StatusForbidden},
		{"client, other tenant's dead letters", "alice:alicepw", "dead", url.Values{"tenant": {"globex"}}, http.StatusForbidden},
		{"client, streams", "alice:alicepw", "streams", nil, http.StatusForbidden},
		{"admin, other tenant", "root:rootpw", "docs", url.Values{"tenant": {"globex"}}, http.StatusOK},
		{"admin, streams", "root:rootpw", "streams", nil, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, h := getAPI(t, st, tc.creds, tc.path, tc.q, nil)
			if got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
			if h.Get("WWW-Authenticate") != "" {
				t.Fatalf("WWW-Authenticate %q: a browser would show its own dialog", h.Get("WWW-Authenticate"))
			}
		})
	}

	var me struct{ Tenants []string }
	getAPI(t, st, "alice:alicepw", "me", nil, &me)
	if !slices.Equal(me.Tenants, []string{"acme"}) {
		t.Fatalf("alice's tenants %v, want [acme]", me.Tenants)
	}
	getAPI(t, st, "root:rootpw", "me", nil, &me)
	if !slices.Equal(me.Tenants, []string{"acme", "globex"}) {
		t.Fatalf("admin's tenants %v, want [acme globex]", me.Tenants)
	}
	// A client asking without a tenant gets its own.
	var docs struct {
		Tenant string
		Docs   []struct{ ID string }
	}
	getAPI(t, st, "alice:alicepw", "docs", nil, &docs)
	if docs.Tenant != "acme" || len(docs.Docs) != 1 || docs.Docs[0].ID != "a1" {
		t.Fatalf("alice's default docs = %+v, want acme's a1", docs)
	}
}

func TestAPI_DocsPageAndSearch(t *testing.T) {
	st := newStack(t)
	w := newWriter("alice")
	for _, id := range []string{"apple", "apricot", "banana", "cherry"} {
		st.push(t, "acme", w.put("acme", "fruit", id, 0, `{"n":1}`))
	}
	st.push(t, "acme", w.put("acme", "veg", "kale", 0, `{"n":1}`))
	embeddedtest.WaitFor(t, 10*time.Second, "documents applied", func() bool { return st.get(t, "acme", "veg", "kale").Version == 1 })

	type page struct {
		Collection  string
		Collections []string
		Docs        []struct{ ID string }
		More        bool
		Next        string
	}
	ids := func(p page) []string {
		var out []string
		for _, d := range p.Docs {
			out = append(out, d.ID)
		}
		return out
	}
	var p page
	getAPI(t, st, "", "docs", url.Values{"tenant": {"acme"}, "collection": {"fruit"}, "limit": {"2"}}, &p)
	if !slices.Equal(ids(p), []string{"apple", "apricot"}) || !p.More || p.Next != "apricot" || !slices.Equal(p.Collections, []string{"fruit", "veg"}) {
		t.Fatalf("first page %+v", p)
	}
	getAPI(t, st, "", "docs", url.Values{"tenant": {"acme"}, "collection": {"fruit"}, "limit": {"2"}, "after": {p.Next}}, &p)
	if !slices.Equal(ids(p), []string{"banana", "cherry"}) || p.More {
		t.Fatalf("second page %+v", p)
	}
	getAPI(t, st, "", "docs", url.Values{"tenant": {"acme"}, "collection": {"fruit"}, "q": {"ap"}}, &p)
	if !slices.Equal(ids(p), []string{"apple", "apricot"}) || p.More {
		t.Fatalf("search ap: %+v", p)
	}

	for _, tc := range []struct {
		name, path string
		q          url.Values
		want       int
	}{
		{"no tenant", "docs", nil, http.StatusBadRequest},
		{"bad limit", "docs", url.Values{"tenant": {"acme"}, "limit": {"-1"}}, http.StatusBadRequest},
		{"missing document", "doc", url.Values{"tenant": {"acme"}, "collection": {"fruit"}, "id": {"durian"}}, http.StatusNotFound},
		{"journey of no ULID", "journey", url.Values{"tenant": {"acme"}, "event": {"nope"}}, http.StatusBadRequest},
		{"journey of an unknown event", "journey", url.Values{"tenant": {"acme"}, "event": {"01ARZ3NDEKTSV4RRFFQ69G5FAV"}}, http.StatusNotFound},
		{"no such route", "nothing", nil, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := getAPI(t, st, "", tc.path, tc.q, nil); got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}
}

func TestAssets_ServedEmbeddedWithStablePaths(t *testing.T) {
	st := newStack(t)
	for path, ctype := range map[string]string{
		"/ui/":              "text/html; charset=utf-8",
		"/ui/ebb-client.js": "text/javascript; charset=utf-8",
		"/ui/try.html":      "text/html; charset=utf-8",
		"/ui/sw.js":         "text/javascript; charset=utf-8",
	} {
		resp, err := http.Get(st.url(path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ctype {
			t.Errorf("GET %s: %d %q, want 200 %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), ctype)
		}
	}
}
