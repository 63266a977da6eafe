package console

import (
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/projection"
)

//go:embed assets
var assets embed.FS

// Prefix is where the console is mounted: New's handler answers paths
// under it and nothing else.
const Prefix = "/ui"

// ClientPath is the stable path of the browser client module.
const ClientPath = Prefix + "/ebb-client.js"

// Defaults applied to zero Config fields.
const (
	DefaultMaxScan = 10000
	DefaultTimeout = 10 * time.Second
	DefaultPage    = 50
	maxPage        = 1000
	// lagSamples is how many projector lag samples /ui/api/streams keeps
	// for the plot (one per call, at most one a second).
	lagSamples = 300
)

// JetStream is what the console reads of JetStream: stream info and
// messages by sequence.
type JetStream interface {
	Stream(ctx context.Context, stream string) (jetstream.Stream, error)
}

// Config configures the console. JetStream and Store are required.
type Config struct {
	JetStream JetStream
	// Store is the server view; the console only reads it.
	Store projection.Store
	// Users turns authentication on (the gateway's users); nil: open.
	Users *auth.Users
	// TraceURL links a trace id to the tracing UI: "{trace}" in it is
	// replaced by the id (e.g. http://localhost:16686/trace/{trace}).
	// Empty: the id is shown without a link.
	TraceURL string
	// MaxScan bounds the messages of RECEIPTS, DEAD or EVENTS one request
	// reads; default DefaultMaxScan.
	MaxScan int
	// Timeout bounds the JetStream and store calls of one request;
	// default DefaultTimeout.
	Timeout time.Duration
	Logger  *slog.Logger // nil: discard
	// Filtered says sync rules decide what each client user may read
	// (the server filters its reads): the console, which shows whole
	// tenants, then refuses client users on every route but "me" (admins
	// and services keep it).
	Filtered bool
}

func (c *Config) validate() error {
	var errs []error
	if c.JetStream == nil {
		errs = append(errs, errors.New("console: JetStream is required"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("console: Store is required"))
	}
	if c.MaxScan < 0 {
		errs = append(errs, fmt.Errorf("console: MaxScan %d is negative", c.MaxScan))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("console: Timeout %s is negative", c.Timeout))
	}
	return errors.Join(errs...)
}

// Console serves the console's pages, assets and JSON API under Prefix.
type Console struct {
	cfg Config
	mux *http.ServeMux

	mu  sync.Mutex
	lag []lagSample
}

type lagSample struct {
	At  time.Time `json:"at"`
	Lag uint64    `json:"lag"`
}

// New returns the console handler. Mount it on Prefix+"/" (it also
// redirects Prefix to Prefix+"/").
func New(cfg Config) (*Console, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxScan == 0 {
		cfg.MaxScan = DefaultMaxScan
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Console{cfg: cfg, mux: http.NewServeMux()}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, fmt.Errorf("console assets: %w", err)
	}
	files := http.StripPrefix(Prefix+"/", http.FileServerFS(static))
	c.mux.Handle("GET "+Prefix+"/", files)
	c.mux.HandleFunc("GET "+Prefix, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"/", http.StatusMovedPermanently)
	})
	api := func(path string, h func(w http.ResponseWriter, r *http.Request, u viewer) (any, error)) {
		if cfg.Filtered && path != "me" {
			h = wholeTenant(h)
		}
		c.mux.HandleFunc("GET "+Prefix+"/api/"+path, c.guard(h))
	}
	api("me", c.me)
	api("docs", c.docs)
	api("doc", c.doc)
	api("conflicts", c.conflicts)
	api("dead", c.dead)
	api("rejections", c.rejections)
	api("streams", c.streams)
	api("journey", c.journey)
	c.mux.HandleFunc("GET "+Prefix+"/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, errors.New("no such console route: "+r.URL.Path))
	})
	return c, nil
}

// wholeTenant refuses client users a route that shows a whole tenant,
// under sync rules (Config.Filtered).
func wholeTenant(h func(w http.ResponseWriter, r *http.Request, u viewer) (any, error)) func(w http.ResponseWriter, r *http.Request, u viewer) (any, error) {
	return func(w http.ResponseWriter, r *http.Request, v viewer) (any, error) {
		if v.role == string(auth.RoleClient) {
			return nil, status(http.StatusForbidden, "forbidden: sync rules decide what user %s may read, and the console shows whole tenants (admins and services only); read through the gateway", v.name)
		}
		return h(w, r, v)
	}
}

// ServeHTTP serves the console.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if strings.HasPrefix(r.URL.Path, Prefix+"/api/") {
		w.Header().Set("Cache-Control", "no-store")
	}
	c.mux.ServeHTTP(w, r)
}

// viewer is who asks: all (no auth, or an admin), or one tenant.
type viewer struct {
	name   string
	tenant string // "" with all
	all    bool
	role   string
}

// may reports whether v may see tenant.
func (v viewer) may(tenant string) bool { return v.all || tenant == v.tenant }

// httpError is an error with its HTTP status.
type httpError struct {
	status int
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func status(code int, format string, args ...any) error {
	return &httpError{code, fmt.Errorf(format, args...)}
}

// guard authenticates (under auth), runs h with the request's deadline and
// writes its answer or error as JSON.
func (c *Console) guard(h func(w http.ResponseWriter, r *http.Request, u viewer) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := viewer{name: "", all: true, role: "open"}
		if c.cfg.Users != nil {
			name, password, err := credentials(r)
			if err != nil {
				writeError(w, http.StatusUnauthorized, err)
				return
			}
			u, err := c.cfg.Users.AuthenticateFrom(r.Context(), r.RemoteAddr, name, password)
			var locked *auth.LockedError
			if errors.As(err, &locked) {
				w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(locked.RetryAfter.Seconds()))))
				writeError(w, http.StatusTooManyRequests, err)
				return
			}
			if err != nil {
				writeError(w, http.StatusUnauthorized, err)
				return
			}
			v = viewer{name: u.Name, tenant: u.Tenant, all: u.Role == auth.RoleAdmin, role: string(u.Role)}
		}
		ctx, cancel := context.WithTimeout(r.Context(), c.cfg.Timeout)
		defer cancel()
		out, err := h(w, r.WithContext(ctx), v)
		if err != nil {
			var he *httpError
			if errors.As(err, &he) {
				writeError(w, he.status, err)
				return
			}
			c.cfg.Logger.Error("console request failed", "path", r.URL.Path, "error", err)
			writeError(w, http.StatusServiceUnavailable, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

var errNoCredentials = errors.New("authentication required: HTTP Basic, or Bearer base64(user:password)")

// credentials reads Basic or Bearer credentials as the gateway does
// (events/PROTOCOL.md, Authentication).
func credentials(r *http.Request) (user, password string, err error) {
	if u, p, ok := r.BasicAuth(); ok {
		return u, p, nil
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", "", errNoCredentials
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(token))
	if err != nil {
		return "", "", errors.New("bearer token: want base64 of user:password")
	}
	user, password, ok = strings.Cut(string(raw), ":")
	if !ok {
		return "", "", errors.New("bearer token: want base64 of user:password")
	}
	return user, password, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// tenantParam returns the tenant query parameter, required, and checks v
// may see it.
func tenantParam(r *http.Request, v viewer) (string, error) {
	t := r.URL.Query().Get("tenant")
	if t == "" && !v.all {
		t = v.tenant
	}
	if t == "" {
		return "", status(http.StatusBadRequest, "query parameter tenant is required")
	}
	if !v.may(t) {
		return "", status(http.StatusForbidden, "forbidden: user %s may not read tenant %q", v.name, t)
	}
	return t, nil
}

func intParam(r *http.Request, name string, def, max int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, status(http.StatusBadRequest, "query parameter %s: want a positive integer, have %q", name, s)
	}
	return min(n, max), nil
}
