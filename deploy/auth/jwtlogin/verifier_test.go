package jwtlogin_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin/jwtlogintest"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
)

func mustVerifier(tb testing.TB, cfg jwtlogin.Config) *jwtlogin.Verifier {
	tb.Helper()
	if cfg.Issuer == "" {
		cfg.Issuer = jwtlogintest.Issuer
	}
	if cfg.Audience == "" {
		cfg.Audience = jwtlogintest.Audience
	}
	v, err := jwtlogin.New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("new verifier: %v", err)
	}
	tb.Cleanup(func() { _ = v.Close() })
	return v
}

func TestVerifier_Tokens(t *testing.T) {
	k1 := jwtlogintest.NewKey(t, "k1")
	stranger := jwtlogintest.NewKey(t, "k1") // same key id, another key
	other := jwtlogintest.NewKey(t, "k9")
	idp := jwtlogintest.Start(t, k1)
	v := mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL})
	now := time.Now()
	alice := jwtlogintest.Claims{Subject: "alice", Tenant: "acme"}
	with := func(f func(*jwtlogintest.Claims)) jwtlogintest.Claims { c := alice; f(&c); return c }

	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hsToken, err := jwt.Signed(hs).Claims(jwt.Claims{Subject: "alice", Issuer: jwtlogintest.Issuer, Audience: jwt.Audience{jwtlogintest.Audience}, Expiry: jwt.NewNumericDate(now.Add(time.Hour))}).Claims(map[string]any{"tenant": "acme"}).Serialize()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		token    string
		wantErr  error
		wantRole auth.Role
	}{
		{name: "valid", token: jwtlogintest.Token(t, k1, alice), wantRole: auth.RoleClient},
		{name: "service role", token: jwtlogintest.Token(t, k1, with(func(c *jwtlogintest.Claims) { c.Roles = []string{"reader", "service"} })), wantRole: auth.RoleService},
		{name: "expired within leeway", token: jwtlogintest.Token(t, k1, with(func(c *jwtlogintest.Claims) { c.Expiry = now.Add(-5 * time.Second) })), wantRole: auth.RoleClient},
		{name: "expired", token: jwtlogintest.Token(t, k1, with(func(c *jwtlogintest.Claims) { c.Expiry = now.Add(-2 * time.Minute) })), wantErr: jwtlogin.ErrExpired},
		{name: "not yet valid", token: jwtlogintest.Token(t, k1, with(func(c *jwtlogintest.Claims) { c.NotBefore = now.Add(5 * time.Minute) })), wantErr: jwtlogin.ErrNotYetValid},
		{name: "wrong issuer", token: jwtlogintest.Token(t, k1, with(func(c *jwtlogintest.Claims) { c.Issuer = "https://evil.test" })), wantErr: jwtlogin.ErrIssuer},
		{name: "wrong audience", token: jwtlogintest.Token(t, k1, with(func(c *jwtlogintest.Claims) { c.Audience = []string{"other-app"} })), wantErr: jwtlogin.ErrAudience},
		{name: "wrong key", token: jwtlogintest.Token(t, stranger, alice), wantErr: jwtlogin.ErrSignature},
		{name: "unknown kid", token: jwtlogintest.Token(t, other, alice), wantErr: jwtlogin.ErrUnknownKey},
		{name: "no tenant", token: jwtlogintest.Token(t, k1, with(func(c *jwtlogintest.Claims) { c.Tenant = "" })), wantErr: jwtlogin.ErrClaims},
		{name: "admin refused", token: jwtlogintest.Token(t, k1, with(func(c *jwtlogintest.Claims) { c.Roles = []string{"admin"} })), wantErr: jwtlogin.ErrClaims},
		{name: "reserved name", token: jwtlogintest.Token(t, k1, with(func(c *jwtlogintest.Claims) { c.Subject = auth.ReservedPrefix + "internal" })), wantErr: jwtlogin.ErrClaims},
		{name: "tenant with a control character", token: jwtlogintest.Token(t, k1, with(func(c *jwtlogintest.Claims) { c.Tenant = "ac\x00me" })), wantErr: jwtlogin.ErrClaims},
		{name: "user name too long", token: jwtlogintest.Token(t, k1, with(func(c *jwtlogintest.Claims) { c.Subject = strings.Repeat("a", 129) })), wantErr: jwtlogin.ErrClaims},
		{name: "hmac refused", token: hsToken, wantErr: jwtlogin.ErrMalformed},
		{name: "not a jwt", token: "dXNlcjpwYXNz", wantErr: jwtlogin.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tt.token)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !errors.Is(err, jwtlogin.ErrInvalidToken) {
					t.Fatalf("Verify: %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.User.Name != "alice" || id.User.Tenant != "acme" || id.User.Role != tt.wantRole {
				t.Fatalf("identity %+v, want alice of acme as %s", id.User, tt.wantRole)
			}
		})
	}
}

func TestVerifier_ClaimNames(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	idp := jwtlogintest.Start(t, k)
	v := mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL, UserClaim: "email", TenantClaim: "org", RolesClaim: "groups"})
	tok := jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "123", Extra: map[string]any{"email": "bob@acme.test", "org": "acme", "groups": "service"}})
	id, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id.User.Name != "bob@acme.test" || id.User.Tenant != "acme" || id.User.Role != auth.RoleService {
		t.Fatalf("identity %+v", id.User)
	}
}

func TestVerifier_PublicKeyFile(t *testing.T) {
	k := jwtlogintest.NewKey(t, "")
	der, err := x509.MarshalPKIXPublicKey(&k.Private.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "idp.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	v := mustVerifier(t, jwtlogin.Config{PublicKeyFile: path})
	if _, err := v.Verify(context.Background(), jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "a", Tenant: "acme"})); err != nil {
		t.Fatalf("Verify with the configured key: %v", err)
	}
	wrong := jwtlogintest.NewKey(t, "")
	if _, err := v.Verify(context.Background(), jwtlogintest.Token(t, wrong, jwtlogintest.Claims{Subject: "a", Tenant: "acme"})); !errors.Is(err, jwtlogin.ErrSignature) {
		t.Fatalf("Verify with another key: %v, want ErrSignature", err)
	}
}

func TestVerifier_InvalidConfig(t *testing.T) {
	_, err := jwtlogin.New(context.Background(), jwtlogin.Config{JWKSURL: "ftp://x", Algorithms: []jose.SignatureAlgorithm{jose.HS256}})
	if !errors.Is(err, jwtlogin.ErrInvalidConfig) {
		t.Fatalf("New: %v, want ErrInvalidConfig", err)
	}
	// A JWKS that cannot be fetched fails New: the server does not start
	// with no keys.
	_, err = jwtlogin.New(context.Background(), jwtlogin.Config{Issuer: "i", Audience: "a", JWKSURL: "http://127.0.0.1:1/jwks"})
	if err == nil {
		t.Fatal("New with an unreachable JWKS succeeded")
	}
}

// TestVerifier_KeyRotation: the IdP starts signing with a new key and
// later drops the old one; the verifier follows without a restart.
func TestVerifier_KeyRotation(t *testing.T) {
	old := jwtlogintest.NewKey(t, "old")
	next := jwtlogintest.NewKey(t, "new")
	idp := jwtlogintest.Start(t, old)
	v := mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL, MinRefresh: 20 * time.Millisecond})
	ctx := context.Background()
	c := jwtlogintest.Claims{Subject: "alice", Tenant: "acme"}
	oldTok, newTok := jwtlogintest.Token(t, old, c), jwtlogintest.Token(t, next, c)
	if _, err := v.Verify(ctx, oldTok); err != nil {
		t.Fatalf("old token before rotation: %v", err)
	}
	if _, err := v.Verify(ctx, newTok); !errors.Is(err, jwtlogin.ErrUnknownKey) {
		t.Fatalf("new token before the IdP serves its key: %v, want ErrUnknownKey", err)
	}

	idp.Publish(old, next) // rotation starts: both keys served
	embeddedtest.WaitFor(t, 5*time.Second, "new token accepted after the IdP serves its key", func() bool {
		_, err := v.Verify(ctx, newTok)
		return err == nil
	})
	if _, err := v.Verify(ctx, oldTok); err != nil {
		t.Fatalf("old token while both keys are served: %v", err)
	}

	idp.Publish(next) // rotation ends: the old key leaves the set
	fresh := jwtlogintest.Token(t, jwtlogintest.NewKey(t, "probe"), c)
	embeddedtest.WaitFor(t, 5*time.Second, "old token refused once its key left the set", func() bool {
		_, _ = v.Verify(ctx, fresh) // an unknown kid makes the verifier refresh
		_, err := v.Verify(ctx, oldTok)
		return errors.Is(err, jwtlogin.ErrUnknownKey)
	})
	if _, err := v.Verify(ctx, newTok); err != nil {
		t.Fatalf("new token after rotation: %v", err)
	}
}

// TestVerifier_UnknownKidRateLimited: a flood of tokens with unknown key
// ids does not become a flood of JWKS fetches.
func TestVerifier_UnknownKidRateLimited(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	idp := jwtlogintest.Start(t, k)
	v := mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL, MinRefresh: time.Hour})
	before := idp.Fetches()
	for i := range 50 {
		tok := jwtlogintest.Token(t, jwtlogintest.NewKey(t, "x"+string(rune('a'+i%26))), jwtlogintest.Claims{Subject: "a", Tenant: "acme"})
		if _, err := v.Verify(context.Background(), tok); !errors.Is(err, jwtlogin.ErrUnknownKey) {
			t.Fatalf("Verify: %v, want ErrUnknownKey", err)
		}
	}
	if got := idp.Fetches() - before; got > 1 {
		t.Fatalf("%d JWKS fetches for 50 unknown key ids, want at most 1", got)
	}
}

// TestVerifier_PeriodicRefresh: with no token asking, the set is still
// refreshed every Refresh.
func TestVerifier_PeriodicRefresh(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	idp := jwtlogintest.Start(t, k)
	v := mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL, Refresh: 20 * time.Millisecond, MinRefresh: time.Hour})
	tok := jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "a", Tenant: "acme"})
	idp.Publish()
	embeddedtest.WaitFor(t, 5*time.Second, "a key the IdP dropped is refused after the periodic refresh", func() bool {
		_, err := v.Verify(context.Background(), tok)
		return errors.Is(err, jwtlogin.ErrUnknownKey)
	})
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestPeek(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	tok := jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "alice", Tenant: "acme", Expiry: exp, Extra: map[string]any{"email": "a@x"}})
	user, e, err := jwtlogin.Peek(tok, "")
	if err != nil || user != "alice" || !e.Equal(exp) {
		t.Fatalf("Peek: %q %v %v, want alice %v", user, e, err, exp)
	}
	if user, _, _ := jwtlogin.Peek(tok, "email"); user != "a@x" {
		t.Fatalf("Peek by email: %q", user)
	}
	if _, _, err := jwtlogin.Peek("dXNlcjpwYXNz", ""); !errors.Is(err, jwtlogin.ErrMalformed) {
		t.Fatalf("Peek of garbage: %v, want ErrMalformed", err)
	}
}

// TestVerifier_Groups: the groups claim (default "groups", or
// Config.GroupsClaim) is a string or a list of strings, each a valid name,
// and becomes Identity.User.Groups; anything else refuses the token.
func TestVerifier_Groups(t *testing.T) {
	k := jwtlogintest.NewKey(t, "k1")
	idp := jwtlogintest.Start(t, k)
	v := mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL})
	custom := mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL, GroupsClaim: "teams"})
	tok := func(extra map[string]any) string {
		return jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "alice", Tenant: "acme", Extra: extra})
	}
	tests := []struct {
		name    string
		v       *jwtlogin.Verifier
		token   string
		want    []string
		wantErr error
	}{
		{name: "list", v: v, token: tok(map[string]any{"groups": []any{"team-a", "ops team"}}), want: []string{"ops team", "team-a"}}, // sorted
		{name: "one string", v: v, token: tok(map[string]any{"groups": "team-a"}), want: []string{"team-a"}},
		{name: "absent", v: v, token: tok(nil)},
		{name: "empty list", v: v, token: tok(map[string]any{"groups": []any{}})},
		{name: "custom claim", v: custom, token: tok(map[string]any{"teams": []any{"red"}, "groups": []any{"ignored"}}), want: []string{"red"}},
		{name: "a number", v: v, token: tok(map[string]any{"groups": 7}), wantErr: jwtlogin.ErrClaims},
		{name: "a list with a number", v: v, token: tok(map[string]any{"groups": []any{"team-a", 7}}), wantErr: jwtlogin.ErrClaims},
		{name: "an empty name", v: v, token: tok(map[string]any{"groups": []any{""}}), wantErr: jwtlogin.ErrClaims},
		{name: "a control character", v: v, token: tok(map[string]any{"groups": "te\x01am"}), wantErr: jwtlogin.ErrClaims},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := tt.v.Verify(context.Background(), tt.token)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), "group") {
					t.Fatalf("Verify: %v, want %v naming the groups claim", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !slices.Equal(id.User.Groups, tt.want) {
				t.Fatalf("groups %q, want %q", id.User.Groups, tt.want)
			}
		})
	}
}
