// Package jwtlogintest is a test identity provider: signing keys made by
// the test, a JWKS served on 127.0.0.1 whose keys the test changes, and
// tokens signed with any of them.
package jwtlogintest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer and Audience are the IdP's defaults for tokens and verifiers.
const (
	Issuer   = "https://idp.test"
	Audience = "ebb"
)

// Key is a signing key and its key id.
type Key struct {
	ID      string
	Private *ecdsa.PrivateKey
}

// NewKey makes an ES256 key with id kid.
func NewKey(tb testing.TB, kid string) Key {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("generate key: %v", err)
	}
	return Key{ID: kid, Private: k}
}

// IdP serves a JWKS of the keys it is told to publish.
type IdP struct {
	URL     string // of the JWKS
	fetches atomic.Int64
	down    atomic.Bool

	mu   sync.Mutex
	keys []Key
}

// Start serves keys as a JWKS on 127.0.0.1 until the test ends.
func Start(tb testing.TB, keys ...Key) *IdP {
	tb.Helper()
	p := &IdP{keys: keys}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		if p.down.Load() {
			http.Error(w, "identity provider down", http.StatusServiceUnavailable)
			return
		}
		p.mu.Lock()
		var set jose.JSONWebKeySet
		for _, k := range p.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.Private.PublicKey, KeyID: k.ID, Algorithm: string(jose.ES256), Use: "sig"})
		}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	tb.Cleanup(srv.Close)
	p.URL = srv.URL + "/.well-known/jwks.json"
	return p
}

// Publish replaces the keys the JWKS serves.
func (p *IdP) Publish(keys ...Key) {
	p.mu.Lock()
	p.keys = keys
	p.mu.Unlock()
}

// SetDown makes the JWKS answer 503 (down true) or serve its keys again.
// A fetch while down still counts in Fetches.
func (p *IdP) SetDown(down bool) { p.down.Store(down) }

// Fetches counts the JWKS requests served.
func (p *IdP) Fetches() int64 { return p.fetches.Load() }

// Claims are a token's claims; zero fields take Token's defaults.
type Claims struct {
	Subject, Tenant, Issuer string
	Audience                []string
	Roles                   []string
	Expiry, NotBefore       time.Time
	// Extra are more claims, which override the ones above.
	Extra map[string]any
}

// Token signs c with k: issuer Issuer, audience Audience, expiry in an
// hour unless c says otherwise.
func Token(tb testing.TB, k Key, c Claims) string {
	tb.Helper()
	if c.Issuer == "" {
		c.Issuer = Issuer
	}
	if c.Audience == nil {
		c.Audience = []string{Audience}
	}
	if c.Expiry.IsZero() {
		c.Expiry = time.Now().Add(time.Hour)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.Private},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), k.ID))
	if err != nil {
		tb.Fatalf("signer: %v", err)
	}
	std := jwt.Claims{Subject: c.Subject, Issuer: c.Issuer, Audience: c.Audience, Expiry: jwt.NewNumericDate(c.Expiry), IssuedAt: jwt.NewNumericDate(time.Now())}
	if !c.NotBefore.IsZero() {
		std.NotBefore = jwt.NewNumericDate(c.NotBefore)
	}
	extra := map[string]any{}
	if c.Tenant != "" {
		extra["tenant"] = c.Tenant
	}
	if c.Roles != nil {
		extra["roles"] = c.Roles
	}
	for k, v := range c.Extra {
		extra[k] = v
	}
	tok, err := jwt.Signed(sig).Claims(std).Claims(extra).Serialize()
	if err != nil {
		tb.Fatalf("sign token: %v", err)
	}
	return tok
}
