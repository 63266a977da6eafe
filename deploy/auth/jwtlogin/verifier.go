package jwtlogin

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/events"
)

// Sentinel errors. Every error of Verify wraps ErrInvalidToken and, where
// one applies, one of the more precise ones. Match them with errors.Is.
var (
	// ErrInvalidToken wraps every reason a token is refused.
	ErrInvalidToken = errors.New("invalid token")
	// ErrMalformed: not a signed JWT in compact form, or an algorithm
	// outside Config.Algorithms.
	ErrMalformed = errors.New("malformed token")
	// ErrUnknownKey: the token's key id is in no key set, even after a
	// refresh of the JWKS.
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrSignature: no key of the set verifies the signature.
	ErrSignature = errors.New("bad signature")
	// ErrExpired: exp is past (beyond the leeway), or missing.
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid: nbf or iat is in the future (beyond the leeway).
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrIssuer: iss is not Config.Issuer.
	ErrIssuer = errors.New("wrong issuer")
	// ErrAudience: aud does not contain Config.Audience.
	ErrAudience = errors.New("wrong audience")
	// ErrClaims: the user or tenant claim is missing, not a string, or not
	// a valid name (events.ValidateName, as in the users file), or the
	// roles hold one a token may not carry (see Config.RolesClaim).
	ErrClaims = errors.New("bad claims")
	// ErrInvalidConfig wraps every problem New finds in a Config.
	ErrInvalidConfig = errors.New("invalid jwt login config")
)

// Defaults of Config.
const (
	DefaultUserClaim    = "sub"
	DefaultTenantClaim  = "tenant"
	DefaultRolesClaim   = "roles"
	DefaultGroupsClaim  = "groups"
	DefaultLeeway       = 30 * time.Second
	DefaultRefresh      = 5 * time.Minute
	DefaultMinRefresh   = 10 * time.Second
	DefaultFetchTimeout = 10 * time.Second
	// FailedRefreshRetry is how soon after a JWKS fetch that failed an
	// unknown key id may cause the next one (MinRefresh if shorter).
	FailedRefreshRetry = time.Second
	maxJWKSBytes       = 1 << 20
	maxTokenBytes      = 16 << 10
)

// DefaultAlgorithms are the signature algorithms accepted when
// Config.Algorithms is empty: the asymmetric ones. HMAC is never accepted
// by default, since a JWKS is public.
var DefaultAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.EdDSA,
}

// Config configures a Verifier. Issuer, Audience and one of JWKSURL or
// PublicKeyFile (or PublicKeys) are required; every other field has a
// working default.
type Config struct {
	// Issuer is the exact "iss" every token must carry.
	Issuer string
	// Audience must be one of the token's "aud" values.
	Audience string
	// JWKSURL is the identity provider's key set (http or https). It is
	// fetched by New (which fails if it cannot be), then every Refresh,
	// and again when a token names a key id the set lacks, at most once
	// per MinRefresh. A refresh that fails keeps the keys already known.
	JWKSURL string
	// PublicKeyFile is a PEM file of one or more public keys (PKIX "PUBLIC
	// KEY" blocks, or certificates), used for every token whatever its
	// key id. It may be combined with JWKSURL.
	PublicKeyFile string
	// PublicKeys are keys given in process (as PublicKeyFile).
	PublicKeys []crypto.PublicKey
	// Leeway is the clock skew allowed on exp, nbf and iat; zero means
	// DefaultLeeway, a negative value none.
	Leeway time.Duration
	// UserClaim, TenantClaim and RolesClaim name the claims mapped to the
	// user name, its tenant and its roles (defaults DefaultUserClaim,
	// DefaultTenantClaim, DefaultRolesClaim). The user and tenant claims
	// must be non-empty strings; the roles claim, if present, a string or
	// a list of strings: "service" among them makes an auth.RoleService,
	// otherwise the user is an auth.RoleClient. "admin" is refused: a
	// token from the app's login never makes an operator.
	UserClaim, TenantClaim, RolesClaim string
	// GroupsClaim names the claim mapped to the user's groups (default
	// DefaultGroupsClaim), which sync rules may name: absent, a string
	// (one group) or a list of strings, each a valid name
	// (events.ValidateName); anything else refuses the token (ErrClaims).
	GroupsClaim string
	// Algorithms are the signature algorithms accepted; empty means
	// DefaultAlgorithms.
	Algorithms []jose.SignatureAlgorithm
	// Refresh is how often the JWKS is fetched again; zero means
	// DefaultRefresh.
	Refresh time.Duration
	// MinRefresh is the least time between two fetches of the JWKS caused
	// by unknown key ids (FailedRefreshRetry after a fetch that failed);
	// zero means DefaultMinRefresh. Such a fetch runs on the Verifier's
	// own context with a timeout of DefaultFetchTimeout, whatever the
	// context of the Verify that caused it.
	MinRefresh time.Duration
	// HTTPClient fetches the JWKS; nil means a client with a timeout of
	// DefaultFetchTimeout. Every fetch after New's is also bounded by
	// DefaultFetchTimeout.
	HTTPClient *http.Client
	// Logger receives refresh failures; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Identity is who a verified token says its bearer is.
type Identity struct {
	// User carries Name, Tenant, Role and Groups (sorted, unique); it
	// has no password and no durables. Its permissions are those of a users-file user of the
	// same name, tenant and role (auth.User.Permissions).
	User auth.User
	// Roles are the token's roles claim as it was.
	Roles []string
	// Expiry is the token's exp.
	Expiry time.Time
}

// Verifier checks JWTs against an identity provider's keys. It is safe for
// concurrent use; Close stops its refresh loop.
type Verifier struct {
	cfg    Config
	static []jose.JSONWebKey
	log    *slog.Logger

	mu        sync.Mutex
	set       []jose.JSONWebKey // from the JWKS
	nextFetch time.Time         // the earliest an unknown key id may cause a fetch
	fetching  *fetchCall        // the fetch in flight; nil if none
	closed    bool              // no fetch starts once set (Close)

	life   context.Context // the refresh loop's and the fetches'; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the refresh loop and the fetches in flight
	once   sync.Once
}

// New validates cfg, loads its keys (fetching the JWKS once) and starts
// the JWKS refresh loop, which runs until Close.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if cfg.Issuer == "" {
		bad("issuer is required")
	}
	if cfg.Audience == "" {
		bad("audience is required")
	}
	if cfg.JWKSURL == "" && cfg.PublicKeyFile == "" && len(cfg.PublicKeys) == 0 {
		bad("a JWKS URL or a public key file is required")
	}
	if cfg.JWKSURL != "" {
		if u, err := url.Parse(cfg.JWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("JWKS URL %q: want an http or https URL", cfg.JWKSURL)
		}
	}
	if cfg.Refresh < 0 || cfg.MinRefresh < 0 {
		bad("refresh intervals must not be negative")
	}
	for _, a := range cfg.Algorithms {
		if strings.HasPrefix(string(a), "HS") || a == "none" {
			bad("algorithm %s: only asymmetric algorithms are accepted", a)
		}
	}
	v := &Verifier{cfg: cfg.withDefaults()}
	v.log = v.cfg.Logger
	for _, k := range cfg.PublicKeys {
		v.static = append(v.static, jose.JSONWebKey{Key: k})
	}
	if cfg.PublicKeyFile != "" {
		keys, err := readPublicKeys(cfg.PublicKeyFile)
		if err != nil {
			bad("%v", err)
		}
		v.static = append(v.static, keys...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if v.cfg.JWKSURL != "" {
		set, err := v.fetch(ctx)
		if err != nil {
			return nil, fmt.Errorf("jwt login: %w", err)
		}
		v.set, v.nextFetch = set, v.cfg.Now().Add(v.cfg.MinRefresh)
		v.life, v.cancel = context.WithCancel(context.Background())
		v.wg.Add(1)
		go v.refreshLoop(v.life)
	}
	return v, nil
}

func (c Config) withDefaults() Config {
	if c.Leeway == 0 {
		c.Leeway = DefaultLeeway
	} else if c.Leeway < 0 {
		c.Leeway = 0
	}
	if c.UserClaim == "" {
		c.UserClaim = DefaultUserClaim
	}
	if c.TenantClaim == "" {
		c.TenantClaim = DefaultTenantClaim
	}
	if c.RolesClaim == "" {
		c.RolesClaim = DefaultRolesClaim
	}
	if c.GroupsClaim == "" {
		c.GroupsClaim = DefaultGroupsClaim
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = DefaultAlgorithms
	}
	if c.Refresh == 0 {
		c.Refresh = DefaultRefresh
	}
	if c.MinRefresh == 0 {
		c.MinRefresh = DefaultMinRefresh
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: DefaultFetchTimeout}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Close stops the refresh loop and any JWKS fetch in flight and waits for
// them. It is safe to call twice.
func (v *Verifier) Close() error {
	v.once.Do(func() {
		v.mu.Lock()
		v.closed = true
		v.mu.Unlock()
		if v.cancel != nil {
			v.cancel()
		}
		v.wg.Wait()
	})
	return nil
}

// Verify checks token (a compact JWS) and returns the identity it
// carries. A key id missing from the JWKS triggers one refresh (at most
// one per Config.MinRefresh for all callers, or FailedRefreshRetry after
// one that failed) before the token is refused with ErrUnknownKey; Verify
// waits for it at most until ctx ends, and the refresh goes on without
// it. Every error wraps ErrInvalidToken.
func (v *Verifier) Verify(ctx context.Context, token string) (Identity, error) {
	id, err := v.verify(ctx, token)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return id, nil
}

func (v *Verifier) verify(ctx context.Context, token string) (Identity, error) {
	if len(token) > maxTokenBytes {
		return Identity{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, maxTokenBytes)
	}
	tok, err := jwt.ParseSigned(token, v.cfg.Algorithms)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(tok.Headers) != 1 {
		return Identity{}, fmt.Errorf("%w: %d signatures", ErrMalformed, len(tok.Headers))
	}
	kid, alg := tok.Headers[0].KeyID, tok.Headers[0].Algorithm
	keys := v.keysFor(kid, alg)
	if len(keys) == 0 && v.cfg.JWKSURL != "" {
		v.refresh(ctx, false)
		keys = v.keysFor(kid, alg)
	}
	if len(keys) == 0 {
		return Identity{}, fmt.Errorf("%w: key id %q", ErrUnknownKey, kid)
	}
	var std jwt.Claims
	var custom map[string]any
	verified := false
	for _, k := range keys {
		if err := tok.Claims(k.Key, &std, &custom); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return Identity{}, fmt.Errorf("%w: key id %q", ErrSignature, kid)
	}
	now := v.cfg.Now()
	if std.Expiry == nil {
		return Identity{}, fmt.Errorf("%w: no exp claim", ErrExpired)
	}
	err = std.ValidateWithLeeway(jwt.Expected{Issuer: v.cfg.Issuer, AnyAudience: jwt.Audience{v.cfg.Audience}, Time: now}, v.cfg.Leeway)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return Identity{}, fmt.Errorf("%w at %s", ErrExpired, std.Expiry.Time().UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return Identity{}, fmt.Errorf("%w: %v", ErrNotYetValid, err)
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return Identity{}, fmt.Errorf("%w: %q", ErrIssuer, std.Issuer)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return Identity{}, fmt.Errorf("%w: %q", ErrAudience, []string(std.Audience))
	case err != nil:
		return Identity{}, fmt.Errorf("%w: %v", ErrClaims, err)
	}
	return v.identity(custom, std.Expiry.Time())
}

// identity maps the claims to an Identity.
func (v *Verifier) identity(claims map[string]any, exp time.Time) (Identity, error) {
	str := func(name string) (string, error) {
		s, ok := claims[name].(string)
		if !ok || s == "" {
			return "", fmt.Errorf("%w: claim %q: want a non-empty string", ErrClaims, name)
		}
		return s, nil
	}
	name, err := str(v.cfg.UserClaim)
	if err != nil {
		return Identity{}, err
	}
	tenant, err := str(v.cfg.TenantClaim)
	if err != nil {
		return Identity{}, err
	}
	// The users file's rules for names: they become subject tokens,
	// account names and client ids.
	if err := events.ValidateName("user claim "+strconv.Quote(v.cfg.UserClaim), name, events.DefaultLimits.MaxNameBytes); err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrClaims, err)
	}
	if err := events.ValidateName("tenant claim "+strconv.Quote(v.cfg.TenantClaim), tenant, events.DefaultLimits.MaxNameBytes); err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrClaims, err)
	}
	if strings.HasPrefix(name, auth.ReservedPrefix) {
		return Identity{}, fmt.Errorf("%w: user %q: names starting with %q are reserved", ErrClaims, name, auth.ReservedPrefix)
	}
	roles, err := claimStrings(claims, v.cfg.RolesClaim)
	if err != nil {
		return Identity{}, err
	}
	groups, err := claimStrings(claims, v.cfg.GroupsClaim)
	if err != nil {
		return Identity{}, err
	}
	for _, g := range groups {
		if err := events.ValidateName("group in claim "+strconv.Quote(v.cfg.GroupsClaim), g, events.DefaultLimits.MaxNameBytes); err != nil {
			return Identity{}, fmt.Errorf("%w: %v", ErrClaims, err)
		}
	}
	slices.Sort(groups)
	groups = slices.Compact(groups)
	role := auth.RoleClient
	switch {
	case slices.Contains(roles, string(auth.RoleAdmin)):
		return Identity{}, fmt.Errorf("%w: role %q is never granted by a token", ErrClaims, auth.RoleAdmin)
	case slices.Contains(roles, string(auth.RoleService)):
		role = auth.RoleService
	}
	return Identity{User: auth.User{Name: name, Tenant: tenant, Role: role, Groups: groups}, Roles: roles, Expiry: exp}, nil
}

// claimStrings reads the claim called name: absent (nil), a string (one
// element) or a list of strings.
func claimStrings(claims map[string]any, name string) ([]string, error) {
	switch r := claims[name].(type) {
	case nil:
		return nil, nil
	case string:
		return []string{r}, nil
	case []any:
		out := make([]string, 0, len(r))
		for _, e := range r {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: claim %q: want strings", ErrClaims, name)
			}
			out = append(out, s)
		}
		if len(out) == 0 {
			return nil, nil
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: claim %q: want a string or a list of strings", ErrClaims, name)
	}
}

// keysFor returns the keys that may have signed a token with kid and alg:
// the static keys, and the JWKS keys of that id (every JWKS key if kid is
// empty) whose algorithm, if stated, is alg and whose use, if stated, is
// "sig".
func (v *Verifier) keysFor(kid, alg string) []jose.JSONWebKey {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []jose.JSONWebKey
	for _, k := range v.set {
		if (kid == "" || k.KeyID == kid) && (k.Algorithm == "" || k.Algorithm == alg) && (k.Use == "" || k.Use == "sig") {
			out = append(out, k)
		}
	}
	return append(out, v.static...)
}

// readPublicKeys reads the public keys of a PEM file.
func readPublicKeys(path string) ([]jose.JSONWebKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key file: %w", err)
	}
	var out []jose.JSONWebKey
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		switch b.Type {
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("public key file %s: %w", path, err)
			}
			out = append(out, jose.JSONWebKey{Key: k})
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("public key file %s: %w", path, err)
			}
			out = append(out, jose.JSONWebKey{Key: c.PublicKey})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("public key file %s: no PUBLIC KEY or CERTIFICATE block", path)
	}
	return out, nil
}
