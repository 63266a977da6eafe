package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// newEnvWith is newEnv with the gateway's Config changed by edit.
func newEnvWith(t *testing.T, edit func(*gateway.Config)) *env {
	t.Helper()
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := gateway.Config{JetStream: js, MaxPage: 50, MaxWait: 5 * time.Second}
	edit(&cfg)
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return &env{gw: g, js: js, srv: srv, ids: events.NewIDSource(nil), clk: events.NewClock(nil, 0)}
}

// longPoll starts a GET that long-polls and returns a channel with its
// status and body.
func (e *env) longPoll(t *testing.T, path, user string) <-chan [2]string {
	out := make(chan [2]string, 1)
	go func() {
		req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
		if user != "" {
			req.SetBasicAuth(user, user+"-pw")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- [2]string{"error", err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		out <- [2]string{fmt.Sprint(resp.StatusCode), string(b)}
	}()
	return out
}

func wantTooMany(t *testing.T, got [2]string, what string) {
	t.Helper()
	var ae struct{ Error string }
	if got[0] != "429" || json.Unmarshal([]byte(got[1]), &ae) != nil || !strings.Contains(ae.Error, "long-poll") {
		t.Fatalf("%s: %s %s, want 429 with a JSON error about long-polls", what, got[0], got[1])
	}
}

// TestLongPoll_LimitsPerUserAndTotal: concurrent long-polls are capped per
// user and in total; one over a cap is answered 429 at once, and a slot is
// free again when a long-poll ends. Pulls that do not wait are not capped.
func TestLongPoll_LimitsPerUserAndTotal(t *testing.T) {
	users, err := auth.Parse([]byte(`users:
  - {name: alice, password: alice-pw, tenant: acme, role: client}
  - {name: bob, password: bob-pw, tenant: acme, role: client}
  - {name: carol, password: carol-pw, tenant: acme, role: client}
`))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, func(c *gateway.Config) {
		c.Users = users
		c.MaxLongPolls = 3
		c.MaxLongPollsPerUser = 2
	})
	const wait = "/v1/acme/changes?wait=5s"
	var pending []<-chan [2]string
	poll := func(user string, active int) {
		t.Helper()
		pending = append(pending, e.longPoll(t, wait, user))
		waitFor(t, 5*time.Second, fmt.Sprintf("%d long-polls", active), func() bool { return e.gw.ActiveLongPolls() == active })
	}
	poll("alice", 1)
	poll("alice", 2)
	wantTooMany(t, <-e.longPoll(t, wait, "alice"), "alice's third long-poll")
	// Receipts count too: they are the same kind of wait.
	wantTooMany(t, <-e.longPoll(t, "/v1/acme/receipts/alice?wait=5s", "alice"), "alice's receipts long-poll")
	// A pull that does not wait is not a long-poll.
	if got := <-e.longPoll(t, "/v1/acme/changes", "alice"); got[0] != "200" {
		t.Fatalf("alice's plain pull: %v", got)
	}
	poll("bob", 3)
	wantTooMany(t, <-e.longPoll(t, wait, "carol"), "carol over the total")

	// A change ends every long-poll; the slots are free again.
	publishChange(t, e.js, events.Change{Tenant: "acme", Collection: "todos", Doc: "d", Version: 1, Event: "e", Client: "c"})
	for _, p := range pending {
		if got := <-p; got[0] != "200" {
			t.Fatalf("long-poll: %v", got)
		}
	}
	waitFor(t, 5*time.Second, "no long-polls", func() bool { return e.gw.ActiveLongPolls() == 0 })
	got := e.longPoll(t, "/v1/acme/changes?after=1&wait=100ms", "carol")
	if r := <-got; r[0] != "200" {
		t.Fatalf("carol after the slots freed: %v", r)
	}
}

// TestLongPoll_LimitWithoutAuth: without users the per-user cap is per
// remote address.
func TestLongPoll_LimitWithoutAuth(t *testing.T) {
	e := newEnvWith(t, func(c *gateway.Config) { c.MaxLongPollsPerUser = 1 })
	first := e.longPoll(t, "/v1/acme/changes?wait=5s", "")
	waitFor(t, 5*time.Second, "one long-poll", func() bool { return e.gw.ActiveLongPolls() == 1 })
	wantTooMany(t, <-e.longPoll(t, "/v1/acme/changes?wait=5s", ""), "a second long-poll from one address")
	publishChange(t, e.js, events.Change{Tenant: "acme", Collection: "todos", Doc: "d", Version: 1, Event: "e", Client: "c"})
	if got := <-first; got[0] != "200" {
		t.Fatalf("first long-poll: %v", got)
	}
}

// TestMaxBody: a body over Config.MaxBody is 413 with a JSON error,
// whether its length is announced or it is streamed, on any route.
func TestMaxBody(t *testing.T) {
	e := newEnvWith(t, func(c *gateway.Config) { c.MaxBody = 1024 })
	big := "[" + strings.Repeat(`"x",`, 400) + `"x"]`
	tests := []struct {
		name, method, path string
		chunked            bool
	}{
		{"announced push", "POST", "/v1/acme/events", false},
		{"streamed push", "POST", "/v1/acme/events", true},
		{"announced body on a read", "GET", "/v1/acme/changes", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(big)
			if tt.chunked {
				body = io.MultiReader(strings.NewReader(big)) // unknown length: sent chunked
			}
			req, _ := http.NewRequest(tt.method, e.srv.URL+tt.path, body)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var ae struct{ Error string }
			if resp.StatusCode != 413 || json.Unmarshal(b, &ae) != nil || !strings.Contains(ae.Error, "1024") {
				t.Fatalf("%d %s, want 413 naming the 1024-byte limit", resp.StatusCode, b)
			}
		})
	}
	// Under the limit still works.
	if code, body := e.do(t, "POST", "/v1/acme/events", "[]"); code != 200 {
		t.Fatalf("small push: %d %s", code, body)
	}
}

var waitFor = embeddedtest.WaitFor
