package main

import (
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/auth/jwtlogin/jwtlogintest"
)

// serveWithIdP runs ebb serve with the users file and login tokens from a
// test identity provider.
func serveWithIdP(t *testing.T, k jwtlogintest.Key) *testServer {
	t.Helper()
	idp := jwtlogintest.Start(t, k)
	return serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML),
		"--jwt-issuer", jwtlogintest.Issuer, "--jwt-audience", jwtlogintest.Audience, "--jwt-jwks-url", idp.URL)
}

// TestCLI_TokenLogin: a client logs in with a token from the app's login
// (EBB_TOKEN, no user or password) over NATS and over HTTP, writes its
// tenant, and a users-file user of that tenant reads what it wrote; the
// token reaches no other tenant, and bad tokens are refused clearly.
func TestCLI_TokenLogin(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	srv := serveWithIdP(t, k)
	tok := jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "dana", Tenant: "acme"})
	dana := map[string]string{"EBB_NATS": srv.nats, "EBB_HTTP": srv.http, "EBB_TENANT": "acme", "EBB_DATA": filepath.Join(t.TempDir(), "dana"), "EBB_TOKEN": tok}
	if out := mustCLI(t, dana, "put", "todos", "t1", `{"title":"from dana"}`); !strings.Contains(out, "synced") {
		t.Fatalf("put with a token: %q, want synced", out)
	}
	bob := map[string]string{"EBB_NATS": srv.nats, "EBB_TENANT": "acme", "EBB_DATA": filepath.Join(t.TempDir(), "bob"), "EBB_USER": "bob", "EBB_PASSWORD": "bob-pw"}
	mustCLI(t, bob, "sync", "--timeout", "20s")
	if out := mustCLI(t, bob, "get", "todos", "t1"); !strings.Contains(out, "from dana") {
		t.Fatalf("bob get: %q", out)
	}
	// Over HTTP, with the same token.
	if out := mustCLI(t, dana, "history", "todos", "t1"); !strings.Contains(out, "no conflict records") {
		t.Fatalf("history over HTTP with a token: %q", out)
	}

	// Another tenant: refused.
	_, stderr, err := cli(with(dana, "EBB_TENANT", "evil", "EBB_DATA", filepath.Join(t.TempDir(), "dana-evil")), "put", "todos", "x", `{"a":1}`)
	if !errors.Is(err, errRefused) {
		t.Fatalf("put to another tenant with dana's token: %v %s, want refused", err, stderr)
	}
	if code, body := httpBearer(t, "GET", srv.http+"/v1/evil/changes", tok); code != http.StatusForbidden {
		t.Fatalf("HTTP read of another tenant: %d %s, want 403", code, body)
	}

	// Bad tokens: an expired one is refused before connecting; one the
	// server rejects is refused by the server.
	expired := jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "dana", Tenant: "acme", Expiry: time.Now().Add(-time.Hour)})
	_, _, err = cli(with(dana, "EBB_TOKEN", expired, "EBB_DATA", filepath.Join(t.TempDir(), "d2")), "put", "todos", "t2", `{"a":1}`)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("put with an expired token: %v, want an error saying it expired", err)
	}
	wrong := jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "dana", Tenant: "acme", Issuer: "https://evil.test"})
	_, _, err = cli(with(dana, "EBB_TOKEN", wrong, "EBB_DATA", filepath.Join(t.TempDir(), "d3")), "put", "todos", "t3", `{"a":1}`)
	if !errors.Is(err, errRefused) {
		t.Fatalf("put with a wrong-issuer token: %v, want refused", err)
	}
	if code, body := httpBearer(t, "GET", srv.http+"/v1/acme/changes", wrong); code != http.StatusUnauthorized || !strings.Contains(body, "wrong issuer") {
		t.Fatalf("HTTP with a wrong-issuer token: %d %s, want 401 saying wrong issuer", code, body)
	}
	if !strings.Contains(srv.stderr.String(), "wrong issuer") {
		t.Errorf("the server's log does not say why the NATS login was refused")
	}
}

func httpBearer(t *testing.T, method, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
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
	return resp.StatusCode, b.String()
}

// TestCLI_TokenInContext: a token saved in a context is used to log in,
// and is not shown by context ls.
func TestCLI_TokenInContext(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	srv := serveWithIdP(t, k)
	tok := jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "erin", Tenant: "acme"})
	env := map[string]string{"XDG_CONFIG_HOME": t.TempDir()}
	if _, stderr, code := runIn(t, env, "context", "save", "erin", "--use", "--nats", srv.nats, "--tenant", "acme",
		"--data", filepath.Join(t.TempDir(), "erin"), "--token", tok); code != 0 {
		t.Fatalf("context save: %d %s", code, stderr)
	}
	if out, _, _ := runIn(t, env, "context", "show", "erin"); strings.Contains(out, tok) || !strings.Contains(out, "REDACTED") {
		t.Fatalf("context show prints the token:\n%s", out)
	}
	if out, stderr, code := runIn(t, env, "put", "todos", "t1", `{"by":"erin"}`); code != 0 || !strings.Contains(out, "synced") {
		t.Fatalf("put with the context's token: %d %q %s", code, out, stderr)
	}
	if _, stderr, code := runIn(t, env, "put", "todos", "t2", `{"a":1}`, "--password", "x"); code != 2 || !strings.Contains(stderr, "exclude each other") {
		t.Fatalf("--token with --password: %d %s, want a usage error", code, stderr)
	}
}
