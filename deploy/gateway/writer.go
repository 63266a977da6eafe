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
	// MaxOpenLogs bounds how many logs are open at once (each holds its
	// file, its publisher's goroutine and a receipts consumer);
	// DefaultMaxOpenLogs if zero. A request of an identity whose log is
	// closed (a write, or a GET of a write), when the bound is reached,
	// first closes the least recently used logs that may be closed (see
	// IdleClose for which); if none may, it is refused with 503 and
	// Retry-After, logged and counted (ebb.gateway.writer.refused), and
	// nothing is written. Logs with
	// writes awaiting their fate found at open are opened beyond the
	// bound.
	MaxOpenLogs int
	// IdleClose is how long a log stays open after its identity's last
	// request; DefaultIdleClose if zero; negative: logs are closed only to
	// keep MaxOpenLogs. A log is closed only with no request in flight and
	// no entry awaiting its fate: never with a write pending (its
	// publisher's work) or published without its receipt (its receipt
	// follower's). A write that failed for good (refused by the server:
	// over max_msg_size, a permission) needs neither and does not keep its
	// log open; it stays in the file and its outcome is read after a
	// reopen. The file stays (see Writer), and the identity's next request
	// reopens it where it was.
	IdleClose time.Duration
}

// Defaults of WriterConfig.
const (
	// DefaultMaxOpenLogs keeps the writer's files well below a process's
	// usual 1024 open files, and its receipts consumers well below
	// RECEIPTS' share of auth.DefaultMaxConsumers.
	DefaultMaxOpenLogs = 256
	// DefaultIdleClose closes a settled log a minute after its last
	// request: a busy identity keeps its log open, an idle one costs a
	// reopen (a file open and a consumer create) on its next request.
	DefaultIdleClose = time.Minute
)

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
	if c.MaxOpenLogs < 0 {
		errs = append(errs, fmt.Errorf("gateway writer config: MaxOpenLogs %d is negative", c.MaxOpenLogs))
	}
	if _, err := c.Publisher.NewBackoff(); err != nil {
		errs = append(errs, fmt.Errorf("gateway writer config: Publisher: %w", err))
	}
	if c.MaxOpenLogs == 0 {
		c.MaxOpenLogs = DefaultMaxOpenLogs
	}
	if c.IdleClose == 0 {
		c.IdleClose = DefaultIdleClose
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
// A log is open only while it has work: OpenWriter opens every log in Dir
// that holds a write pending or published without its receipt (so writes
// acknowledged before a crash are published and settled after it) and
// leaves the others closed, those whose writes are all settled or failed
// for good; a request opens its identity's log; a log idle for
// WriterConfig.IdleClose with no write pending or awaiting its receipt is
// closed, and at most WriterConfig.MaxOpenLogs are
// open at once (pool.go). Reopening resumes exactly where the log was: the
// same file, device, sequence, idempotency records and receipts
// checkpoint. Files are never deleted, however long their identity stays
// away: a new file would be a new device numbered from 1 (harmless to
// the projector's dedupe) but would forget the identity's Idempotency-Key
// records (a retry would write again) and its writes' outcomes (GET of a
// write would be 404), and its marker would refuse it (producer.OpenStore);
// a closed log costs disk only. Close stops them all. A Writer is safe
// for concurrent use.
//
// Opening and closing a log never waits on NATS. An open log's receipt
// follower starts in the background and retries with the publisher's
// backoff (WriterConfig.Publisher) until NATS answers, so a log opens,
// answers reads and takes writes during an outage; a new log's publisher
// waits for the follower's start point (RECEIPTS' last sequence), so no
// receipt of it is missed. A closed log's receipts consumer is deleted in
// the background by a few goroutines the Writer owns, each delete bounded
// by a short timeout (consumerdelete.go); Close waits for those queued at
// most a second and leaves the rest to the server, which expires an
// unused ordered consumer after its inactive threshold (five minutes).
//
// RECEIPTS consumers: each open log holds one, and RECEIPTS' consumer
// limit (auth.Limits.MaxConsumers, auth.DefaultMaxConsumers 4096) is
// shared with users' consumers. With closed logs' consumers deleted, the
// writer holds at most MaxOpenLogs (256 by default) plus those whose
// delete failed and that have not yet expired: under churn while deletes
// fail, at most MaxOpenLogs plus the logs closed within the last five
// minutes. A consumer RECEIPTS refuses (its limit reached) fails no
// request: the log takes and publishes writes, the refusal is logged as
// an error, and the follower retries until a consumer frees; the writes
// settle then, and their requests answer 202 meanwhile.
type Writer struct {
	cfg     WriterConfig
	log     *slog.Logger
	metrics writerMetrics

	mu   sync.Mutex
	logs map[logKey]*writerLog
	busy map[logKey]chan struct{} // logs being opened or closed, closed when done
	// reapCutoff is the idle cutoff of the reaper's last turn: every
	// closable log unused since before it was taken for closing then.
	reapCutoff time.Time
	closed     bool
	ctx        context.Context // the publishers', followers' and reaper's lifetime
	cancel     context.CancelFunc
	wg         sync.WaitGroup // the reaper

	deletes *consumerDeleter // closed logs' receipts consumers
}

type logKey struct{ tenant, client string }

// errWriterClosed is returned by a Writer used after Close.
var errWriterClosed = errors.New("gateway writer closed")

// OpenWriter opens the Writer in cfg.Dir: every log there with a write
// pending or published without its receipt is opened and its publisher and receipt follower
// started; the others stay closed until their identity's next request. A
// log that cannot be opened (damaged, missing while its marker shows it
// was made, wrong key) fails the open: its acknowledged writes would be
// lost otherwise. ctx bounds the open only.
func OpenWriter(ctx context.Context, cfg WriterConfig) (*Writer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open gateway writer: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	w := &Writer{cfg: cfg, log: cfg.Logger.With("component", "gateway.writer"), logs: map[logKey]*writerLog{},
		busy: map[logKey]chan struct{}{}, ctx: runCtx, cancel: cancel}
	var err error
	if w.metrics, err = newWriterMetrics(cfg.MeterProvider, w); err != nil {
		cancel()
		return nil, fmt.Errorf("open gateway writer: %w", err)
	}
	// Room to queue the deletes of every open log's consumer at Close.
	w.deletes = newConsumerDeleter(cfg.JetStream, w.log, cfg.MaxOpenLogs+consumerDeleteWorkers)
	found, err := w.existing()
	if err != nil {
		_ = w.Close()
		return nil, err
	}
	for _, k := range found {
		if err := w.recover(ctx, k); err != nil {
			_ = w.Close()
			return nil, err
		}
	}
	if n := len(w.logs); n > cfg.MaxOpenLogs {
		w.log.Warn("more write logs hold writes awaiting their receipt than MaxOpenLogs: all are open until they settle; new identities are refused meanwhile",
			"open", n, "max_open_logs", cfg.MaxOpenLogs)
	}
	if cfg.IdleClose > 0 {
		w.wg.Add(1)
		go w.reap(runCtx)
	}
	return w, nil
}

// recover opens k's log if it holds an entry pending or published
// without its receipt, which its publisher and follower must carry on;
// another log (every entry settled or failed for good) is only checked
// (opened and closed) and stays closed.
func (w *Writer) recover(ctx context.Context, k logKey) error {
	path := w.path(k)
	lg, err := producer.OpenStore(path, w.logConfig(k), producer.FileOptions{})
	if err != nil {
		return fmt.Errorf("open write log of %s/%s: %w", k.tenant, k.client, err)
	}
	n := awaiting(lg.Counts()) // exact: the counts are read at open
	if err := lg.Close(); err != nil {
		return fmt.Errorf("open write log of %s/%s: %w", k.tenant, k.client, err)
	}
	if n == 0 {
		return nil
	}
	l, err := openWriterLog(ctx, w, k, path)
	if err != nil {
		return fmt.Errorf("open write log of %s/%s: %w", k.tenant, k.client, err)
	}
	l.used = time.Now()
	w.mu.Lock()
	w.logs[k] = l
	w.mu.Unlock()
	return nil
}

// logConfig is the producer.LogConfig of k's log.
func (w *Writer) logConfig(k logKey) producer.LogConfig {
	return producer.LogConfig{Tenant: k.tenant, Client: k.client, Limits: w.cfg.Limits,
		Logger: w.cfg.Logger, TracerProvider: w.cfg.TracerProvider, MeterProvider: w.cfg.MeterProvider, Cipher: w.cfg.Cipher}
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

// made reports whether k has a log file, or the marker of one, in Dir.
func (w *Writer) made(k logKey) bool {
	for _, p := range []string{w.path(k), w.path(k) + producer.MarkerSuffix} {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// mkdirFor makes the directory of the file at path.
func mkdirFor(path string) error { return os.MkdirAll(filepath.Dir(path), 0o700) }

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
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
	w.waitIdle() // no open or close starts once closed is set
	w.mu.Lock()
	logs := w.logs
	w.logs = map[logKey]*writerLog{}
	w.mu.Unlock()
	var errs []error
	for _, l := range logs {
		errs = append(errs, l.close())
	}
	w.deletes.close(closeDeleteWait)
	errs = append(errs, w.metrics.close())
	return errors.Join(errs...)
}

// retryBackoff returns a backoff for retries against NATS, the one the
// logs' publishers use (WriterConfig.Publisher's BackoffInitial,
// BackoffMax and Jitter, or their defaults; OpenWriter refused a config
// that makes none).
func (w *Writer) retryBackoff() *producer.Backoff {
	b, err := w.cfg.Publisher.NewBackoff()
	if err != nil {
		panic(fmt.Sprintf("gateway writer: publisher backoff of a config OpenWriter accepted: %v", err))
	}
	return b
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
