package gateway_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin/jwtlogintest"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
)

// jwtEnv is a gateway with a users file (bob of globex) and login tokens
// from a test IdP.
func jwtEnv(t *testing.T, keys ...jwtlogintest.Key) (*env, *jwtlogintest.IdP) {
	t.Helper()
	users, err := auth.Parse([]byte("users: [{name: bob, password: bob-pw, tenant: globex, role: client}]"))
	if err != nil {
		t.Fatal(err)
	}
	idp := jwtlogintest.Start(t, keys...)
	v, err := jwtlogin.New(t.Context(), jwtlogin.Config{Issuer: jwtlogintest.Issuer, Audience: jwtlogintest.Audience, JWKSURL: idp.URL, MinRefresh: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return newEnvWith(t, func(c *gateway.Config) { c.Users, c.Tokens = users, v }), idp
}

func (e *env) as(t *testing.T, method, path, authz string, body any) (int, string, http.Header) {
	t.Helper()
	var rd *strings.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = strings.NewReader(string(j))
	} else {
		rd = strings.NewReader("")
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String(), resp.Header
}

// TestGateway_JWTLogin: a valid token reads and writes its tenant, as
// itself, and nothing else; password logins still work beside it.
func TestGateway_JWTLogin(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	e, _ := jwtEnv(t, k)
	bearer := "Bearer " + jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "alice", Tenant: "acme"})

	ev := e.event("acme", "todos", "t1", 1)
	ev.Client = "alice"
	code, body, _ := e.as(t, "POST", "/v1/acme/events", bearer, []any{ev})
	if code != http.StatusOK || !strings.Contains(body, gateway.StatusAccepted) {
		t.Fatalf("push to its tenant: %d %s", code, body)
	}
	if code, body, _ := e.as(t, "GET", "/v1/acme/changes", bearer, nil); code != http.StatusOK {
		t.Fatalf("pull its tenant's changes: %d %s", code, body)
	}
	if code, body, _ := e.as(t, "GET", "/v1/acme/receipts/alice", bearer, nil); code != http.StatusOK {
		t.Fatalf("pull its receipts: %d %s", code, body)
	}
	forbidden := []struct{ method, path string }{
		{"GET", "/v1/globex/changes"},
		{"POST", "/v1/globex/events"},
		{"GET", "/v1/globex/docs/todos"},
		{"GET", "/v1/acme/receipts/bob"},
		{"GET", "/metrics"},
	}
	for _, f := range forbidden {
		code, body, _ := e.as(t, f.method, f.path, bearer, []any{})
		if code != http.StatusForbidden && (f.path != "/metrics" || code != http.StatusNotFound) {
			t.Errorf("%s %s with alice's token: %d %s, want 403", f.method, f.path, code, body)
		}
	}
	// As another client of its own tenant: the event is refused.
	other := e.event("acme", "todos", "t2", 2)
	other.Client = "carol"
	if code, body, _ := e.as(t, "POST", "/v1/acme/events", bearer, []any{other}); code == http.StatusOK && strings.Contains(body, gateway.StatusAccepted) {
		t.Fatalf("alice pushed as carol: %d %s", code, body)
	}

	basic := "Bearer " + base64.StdEncoding.EncodeToString([]byte("bob:bob-pw"))
	if code, body, _ := e.as(t, "GET", "/v1/globex/changes", basic, nil); code != http.StatusOK {
		t.Fatalf("password login beside tokens: %d %s", code, body)
	}
}

// TestGateway_JWTBadTokens: each bad token is a 401 that says why.
func TestGateway_JWTBadTokens(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	e, _ := jwtEnv(t, k)
	alice := jwtlogintest.Claims{Subject: "alice", Tenant: "acme"}
	with := func(f func(*jwtlogintest.Claims)) jwtlogintest.Claims { c := alice; f(&c); return c }
	tests := []struct{ name, token, want string }{
		{"expired", jwtlogintest.Token(t, k, with(func(c *jwtlogintest.Claims) { c.Expiry = time.Now().Add(-time.Hour) })), "token expired"},
		{"wrong issuer", jwtlogintest.Token(t, k, with(func(c *jwtlogintest.Claims) { c.Issuer = "https://evil.test" })), "wrong issuer"},
		{"wrong audience", jwtlogintest.Token(t, k, with(func(c *jwtlogintest.Claims) { c.Audience = []string{"x"} })), "wrong audience"},
		{"wrong key", jwtlogintest.Token(t, jwtlogintest.NewKey(t, "k1"), alice), "bad signature"},
		{"unknown kid", jwtlogintest.Token(t, jwtlogintest.NewKey(t, "k2"), alice), "unknown signing key"},
		{"a users-file name", jwtlogintest.Token(t, k, with(func(c *jwtlogintest.Claims) { c.Subject = "bob"; c.Tenant = "globex" })), "user name taken"},
		{"malformed", "a.b.c", "malformed token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, h := e.as(t, "GET", "/v1/acme/changes", "Bearer "+tt.token, nil)
			if code != http.StatusUnauthorized || !strings.Contains(body, tt.want) {
				t.Fatalf("%d %s, want 401 saying %q", code, body, tt.want)
			}
			if !strings.Contains(strings.Join(h.Values("WWW-Authenticate"), ","), `error="invalid_token"`) {
				t.Fatalf("WWW-Authenticate %q, want a Bearer invalid_token challenge", h.Values("WWW-Authenticate"))
			}
		})
	}
}

// TestGateway_JWTKeyRotation: over HTTP, the new key is picked up and the
// old one dropped, without a restart.
func TestGateway_JWTKeyRotation(t *testing.T) {
	old, next := jwtlogintest.NewKey(t, "old"), jwtlogintest.NewKey(t, "new")
	e, idp := jwtEnv(t, old)
	c := jwtlogintest.Claims{Subject: "alice", Tenant: "acme"}
	oldTok, newTok := "Bearer "+jwtlogintest.Token(t, old, c), "Bearer "+jwtlogintest.Token(t, next, c)
	status := func(tok string) int { code, _, _ := e.as(t, "GET", "/v1/acme/changes", tok, nil); return code }
	if got := status(oldTok); got != http.StatusOK {
		t.Fatalf("old token: %d", got)
	}
	idp.Publish(next)
	embeddedtest.WaitFor(t, 10*time.Second, "new token accepted", func() bool { return status(newTok) == http.StatusOK })
	if got := status(oldTok); got != http.StatusUnauthorized {
		t.Fatalf("old token after its key left the set: %d, want 401", got)
	}
}
