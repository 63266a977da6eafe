package gateway

import (
	"context"
	"encoding/base64"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/ebbsync/ebb/deploy/auth"
)

// access is what a route does with its tenant.
type access int

const (
	accessRead     access = iota // read the tenant's documents and changes
	accessWrite                  // push events to the tenant
	accessReceipts               // read one client's receipts
	accessAdmin                  // operator endpoints (/metrics)
)

type userKey struct{}

// userOf returns the authenticated user of a request, if auth is on.
func userOf(ctx context.Context) (auth.User, bool) {
	u, ok := ctx.Value(userKey{}).(auth.User)
	return u, ok
}

var (
	errNoCredentials = errors.New("authentication required: HTTP Basic, or Bearer base64(user:password)")
	errBadToken      = errors.New("bearer token: want base64 of user:password")
)

// credentials reads Basic or Bearer credentials from r.
func credentials(r *http.Request) (user, password string, err error) {
	if u, p, ok := r.BasicAuth(); ok {
		return u, p, nil
	}
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", "", errNoCredentials
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(token))
	if err != nil {
		return "", "", errBadToken
	}
	user, password, ok = strings.Cut(string(raw), ":")
	if !ok {
		return "", "", errBadToken
	}
	return user, password, nil
}

// guard wraps h with authentication and the tenant check of a. Without
// Config.Users it returns h unchanged. Logins go through the users' login
// guard (auth.Users.AuthenticateFrom), counted per user and per client
// IP: a locked login is answered 429 with Retry-After, before any
// password check.
func (g *Gateway) guard(a access, h http.HandlerFunc) http.HandlerFunc {
	if g.cfg.Users == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		name, password, err := credentials(r)
		if err == nil {
			var u auth.User
			u, err = g.cfg.Users.AuthenticateFrom(r.Context(), r.RemoteAddr, name, password)
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
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="ebb", charset="UTF-8"`)
		writeError(w, http.StatusUnauthorized, err)
	}
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
