package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/feed"
	"github.com/ebbsync/ebb/events"
)

// JetStream is what the gateway needs of a JetStream connection.
type JetStream interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
	OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error)
}

// Defaults of Config's long-poll caps.
const (
	// DefaultMaxLongPolls bounds the ordered consumers long-polls hold on
	// the NATS server at once.
	DefaultMaxLongPolls = 1024
	// DefaultMaxLongPollsPerUser leaves room for a user's few devices,
	// each waiting on its changes and its receipts.
	DefaultMaxLongPollsPerUser = 16
)

// Config configures a Gateway. Zero fields take the defaults noted.
type Config struct {
	JetStream JetStream     // required
	Limits    events.Limits // event limits; default events.DefaultLimits
	MaxBatch  int           // events in one push; default 1000
	MaxBody   int64         // bytes in one request body, any route; default 8 MiB; over it: 413
	MaxPage   int           // changes or receipts in one pull; default 1000
	MaxWait   time.Duration // longest long-poll; default 60s
	Timeout   time.Duration // JetStream calls per request; default 10s
	// MaxLongPolls caps the long-polls (pulls with wait > 0) served at
	// once, over all users; default DefaultMaxLongPolls. One more is
	// answered 429 at once.
	MaxLongPolls int
	// MaxLongPollsPerUser caps one user's long-polls served at once (the
	// authenticated user; without Users, the remote address); default
	// DefaultMaxLongPollsPerUser.
	MaxLongPollsPerUser int
	// Ready reports readiness beyond stream presence; nil = none. Its
	// error is /readyz's cause; a joined error (errors.Join) lists each
	// cause on its own.
	Ready   func(ctx context.Context) error
	Metrics func(w http.ResponseWriter, r *http.Request) // /metrics handler; nil = 404
	// Users, if set, turns on authentication (HTTP Basic, or Bearer
	// base64(user:password)): /v1/{tenant}/... answers 401 without valid
	// credentials and 403 outside the user's tenant or role; /metrics is
	// for admins; /healthz and /readyz stay open (they show no data).
	Users *auth.Users
	// Tokens, if set, also turns on authentication and accepts
	// "Authorization: Bearer <jwt>" from the app's login (see auth.go);
	// a token's user has the permissions of a Users user of the same
	// tenant and role.
	Tokens TokenVerifier
	// Writer, if set, serves document writes: PUT, PATCH and DELETE on
	// /v1/{tenant}/docs/{collection}/{id} and GET /v1/{tenant}/writes/{event}
	// (see write.go and events/PROTOCOL.md). Nil: they answer 501. The
	// gateway does not close it.
	Writer *Writer
	// History, if set, serves GET /v1/{tenant}/docs/{collection}/{id}/history:
	// the document's conflict records, open, resolved and overwritten (the
	// states lww and merge overwrote). Nil: 501.
	History History
	// WriteWait bounds how long a document write waits for its receipt
	// before it answers 202 with the event to poll; default 5s.
	WriteWait time.Duration
	Logger    *slog.Logger
	// TracerProvider traces pushes (span ebb.gateway.push, continuing the
	// request's traceparent); the pushed events carry its context. Nil
	// means no spans: the events carry the request's trace context as is.
	TracerProvider trace.TracerProvider
	// Propagator reads trace context from requests and writes it into
	// event headers; nil means W3C trace context and baggage.
	Propagator propagation.TextMapPropagator
	// Visibility, if set, turns sync rules on (see visibility.go): a user
	// of role client pulls only the changes it may read (a Left notice
	// for a document that left its view), and reads, lists and the
	// history of documents it may not read answer as if they did not
	// exist (404, left out). Services and admins read the whole tenant.
	// It needs authentication (Users or Tokens): without, there is no
	// user to filter for.
	Visibility Visibility
	// Groups returns the groups of an authenticated user, the principals
	// its reads are filtered by and the writer groups stamped on its
	// events (events.HeaderWriterGroups); nil: none. It stands in until
	// auth.User carries its groups.
	Groups func(u auth.User) []string
	// MeterProvider, if set, gets the counter ebb.gateway.skipped
	// (attributes stream, reason): messages not served because they were
	// unreadable or did not match their subject.
	MeterProvider metric.MeterProvider
}

func (c *Config) validate() error {
	var errs []error
	if c.JetStream == nil {
		errs = append(errs, errors.New("gateway config: JetStream is required"))
	}
	if c.MaxBatch < 0 || c.MaxBody < 0 || c.MaxPage < 0 || c.MaxWait < 0 || c.Timeout < 0 || c.MaxLongPolls < 0 || c.MaxLongPollsPerUser < 0 || c.WriteWait < 0 {
		errs = append(errs, errors.New("gateway config: limits must not be negative"))
	}
	if c.Visibility != nil && c.Users == nil && c.Tokens == nil {
		errs = append(errs, errors.New("gateway config: Visibility (sync rules) needs authentication: set Users or Tokens"))
	}
	c.Limits = c.Limits.WithDefaults()
	if c.MaxBatch == 0 {
		c.MaxBatch = 1000
	}
	if c.MaxBody == 0 {
		c.MaxBody = 8 << 20
	}
	if c.MaxPage == 0 {
		c.MaxPage = 1000
	}
	if c.MaxWait == 0 {
		c.MaxWait = 60 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MaxLongPolls == 0 {
		c.MaxLongPolls = DefaultMaxLongPolls
	}
	if c.MaxLongPollsPerUser == 0 {
		c.MaxLongPollsPerUser = DefaultMaxLongPollsPerUser
	}
	if c.WriteWait == 0 {
		c.WriteWait = defaultWait
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// Gateway serves ebb's HTTP API. It is an http.Handler.
type Gateway struct {
	cfg         Config
	mux         *http.ServeMux
	log         *slog.Logger
	skips       atomic.Uint64
	skipCounter metric.Int64Counter // nil without Config.MeterProvider
	longPolls   *feed.LongPolls
	src         *feed.Source // reads pages of CHANGES and RECEIPTS
}

// New returns a Gateway for cfg.
func New(cfg Config) (*Gateway, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger.With("component", "gateway"),
		longPolls: feed.NewLongPolls(cfg.MaxLongPolls, cfg.MaxLongPollsPerUser)}
	g.src = &feed.Source{JetStream: cfg.JetStream, Timeout: cfg.Timeout, Skipped: g.skipped}
	if cfg.MeterProvider != nil {
		var err error
		g.skipCounter, err = cfg.MeterProvider.Meter("github.com/ebbsync/ebb/deploy/gateway").Int64Counter("ebb.gateway.skipped",
			metric.WithDescription("messages the gateway did not serve: unreadable, or not matching their subject"))
		if err != nil {
			return nil, fmt.Errorf("gateway: metrics: %w", err)
		}
	}
	g.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	g.mux.HandleFunc("GET /readyz", g.readyz)
	if cfg.Metrics != nil {
		g.mux.HandleFunc("GET /metrics", g.guard(accessAdmin, cfg.Metrics))
	}
	g.mux.HandleFunc("POST /v1/{tenant}/events", g.guard(accessWrite, g.pushEvents))
	g.mux.HandleFunc("GET /v1/{tenant}/changes", g.guard(accessRead, g.pullChanges))
	g.mux.HandleFunc("GET /v1/{tenant}/receipts/{client}", g.guard(accessReceipts, g.pullReceipts))
	g.mux.HandleFunc("GET /v1/{tenant}/docs/{collection}", g.guard(accessRead, g.listDocs))
	g.mux.HandleFunc("GET /v1/{tenant}/docs/{collection}/{id}", g.guard(accessRead, g.getDoc))
	g.mux.HandleFunc("GET /v1/{tenant}/conflicts", g.guard(accessRead, g.conflicts))
	g.mux.HandleFunc("GET /v1/{tenant}/docs/{collection}/{id}/history", g.guard(accessRead, g.history))
	// Document writes: any user who may read the tenant (a client or a
	// service of it, an admin) writes as itself; writeIdentity decides.
	for _, m := range []string{http.MethodPut, http.MethodPatch, http.MethodDelete} {
		g.mux.HandleFunc(m+" /v1/{tenant}/docs/{collection}/{id}", g.guard(accessRead, g.writeDoc))
	}
	g.mux.HandleFunc("GET /v1/{tenant}/writes/{event}", g.guard(accessRead, g.getWrite))
	return g, nil
}

// ServeHTTP implements http.Handler. Every error answer is a JSON apiError,
// the router's own too (no route: 404, wrong method: 405 with Allow).
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > g.cfg.MaxBody {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", g.cfg.MaxBody))
		return
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, g.cfg.MaxBody)
	}
	if _, pattern := g.mux.Handler(r); pattern == "" {
		// No route matched: the mux answers 404 or 405 in plain text.
		w = &jsonErrorWriter{ResponseWriter: w}
	}
	g.mux.ServeHTTP(w, r)
}

// jsonErrorWriter turns the plain-text error answers of http.ServeMux into
// JSON ones, keeping their status and headers (such as Allow).
type jsonErrorWriter struct {
	http.ResponseWriter
	rewrote bool
}

func (j *jsonErrorWriter) WriteHeader(status int) {
	if status < 400 {
		j.ResponseWriter.WriteHeader(status)
		return
	}
	j.rewrote = true
	h := j.Header()
	h.Del("Content-Length")
	h.Del("X-Content-Type-Options")
	msg := strings.ToLower(http.StatusText(status))
	if status == http.StatusNotFound {
		msg = "no such route: " + msg + " (percent-encode '/' and other reserved characters inside a path segment)"
	}
	writeJSON(j.ResponseWriter, status, apiError{Error: msg})
}

func (j *jsonErrorWriter) Write(b []byte) (int, error) {
	if j.rewrote {
		return len(b), nil // the plain-text body, replaced
	}
	return j.ResponseWriter.Write(b)
}

// apiError is the JSON body of every error response.
type apiError struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	body := apiError{Error: err.Error()}
	var fe *events.FieldError
	if errors.As(err, &fe) {
		body.Field = fe.Field
	}
	writeJSON(w, status, body)
}

// badRequest marks a client error (400).
type badRequest struct{ err error }

func (b badRequest) Error() string { return b.err.Error() }
func (b badRequest) Unwrap() error { return b.err }

func bad(format string, args ...any) error { return badRequest{fmt.Errorf(format, args...)} }

// fail writes err with 400 for client errors, 404 for missing documents,
// 429 over a long-poll cap, 503 when NATS cannot answer, and 500 otherwise.
func (g *Gateway) fail(w http.ResponseWriter, r *http.Request, err error) {
	var br badRequest
	switch {
	case errors.As(err, &br), errors.Is(err, events.ErrInvalid), errors.Is(err, events.ErrUnknownSchema), errors.Is(err, feed.ErrBadRequest):
		writeError(w, http.StatusBadRequest, err)
	case errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, errTooManyLongPolls):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, err)
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, jetstream.ErrNoStreamResponse):
		g.log.Warn("request failed: nats unavailable", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusServiceUnavailable, err)
	default:
		g.log.Error("request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, err)
	}
}

var errNotFound = errors.New("not found")

// readiness is /readyz's body: "ready", or "not ready" with every cause.
type readiness struct {
	Status string   `json:"status"`
	Error  string   `json:"error,omitempty"`  // the causes in one line
	Causes []string `json:"causes,omitempty"` // each cause on its own
}

// readyz answers 200 when every stream is present and Config.Ready is
// content, else 503 naming each cause: every missing stream, and every
// error Config.Ready joined.
func (g *Gateway) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.Timeout)
	defer cancel()
	var causes []string
	for _, name := range []string{events.StreamEvents, events.StreamChanges, events.StreamReceipts, events.StreamDead} {
		if _, err := g.cfg.JetStream.Stream(ctx, name); err != nil {
			causes = append(causes, fmt.Sprintf("stream %s: %v", name, err))
		}
	}
	if g.cfg.Ready != nil {
		causes = append(causes, errorCauses(g.cfg.Ready(ctx))...)
	}
	if len(causes) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, readiness{Status: "not ready", Error: strings.Join(causes, "; "), Causes: causes})
		return
	}
	writeJSON(w, http.StatusOK, readiness{Status: "ready"})
}

// errorCauses splits an errors.Join tree into its leaves' messages; nil
// has none. An error that wraps several but says more than their joined
// messages (fmt.Errorf with two %w) is one cause.
func errorCauses(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out, msgs []string
		for _, e := range j.Unwrap() {
			if e != nil {
				msgs = append(msgs, e.Error())
				out = append(out, errorCauses(e)...)
			}
		}
		if strings.Join(msgs, "\n") == err.Error() {
			return out
		}
	}
	return []string{err.Error()}
}

// tenant reads and validates the {tenant} path value.
func (g *Gateway) tenant(r *http.Request) (string, error) {
	t := r.PathValue("tenant")
	if err := events.ValidateName("tenant", t, g.cfg.Limits.MaxNameBytes); err != nil {
		return "", err
	}
	return t, nil
}

// uintParam reads an optional unsigned query parameter.
func uintParam(r *http.Request, name string, def uint64) (uint64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, bad("query parameter %s=%q: want a non-negative integer", name, s)
	}
	return v, nil
}
