package gateway

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin"
)

// access is what a route does with its tenant.
type access int

const (
	accessRead     access = iota // read the tenant's documents and changes
	accessWrite                  // push events to the tenant
	accessReceipts               // read one client's receipts
	accessAdmin                  // operator endpoints (/metrics)
)

// TokenVerifier checks a login token (a JWT from the app's identity
// provider); *jwtlogin.Verifier is one. Its errors are shown to the
// client.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (jwtlogin.Identity, error)
}

var _ TokenVerifier = (*jwtlogin.Verifier)(nil)

type userKey struct{}

// userOf returns the authenticated user of a request, if auth is on.
func userOf(ctx context.Context) (auth.User, bool) {
	u, ok := ctx.Value(userKey{}).(auth.User)
	return u, ok
}

var (
	errNoCredentials = errors.New("authentication required: HTTP Basic, Bearer base64(user:password), or Bearer <jwt> where login tokens are configured")
	errBadToken      = errors.New("bearer token: want base64 of user:password")
	errNoTokens      = errors.New("bearer token is a JWT, but this server accepts no login tokens")
)

// credentials reads Basic or Bearer credentials from r. A bearer token
// with a '.' (which base64 never has) is a JWT: it is returned as jwt.
func credentials(r *http.Request) (user, password, jwt string, err error) {
	if u, p, ok := r.BasicAuth(); ok {
		return u, p, "", nil
	}
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", "", "", errNoCredentials
	}
	token = strings.TrimSpace(token)
	if strings.Contains(token, ".") {
		return "", "", token, nil
	}
	raw, err := base64.StdEncoding.DecodeString(token)
	if err != nil {
		return "", "", "", errBadToken
	}
	user, password, ok = strings.Cut(string(raw), ":")
	if !ok {
		return "", "", "", errBadToken
	}
	return user, password, "", nil
}

// guard wraps h with authentication and the tenant check of a. Without
// Config.Users and Config.Tokens it returns h unchanged. Password logins
// go through the users' login guard (auth.Users.AuthenticateFrom),
// counted per user and per client IP: a locked login is answered 429 with
// Retry-After, before any password check. A JWT is verified by
// Config.Tokens; its user may not be one the users file lists
// (jwtlogin.CheckName). Every refusal is a 401 saying why.
func (g *Gateway) guard(a access, h http.HandlerFunc) http.HandlerFunc {
	if g.cfg.Users == nil && g.cfg.Tokens == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		u, err := g.authenticate(r)
		var locked *auth.LockedError
		if errors.As(err, &locked) {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(locked.RetryAfter.Seconds()))))
			writeError(w, http.StatusTooManyRequests, err)
			return
		}
		if err == nil {
			if !allowed(u, a, r) {
				writeError(w, http.StatusForbidden, errors.New("forbidden: user "+u.Name+" may not "+verb(a)+" here"))
				return
			}
			h(w, r.WithContext(context.WithValue(r.Context(), userKey{}, u)))
			return
		}
		if g.cfg.Users != nil {
			w.Header().Add("WWW-Authenticate", `Basic realm="ebb", charset="UTF-8"`)
		}
		if g.cfg.Tokens != nil {
			if errors.Is(err, jwtlogin.ErrInvalidToken) || errors.Is(err, jwtlogin.ErrNameTaken) {
				w.Header().Add("WWW-Authenticate", `Bearer realm="ebb", error="invalid_token"`)
			} else {
				w.Header().Add("WWW-Authenticate", `Bearer realm="ebb"`)
			}
		}
		writeError(w, http.StatusUnauthorized, err)
	}
}

// authenticate returns the user r's credentials name.
func (g *Gateway) authenticate(r *http.Request) (auth.User, error) {
	name, password, jwt, err := credentials(r)
	switch {
	case err != nil:
		return auth.User{}, err
	case jwt != "":
		if g.cfg.Tokens == nil {
			return auth.User{}, errNoTokens
		}
		id, err := g.cfg.Tokens.Verify(r.Context(), jwt)
		if err != nil {
			return auth.User{}, fmt.Errorf("login token: %w", err)
		}
		if err := jwtlogin.CheckName(g.cfg.Users, id.User.Name); err != nil {
			return auth.User{}, fmt.Errorf("login token: %w", err)
		}
		return id.User, nil
	case g.cfg.Users == nil:
		return auth.User{}, errors.New("this server has no users file: log in with a token")
	}
	return g.cfg.Users.AuthenticateFrom(r.Context(), r.RemoteAddr, name, password)
}

func allowed(u auth.User, a access, r *http.Request) bool {
	tenant := r.PathValue("tenant")
	switch a {
	case accessRead:
		return u.CanRead(tenant)
	case accessWrite:
		return u.CanWrite(tenant)
	case accessReceipts:
		return u.CanReadReceipts(tenant, r.PathValue("client"))
	}
	return u.Role == auth.RoleAdmin
}

func verb(a access) string {
	switch a {
	case accessRead:
		return "read this tenant"
	case accessWrite:
		return "write to this tenant"
	case accessReceipts:
		return "read these receipts"
	}
	return "use operator endpoints"
}
