package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// WriterJetStream is what a Writer needs of a JetStream connection: the
// gateway's reads, and asynchronous publishes for its producer.Publishers.
type WriterJetStream interface {
	JetStream
	producer.JetStream
}

// DefaultWriteClient is the client id of the events a Writer writes for
// requests without an authenticated user (the gateway without Users).
const DefaultWriteClient = "http"

// WriterConfig configures a Writer. Dir and JetStream are required.
type WriterConfig struct {
	// Dir holds the writer's logs, one bbolt file per tenant and client:
	// Dir/<tenant token>/<client token>.db (events.EncodeToken). Created
	// if missing. It must be inside the server's locked data directory.
	Dir string
	// JetStream is where the logs publish and the receipts are read. If it
	// is Metered, its Meter becomes Meter (unless Meter is set) and the
	// logs publish through the JetStream it wraps: each write is charged
	// once, when its request comes, not again when its log publishes it.
	JetStream WriterJetStream
	// Meter, if set, keeps the writing identity's publish rate and its
	// tenant's storage (auth.Meter.Allow): a document write over either
	// is refused (HTTP 429 with Retry-After, or 507) before anything is
	// written into its log, so every write the gateway accepts is one the
	// quotas allowed, and its log publishes it unmetered.
	Meter *auth.Meter
	// Conn, optional, is the connection JetStream runs on (producer.Conn):
	// with it a publish refused for permissions fails for good instead of
	// being retried forever.
	Conn producer.Conn
	// Cipher, if set, encrypts every log at rest (producer.LogConfig.Cipher).
	Cipher *keys.Cipher
	// Limits bound the events written; default events.DefaultLimits.
	Limits         events.Limits
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider // append and publish spans; nil: none
	MeterProvider  metric.MeterProvider // the producer's metrics; nil: none
	// Publisher tunes each log's publisher; its zero value works.
	Publisher producer.PublisherConfig
}

func (c *WriterConfig) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("gateway writer config: Dir is required"))
	}
	if c.JetStream == nil {
		errs = append(errs, errors.New("gateway writer config: JetStream is required"))
	}
	if mj, ok := c.JetStream.(*metered); ok {
		if c.Meter == nil {
			c.Meter = mj.m
		}
		c.JetStream = mj.WriterJetStream
	}
	c.Limits = c.Limits.WithDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// Writer writes documents for HTTP requests (PUT, PATCH and DELETE on
// /v1/{tenant}/docs/...) as events, the way a client's producer does: each
// writing identity (tenant, client) has its own durable producer.Log, so
// the event gets its ULID, HLC and client sequence there and is fsynced
// before the request is answered, and a producer.Publisher drains it to
// EVENTS. A follower of the identity's receipts settles the log and wakes
// the requests waiting for them. Idempotency keys are kept in the log's
// file beside it (see idempotency.go).
//
// OpenWriter opens every log already in Dir and starts its publisher, so
// writes acknowledged before a crash are published after it. Close stops
// them all. A Writer is safe for concurrent use.
type Writer struct {
	cfg WriterConfig
	log *slog.Logger

	mu     sync.Mutex
	logs   map[logKey]*writerLog
	closed bool
	ctx    context.Context // the publishers' and followers' lifetime
	cancel context.CancelFunc
}

type logKey struct{ tenant, client string }

// errWriterClosed is returned by a Writer used after Close.
var errWriterClosed = errors.New("gateway writer closed")

// OpenWriter opens the Writer in cfg.Dir: every log there is opened and
// its publisher and receipt follower started. A log that cannot be opened
// (damaged, missing while its marker shows it was made, wrong key) fails
// the open: its acknowledged writes would be lost otherwise. ctx bounds
// the open only.
func OpenWriter(ctx context.Context, cfg WriterConfig) (*Writer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open gateway writer: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	w := &Writer{cfg: cfg, log: cfg.Logger.With("component", "gateway.writer"), logs: map[logKey]*writerLog{},
		ctx: runCtx, cancel: cancel}
	found, err := w.existing()
	if err != nil {
		cancel()
		return nil, err
	}
	for _, k := range found {
		if _, err := w.open(ctx, k); err != nil {
			_ = w.Close()
			return nil, err
		}
	}
	return w, nil
}

// existing lists the identities that have a log (or a marker of one) in Dir.
func (w *Writer) existing() ([]logKey, error) {
	tenants, err := os.ReadDir(w.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("open gateway writer: %w", err)
	}
	seen := map[logKey]bool{}
	var out []logKey
	for _, td := range tenants {
		if !td.IsDir() {
			continue
		}
		tenant, err := events.DecodeToken(td.Name())
		if err != nil {
			return nil, fmt.Errorf("open gateway writer: %s: not a tenant directory: %w", filepath.Join(w.cfg.Dir, td.Name()), err)
		}
		files, err := os.ReadDir(filepath.Join(w.cfg.Dir, td.Name()))
		if err != nil {
			return nil, fmt.Errorf("open gateway writer: %w", err)
		}
		for _, f := range files {
			name := strings.TrimSuffix(f.Name(), producer.MarkerSuffix)
			tok, ok := strings.CutSuffix(name, ".db")
			if !ok {
				continue
			}
			client, err := events.DecodeToken(tok)
			if err != nil {
				return nil, fmt.Errorf("open gateway writer: %s: not a client log: %w", filepath.Join(w.cfg.Dir, td.Name(), f.Name()), err)
			}
			if k := (logKey{tenant, client}); !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out, nil
}

// path is the log file of k.
func (w *Writer) path(k logKey) string {
	return filepath.Join(w.cfg.Dir, events.EncodeToken(k.tenant), events.EncodeToken(k.client)+".db")
}

// logFor returns the open log of (tenant, client), opening it on first use.
func (w *Writer) logFor(ctx context.Context, tenant, client string) (*writerLog, error) {
	return w.open(ctx, logKey{tenant, client})
}

// opened returns the log of (tenant, client) if it exists (every existing
// log is opened by OpenWriter), or nil.
func (w *Writer) opened(tenant, client string) *writerLog {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.logs[logKey{tenant, client}]
}

func (w *Writer) open(ctx context.Context, k logKey) (*writerLog, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, errWriterClosed
	}
	if l := w.logs[k]; l != nil {
		return l, nil
	}
	path := w.path(k)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open write log of %s/%s: %w", k.tenant, k.client, err)
	}
	l, err := openWriterLog(ctx, w, k, path)
	if err != nil {
		return nil, fmt.Errorf("open write log of %s/%s: %w", k.tenant, k.client, err)
	}
	w.logs[k] = l
	return l, nil
}

// Close stops every publisher and receipt follower and closes the logs.
// Writes in flight stay in their logs and are published on the next open.
// It is safe to call twice.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	logs := w.logs
	w.mu.Unlock()
	w.cancel()
	var errs []error
	for _, l := range logs {
		errs = append(errs, l.close())
	}
	return errors.Join(errs...)
}

// writeOverhead is what an event adds to a document write's fields, as a
// message in EVENTS: its envelope (id, HLC, client, device and sequence,
// base version, op, schema) and headers (Nats-Msg-Id, trace context). An
// estimate: the storage measure counts the real bytes.
const writeOverhead = 384

// admit charges one document write of client (a client id) of tenant to
// the Meter, if there is one: a refusal is its *auth.QuotaError, and
// nothing is charged. body is the request's fields as sent.
func (w *Writer) admit(tenant, client, coll, doc string, body []byte) error {
	if w.cfg.Meter == nil {
		return nil
	}
	size := len(events.EventSubject(tenant, client, coll, doc)) + len(coll) + len(doc) + len(body) + writeOverhead
	return w.cfg.Meter.Allow(tenant, client, size)
}

// defaultWait is how long a write waits for its receipt by default.
const defaultWait = 5 * time.Second
