package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/projection"
	"github.com/ebbsync/ebb/projection/rules"
)

// Defaults of Config's zero fields.
const (
	// DefaultHTTPListen is the HTTP listener's address (`ebb serve`'s
	// default too); "127.0.0.1:0" picks a free port, shown by Addr.
	DefaultHTTPListen = "127.0.0.1:8080"
	// DefaultHTTPHeaderTimeout cuts an HTTP client that has not sent its
	// request headers within it (slowloris).
	DefaultHTTPHeaderTimeout = 10 * time.Second
	// DefaultServiceName names the server in OpenTelemetry when
	// OTEL_SERVICE_NAME is not set.
	DefaultServiceName = "ebb"
	// ViewFile is the bbolt view's file in the data directory when
	// Config.View is empty.
	ViewFile = "view.db"
)

// ErrInvalidConfig is wrapped by every error Start returns for a Config
// it refuses before touching anything.
var ErrInvalidConfig = errors.New("invalid server config")

// Config is what one ebb server runs. Its zero value with only Data set
// works: NATS embedded in Data (listening on embedded.DefaultListen), a
// bbolt view in Data, one projector, HTTP on DefaultHTTPListen, no TLS,
// no authentication, no encryption at rest, conflict policy lww.
type Config struct {
	// Data is the data directory, created if missing (mode 0700) and
	// locked for the server's whole life before anything in it is read or
	// written: the embedded JetStream storage (jetstream/), the bbolt view
	// (ViewFile) unless View names another, the gateway's write logs
	// (gateway/) and the key check of KeyFile. Required.
	Data string
	// View is the view store: empty for the bbolt file ViewFile in Data,
	// a bbolt file's path, or a PostgreSQL URL (postgres://... or
	// postgresql://...; documents as JSONB, see projection.OpenPostgres).
	View string

	// NATSURLs are the URLs of an existing NATS JetStream server or
	// cluster to use; empty runs nats-server in process, storing in
	// Data/jetstream.
	NATSURLs []string
	// NATSListen is the embedded server's client listener; empty means
	// embedded.DefaultListen, "127.0.0.1:-1" a free port (see NATSURL).
	NATSListen string
	// Replicas is the replicas asked of the streams (0 to 5): new streams
	// get them, existing ones are raised to them and never lowered; 0 asks
	// for none (new streams get 1, existing ones keep theirs). Above 1
	// needs NATSURLs: the embedded server is a single node.
	Replicas int
	// FsyncInterval is the embedded JetStream's fsync interval; 0 fsyncs
	// every write before acknowledging it.
	FsyncInterval time.Duration

	// Partitions > 0 runs a projection.Group of that many partitions, each
	// applied by the one server holding its lease, so several servers share
	// one PostgreSQL view (above 1 needs View to be PostgreSQL); 0 runs one
	// projection.Projector with no lease.
	Partitions int
	// LeaseTTL is a partition lease's lifetime with Partitions; 0 means
	// projection.DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Policies are the projector's conflict policies; the zero value is
	// lww for every collection.
	Policies projection.Policies
	// Rules, if set, are the sync rules (projection/rules): the projector
	// writes each change's audience and refuses writes they forbid, and
	// the reads of clients are filtered by them. They need Users
	// (authentication): without an identity a write rule judges only what
	// the client claims. With NATSURLs, the external server must run the
	// accounts of Users in filtered reads mode (NATSConfig of
	// Users.WithFilteredReads(true), `ebb nats-config --rules`) on every
	// server of the cluster: Start checks each one's marker and its
	// fingerprint of Users (auth.CheckFilteredReads) and fails without
	// it, and RulesCheckInterval says when it checks again. Leaf nodes
	// cannot be discovered and are not checked: they must carry the same
	// accounts. Whatever the accounts say, the responders then refuse
	// every client's CHANGES read (auth.APIConfig.Rules). A view first projected under other rules (or
	// none) has every live document published again with its audience
	// (projection.StreamMarks.Rules).
	Rules *rules.Set
	// RulesCheckInterval is how often, with Rules and NATSURLs, the
	// server checks every NATS server's accounts again (and after every
	// reconnect); while a check fails the server is not ready, logs an
	// error for each failed check, stops the change feed, refuses HTTP
	// change reads and turns CHANGES's direct get off, until a check
	// passes. 0 means DefaultRulesCheckInterval.
	RulesCheckInterval time.Duration
	// BeforeProject, if set, is called with the open view once the data
	// directory is locked and before the projector starts; an error from
	// it stops the start and Start returns it as it is. ebb serve checks
	// and records its policies here.
	BeforeProject func(ctx context.Context, view projection.Store) error

	// HTTPListen is the HTTP listener's address; empty means
	// DefaultHTTPListen.
	HTTPListen string
	// HTTPHeaderTimeout cuts an HTTP client that has not sent its request
	// headers within it; 0 or less means DefaultHTTPHeaderTimeout.
	HTTPHeaderTimeout time.Duration
	// WriteLogs bounds the gateway's per-identity write logs (document
	// writes over HTTP): MaxOpenLogs and IdleClose of
	// gateway.WriterConfig, whose zero values take its defaults. Dir,
	// connections, cipher and telemetry are the server's.
	WriteLogs WriteLogLimits
	// Gateway holds the HTTP gateway's limits (MaxBody, MaxLongPolls,
	// ...; zero fields take the gateway's defaults). Start sets its
	// wiring itself, over anything given there: JetStream, Writer,
	// History, Ready, Metrics, Users, Tokens, Logger and the telemetry
	// providers.
	Gateway gateway.Config

	// TLS, if set, serves NATS (embedded) and HTTP over TLS with it;
	// embedded.LoadServerTLS builds one from PEM files.
	TLS *tls.Config
	// Users, if set, turns on authentication on NATS and HTTP and
	// confines every user to its tenant (see deploy/auth).
	Users *auth.Users
	// Quotas, with Users, override the users file's publish-rate and
	// tenant-storage quotas field by field (zero fields take the file's,
	// else deploy/auth's defaults). Every publish into EVENTS, over NATS
	// and over HTTP, spends them.
	Quotas auth.Quotas
	// Tokens, if set, also accepts login JWTs on HTTP (the gateway's
	// Bearer tokens); TokenLogin accepts them as NATS logins on the
	// embedded server only (it needs the embedded server's login hook;
	// with NATSURLs token users log in over HTTP, and TokenLogin serves
	// only as the Directory of the users it knows). Both need Users. The
	// server does not close them.
	// With Rules, TokenLogin must be a FilteredLogin reporting true.
	Tokens     gateway.TokenVerifier
	TokenLogin embedded.TokenLogin
	// KeyFile, if set, encrypts the embedded JetStream storage, the
	// bbolt view and the gateway's write logs with keys derived from it
	// (see deploy/keys); it must be the same file on every start. Empty:
	// plaintext, and a data directory once encrypted is refused. Not with
	// NATSURLs: an external server's encryption is its own config's.
	KeyFile string

	// Logger gets the server's logs; nil discards them.
	Logger *slog.Logger
	// ServiceName names the server in OpenTelemetry; empty means
	// DefaultServiceName.
	ServiceName string
	// Getenv reads the OTEL_* variables that configure exporters (see
	// deploy/telemetry); nil means os.Getenv. /metrics is served either way.
	Getenv func(string) string

	// ProjectorReady and GroupReady are the projector's part of
	// readiness (Ready, /readyz): nil means (*projection.Projector).Ready
	// and (*projection.Group).Ready. A backend may wrap them to add or
	// relax a condition.
	ProjectorReady func(*projection.Projector) error
	GroupReady     func(*projection.Group) error
}

// FilteredLogin is a TokenLogin that says whether it gives token users
// filtered reads (their accounts import no CHANGES: they read through the
// server's filtered feed); *jwtlogin.NATSLogin is one. Under Rules a
// TokenLogin must be one, reporting true.
type FilteredLogin interface {
	FilteredReads() bool
}

var _ FilteredLogin = (*jwtlogin.NATSLogin)(nil)

// IsPostgresURL reports whether a View value names a PostgreSQL database
// rather than a bbolt file.
func IsPostgresURL(view string) bool {
	return strings.HasPrefix(view, "postgres://") || strings.HasPrefix(view, "postgresql://")
}

// withDefaults validates c all at once and fills in its zero fields.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.Data == "" {
		errs = append(errs, errors.New("Data (the data directory) is required"))
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("Replicas %d: want 0 to 5", c.Replicas))
	}
	if c.Replicas > 1 && len(c.NATSURLs) == 0 {
		errs = append(errs, fmt.Errorf("Replicas %d needs NATSURLs: the embedded server is a single node", c.Replicas))
	}
	if c.Partitions < 0 || c.Partitions > projection.MaxPartitions {
		errs = append(errs, fmt.Errorf("Partitions %d: want 0 to %d", c.Partitions, projection.MaxPartitions))
	}
	if c.Partitions > 1 && !IsPostgresURL(c.View) {
		errs = append(errs, fmt.Errorf("Partitions %d needs a PostgreSQL View every server shares", c.Partitions))
	}
	if c.LeaseTTL != 0 && (c.LeaseTTL < projection.MinLeaseTTL || c.Partitions == 0) {
		errs = append(errs, fmt.Errorf("LeaseTTL %s: want at least %s, with Partitions", c.LeaseTTL, projection.MinLeaseTTL))
	}
	if c.KeyFile != "" && len(c.NATSURLs) > 0 {
		errs = append(errs, errors.New("KeyFile encrypts the embedded server's JetStream; configure an external server's encryption in its own config"))
	}
	if c.Rules != nil && c.Users == nil {
		errs = append(errs, errors.New("Rules (sync rules) need Users: without authentication there is no user to judge"))
	}
	if c.Rules != nil && c.Users != nil && !c.Users.FilteredReads() {
		errs = append(errs, errors.New("Rules (sync rules) need Users in filtered-reads mode (Users.WithFilteredReads(true), and TokenLogin made from those Users): else a client reads every change of its tenant directly"))
	}
	if fl, ok := c.TokenLogin.(FilteredLogin); c.Rules != nil && c.TokenLogin != nil && (!ok || !fl.FilteredReads()) {
		errs = append(errs, errors.New("Rules (sync rules) need a TokenLogin in filtered-reads mode (jwtlogin.NewNATSLogin with the Users of WithFilteredReads(true)): else token users' accounts read every change of their tenant directly"))
	}
	if (c.Tokens != nil || c.TokenLogin != nil) && c.Users == nil {
		errs = append(errs, errors.New("Tokens and TokenLogin need Users"))
	}
	if c.Users != nil {
		if err := c.Quotas.Or(c.Users.Limits().Quotas()).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("quotas: %w", err))
		}
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	if c.View == "" {
		c.View = filepath.Join(c.Data, ViewFile)
	}
	if c.NATSListen == "" {
		c.NATSListen = embedded.DefaultListen
	}
	if c.HTTPListen == "" {
		c.HTTPListen = DefaultHTTPListen
	}
	if c.HTTPHeaderTimeout <= 0 {
		c.HTTPHeaderTimeout = DefaultHTTPHeaderTimeout
	}
	if c.RulesCheckInterval <= 0 {
		c.RulesCheckInterval = DefaultRulesCheckInterval
	}
	if c.ServiceName == "" {
		c.ServiceName = DefaultServiceName
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ProjectorReady == nil {
		c.ProjectorReady = (*projection.Projector).Ready
	}
	if c.GroupReady == nil {
		c.GroupReady = (*projection.Group).Ready
	}
	return c, nil
}

// WriteLogLimits are the gateway writer's bounds on its open logs (see
// gateway.WriterConfig): at most MaxOpenLogs open at once, each closed
// IdleClose after its identity's last request once it holds nothing
// unsettled (negative: closed only to keep the bound).
type WriteLogLimits struct {
	MaxOpenLogs int
	IdleClose   time.Duration
}
