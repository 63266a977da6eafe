package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/deploy/server"
	"github.com/ebbsync/ebb/deploy/telemetry"
	"github.com/ebbsync/ebb/projection"
	"github.com/ebbsync/ebb/projection/rules"
)

// serveConfig is what `ebb serve` was asked to do, from the layered
// serveFile (config.go).
type serveConfig struct {
	data       string
	viewPath   string // the bbolt view
	natsListen string
	httpListen string
	natsURL    string // comma-separated; empty: the embedded server
	// replicas is the stream replicas asked for; 0 asks for none (new
	// streams get 1, existing ones keep theirs).
	replicas int
	// partitions > 0 runs a projection.Group of that many partitions,
	// with leases of leaseTTL (0: the default); 0 runs one Projector.
	partitions int
	leaseTTL   time.Duration
	syncEvery  time.Duration
	// headerTimeout cuts an HTTP client that has not sent its request
	// headers within it (slowloris).
	headerTimeout time.Duration
	// writeLogs bounds the gateway's per-identity write logs.
	writeLogs server.WriteLogLimits
	// gateway holds the HTTP gateway's limits; the server (deploy/server)
	// fills in the rest.
	gateway gateway.Config
	// quotas override the users file's publish and storage quotas.
	quotas   auth.Quotas
	policies policyConfig
	// recordedPolicies: no policy was configured, so c.policies are those
	// recorded in the data directory.
	recordedPolicies bool
	// rulesPath is the --rules file; rules and rulesSrc what serve loaded
	// from it (nil: no rules).
	rulesPath string
	rules     *rules.Set
	rulesSrc  []byte
	logs      logFlags
	sec       securityFlags
	telemetry telemetryConfig
}

// securityFlags are serve's TLS, authentication and encryption settings.
type securityFlags struct {
	tlsCert     string
	tlsKey      string
	tlsClientCA string
	authFile    string
	keyFile     string
	jwt         jwtConfig
}

// serveMeta are serve's flags that are not configuration.
type serveMeta struct {
	config      string
	printConfig bool
	json        bool
}

// registerServeFlags binds serve's flags to c, pol (the --policy flags)
// and meta. The flag defaults shown in help are c's values.
func registerServeFlags(fs *flag.FlagSet, c *serveFile, pol policyFlags, meta *serveMeta) {
	fs.StringVar(&meta.config, "config", meta.config, "YAML config file; flags and EBB_SERVE_* variables override it (env EBB_CONFIG)")
	fs.BoolVar(&meta.printConfig, "print-config", false, "print the effective configuration (passwords redacted) and exit")
	fs.BoolVar(&meta.json, "json", false, "with --print-config: print JSON instead of YAML")
	fs.StringVar(&c.Data, "data", c.Data, "data directory (JetStream storage, the view, recorded policies)")
	fs.Func("view", "the view: a bbolt file (default view.db in --data) or a PostgreSQL URL postgres://...", func(v string) error {
		if server.IsPostgresURL(v) {
			c.View.PostgresURL, c.View.Path = v, ""
		} else {
			c.View.Path, c.View.PostgresURL = v, ""
		}
		return nil
	})
	fs.StringVar(&c.Listen.NATS, "nats-listen", c.Listen.NATS, "address of the embedded NATS server's client listener")
	fs.StringVar(&c.Listen.HTTP, "http-listen", c.Listen.HTTP, "address of the HTTP listener (health, metrics, gateway)")
	fs.Var((*urlList)(&c.NATS.URLs), "nats", "use this existing NATS JetStream server or cluster (comma-separated URLs) instead of the embedded one")
	fs.IntVar(&c.NATS.Replicas, "replicas", c.NATS.Replicas, "replicas of each stream (3 on a 3-node cluster): new streams get them, existing ones are raised to them, never lowered; 0 creates R1 and keeps existing streams' replicas")
	fs.IntVar(&c.Projector.Partitions, "partitions", c.Projector.Partitions, "split the projector in this many partitions, each applied by the one server holding its lease, so several ebb serve share one PostgreSQL view (same number on every server); 0: one projector, no lease")
	fs.Var((*durationFlag)(&c.Projector.LeaseTTL), "lease-ttl", "with --partitions: how long a partition's lease lives unrenewed (takeover after a server dies takes about this and a quarter); 0 means 3s")
	fs.Var((*durationFlag)(&c.NATS.FsyncInterval), "fsync-interval", "embedded JetStream fsync interval; 0 fsyncs every write before acking")
	fs.Var((*durationFlag)(&c.Limits.HTTPHeaderTimeout), "http-header-timeout", "cut an HTTP client that has not sent its request headers within this long")
	fs.Int64Var(&c.Limits.HTTPMaxBody, "http-max-body", c.Limits.HTTPMaxBody, "largest HTTP request body in bytes; larger ones are answered 413")
	fs.IntVar(&c.Limits.HTTPMaxLongPolls, "http-max-long-polls", c.Limits.HTTPMaxLongPolls, "long-polls served at once in all; more are answered 429")
	fs.IntVar(&c.Limits.HTTPMaxWriteLogs, "http-max-write-logs", c.Limits.HTTPMaxWriteLogs, "document writers' logs (one per HTTP identity) open at once; beyond it idle settled ones close, least recently used first")
	fs.Var((*durationFlag)(&c.Limits.HTTPWriteLogIdle), "http-write-log-idle", "close an HTTP identity's write log this long after its last request, once it holds nothing unsettled; negative: only to keep --http-max-write-logs")
	fs.IntVar(&c.Limits.HTTPMaxLongPollsPerUser, "http-max-long-polls-per-user", c.Limits.HTTPMaxLongPollsPerUser, "long-polls served at once per user (per remote address without --auth); more are answered 429")
	fs.Float64Var(&c.Limits.PublishEventsPerSecond, "publish-rate", c.Limits.PublishEventsPerSecond, "with --auth: events per second one user may publish (NATS and HTTP); 0: the users file's limit, else 500")
	fs.Int64Var(&c.Limits.PublishBytesPerSecond, "publish-bytes-rate", c.Limits.PublishBytesPerSecond, "with --auth: event bytes per second one user may publish; 0: the users file's limit, else 4 MiB")
	fs.Int64Var(&c.Limits.TenantStorageBytes, "tenant-storage", c.Limits.TenantStorageBytes, "with --auth: bytes one tenant may keep in EVENTS, CHANGES and DEAD; 0: the users file's limit, else 1 GiB")
	fs.Var(pol, "policy", "conflict policy of one collection, COLLECTION=POLICY (lww, merge, reject, manual); repeatable")
	fs.StringVar(&c.Policies.Default, "default-policy", c.Policies.Default, "conflict policy of every other collection (default: the recorded one on a built view, else lww)")
	fs.StringVar(&c.Log.Format, "log-format", c.Log.Format, "log format: text, json, or auto (text on a terminal, JSON otherwise)")
	fs.StringVar(&c.Log.Level, "log-level", c.Log.Level, "log level: debug, info, warn, error")
	fs.StringVar(&c.TLS.Cert, "tls-cert", c.TLS.Cert, "PEM certificate: serve NATS and HTTP over TLS")
	fs.StringVar(&c.TLS.Key, "tls-key", c.TLS.Key, "PEM key of --tls-cert")
	fs.StringVar(&c.TLS.ClientCA, "tls-client-ca", c.TLS.ClientCA, "PEM CA file: require and verify client certificates signed by it")
	fs.StringVar(&c.Auth.File, "auth", c.Auth.File, "YAML users file: require credentials, confine each user to its tenant (see deploy/auth)")
	fs.StringVar(&c.Rules, "rules", c.Rules, "YAML sync rules file: which users read and write each document (see projection/rules); needs --auth, and with --nats a NATS server configured by 'ebb nats-config --rules'")
	fs.StringVar(&c.Auth.JWT.Issuer, "jwt-issuer", c.Auth.JWT.Issuer, "accept login JWTs from the identity provider with this issuer (iss), over HTTP and NATS; needs --auth")
	fs.StringVar(&c.Auth.JWT.Audience, "jwt-audience", c.Auth.JWT.Audience, "audience (aud) every login JWT must carry")
	fs.StringVar(&c.Auth.JWT.JWKSURL, "jwt-jwks-url", c.Auth.JWT.JWKSURL, "the identity provider's JWKS URL (refreshed; a rotation needs no restart)")
	fs.StringVar(&c.Auth.JWT.PublicKeyFile, "jwt-public-key", c.Auth.JWT.PublicKeyFile, "PEM public key verifying login JWTs (instead of, or beside, --jwt-jwks-url)")
	fs.StringVar(&c.Keys.File, "key-file", c.Keys.File, "encrypt JetStream storage and the view with this key file: 64 hex digits or a passphrase (env EBB_KEY_FILE)")
}

// urlList is a flag of comma-separated URLs.
type urlList []string

func (u *urlList) String() string { return strings.Join(*u, ",") }

func (u *urlList) Set(v string) error {
	*u = nil
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*u = append(*u, p)
		}
	}
	return nil
}

// durationFlag is a duration setting as a flag.
type durationFlag duration

func (d *durationFlag) String() string { return time.Duration(*d).String() }
func (d *durationFlag) Set(v string) error {
	x, err := time.ParseDuration(v)
	*d = durationFlag(x)
	return err
}

// loadServeConfig layers serve's configuration: defaults, the config file
// (--config or env EBB_CONFIG), EBB_KEY_FILE, EBB_SERVE_* variables, then
// the flags in args. It parses args twice: once to find --config (and to
// report flag errors and --help), once over the loaded configuration so
// only the flags given override it.
func loadServeConfig(m *Main, args []string) (serveFile, serveMeta, error) {
	meta := serveMeta{config: m.Getenv("EBB_CONFIG")}
	first := defaultServeFile()
	fs := m.newFlagSet("serve")
	registerServeFlags(fs, &first, policyFlags{}, &meta)
	if err := m.parse(fs, args); err != nil {
		return serveFile{}, meta, err
	}
	if fs.NArg() > 0 {
		return serveFile{}, meta, usagef("serve takes no arguments, got %q", fs.Args())
	}
	c := defaultServeFile()
	if meta.config != "" {
		if err := loadServeFile(meta.config, &c); err != nil {
			return serveFile{}, meta, err
		}
	}
	if k := m.Getenv("EBB_KEY_FILE"); k != "" {
		c.Keys.File = k
	}
	if err := applyEnv(&c, m.Getenv); err != nil {
		return serveFile{}, meta, err
	}
	pol := policyFlags{}
	fs = m.newFlagSet("serve")
	registerServeFlags(fs, &c, pol, &serveMeta{})
	if err := m.parse(fs, args); err != nil {
		return serveFile{}, meta, err
	}
	if len(pol) > 0 {
		merged := maps.Clone(c.Policies.Collections)
		if merged == nil {
			merged = map[string]string{}
		}
		maps.Copy(merged, pol)
		c.Policies.Collections = merged
	}
	return c, meta, nil
}

// check validates c all at once.
func (c serveFile) check() error {
	var errs []error
	if c.Limits.HTTPMaxBody <= 0 || c.Limits.HTTPMaxLongPolls <= 0 || c.Limits.HTTPMaxLongPollsPerUser <= 0 {
		errs = append(errs, usagef("--http-max-body, --http-max-long-polls and --http-max-long-polls-per-user must be positive"))
	}
	if c.Limits.HTTPMaxWriteLogs <= 0 {
		errs = append(errs, usagef("--http-max-write-logs (limits.http_max_write_logs) %d: want a positive number of open write logs", c.Limits.HTTPMaxWriteLogs))
	}
	if c.Limits.HTTPWriteLogIdle == 0 {
		errs = append(errs, usagef("--http-write-log-idle (limits.http_write_log_idle) 0: want a positive duration, or a negative one to close logs only to keep the bound"))
	}
	if c.NATS.Replicas < 0 || c.NATS.Replicas > 5 {
		errs = append(errs, usagef("--replicas (nats.replicas) %d: want 0 to 5 (JetStream's limit; 0 keeps existing streams' replicas)", c.NATS.Replicas))
	}
	if c.NATS.Replicas > 1 && len(c.NATS.URLs) == 0 {
		errs = append(errs, usagef("--replicas (nats.replicas) %d needs a cluster (--nats); the embedded server is a single node", c.NATS.Replicas))
	}
	if c.View.PostgresURL != "" && c.View.Path != "" {
		errs = append(errs, usagef("view: give path (a bbolt file) or postgres_url, not both"))
	}
	if c.View.PostgresURL != "" && !server.IsPostgresURL(c.View.PostgresURL) {
		errs = append(errs, usagef("view.postgres_url: want postgres://... or postgresql://..."))
	}
	if c.Data == "" {
		errs = append(errs, usagef("--data (data) must not be empty"))
	}
	if p := c.Projector.Partitions; p < 0 || p > projection.MaxPartitions {
		errs = append(errs, usagef("--partitions (projector.partitions) %d: want 0 to %d", p, projection.MaxPartitions))
	}
	if c.Projector.Partitions > 1 && c.View.PostgresURL == "" {
		errs = append(errs, usagef("--partitions (projector.partitions) %d needs a view every server shares (--view postgres://...): with a bbolt view each server would have its own, and each would hold only the partitions it applies", c.Projector.Partitions))
	}
	if ttl := time.Duration(c.Projector.LeaseTTL); ttl != 0 && (ttl < projection.MinLeaseTTL || c.Projector.Partitions == 0) {
		errs = append(errs, usagef("--lease-ttl (projector.lease_ttl) %s: want at least %s, with --partitions", ttl, projection.MinLeaseTTL))
	}
	if c.Rules != "" && c.Auth.File == "" {
		errs = append(errs, usagef("--rules (rules) needs --auth: sync rules judge users, and without authentication there is none"))
	}
	if len(errs) == 0 {
		return nil
	}
	return &usageError{oneLineJoin(errs)}
}

// oneLineJoin joins errs into one error on one line.
func oneLineJoin(errs []error) error {
	msgs := make([]string, 0, len(errs))
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	return errors.New(strings.Join(msgs, "; "))
}

// policiesGiven reports whether any layer chose a policy.
func (c serveFile) policiesGiven() bool {
	return c.Policies.Default != "" || len(c.Policies.Collections) > 0
}

// effectivePolicies fills in c's policies: the configured ones (default
// lww), or with none configured those recorded in the data directory.
// recorded reports the latter.
func (c *serveFile) effectivePolicies() (recorded bool, err error) {
	if c.policiesGiven() {
		if c.Policies.Default == "" {
			c.Policies.Default = "lww"
		}
		return false, nil
	}
	pc, err := loadPolicies(c.Data)
	if err != nil {
		return false, err
	}
	c.Policies = policyConfig{Default: pc.Default, Collections: pc.Collections}
	return true, nil
}

// serveConfig turns the layered configuration into what serve runs.
func (c serveFile) serveConfig(recorded bool) serveConfig {
	view := c.View.Path
	if c.View.PostgresURL != "" {
		view = c.View.PostgresURL
	}
	if view == "" {
		view = filepath.Join(c.Data, viewFile)
	}
	return serveConfig{
		data: c.Data, viewPath: view, natsListen: c.Listen.NATS, httpListen: c.Listen.HTTP,
		natsURL: strings.Join(c.NATS.URLs, ","), replicas: c.NATS.Replicas,
		partitions: c.Projector.Partitions, leaseTTL: time.Duration(c.Projector.LeaseTTL),
		syncEvery: time.Duration(c.NATS.FsyncInterval), headerTimeout: time.Duration(c.Limits.HTTPHeaderTimeout),
		writeLogs: server.WriteLogLimits{MaxOpenLogs: c.Limits.HTTPMaxWriteLogs, IdleClose: time.Duration(c.Limits.HTTPWriteLogIdle)},
		gateway: gateway.Config{MaxBody: c.Limits.HTTPMaxBody, MaxLongPolls: c.Limits.HTTPMaxLongPolls,
			MaxLongPollsPerUser: c.Limits.HTTPMaxLongPollsPerUser},
		quotas: auth.Quotas{Publish: auth.PublishLimit{EventsPerSecond: c.Limits.PublishEventsPerSecond, BytesPerSecond: c.Limits.PublishBytesPerSecond},
			Storage: auth.StorageLimit{TenantBytes: c.Limits.TenantStorageBytes}},
		policies: c.Policies, recordedPolicies: recorded, rulesPath: c.Rules,
		logs: logFlags{format: c.Log.Format, level: c.Log.Level},
		sec: securityFlags{tlsCert: c.TLS.Cert, tlsKey: c.TLS.Key, tlsClientCA: c.TLS.ClientCA,
			authFile: c.Auth.File, keyFile: c.Keys.File, jwt: c.Auth.JWT},
		telemetry: c.Telemetry,
	}
}

// otelGetenv reads OTEL_* variables from getenv, falling back to the
// configured telemetry settings.
func (t telemetryConfig) otelGetenv(getenv func(string) string) func(string) string {
	return func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		switch k {
		case "OTEL_TRACES_EXPORTER":
			return t.TracesExporter
		case "OTEL_METRICS_EXPORTER":
			return t.MetricsExporter
		case "OTEL_EXPORTER_OTLP_ENDPOINT":
			return t.OTLPEndpoint
		}
		return ""
	}
}

// security is what securityFlags load to.
type security struct {
	tls   *tls.Config // nil: plain
	users *auth.Users // nil: no authentication
	// tokens verifies login JWTs; nil: none accepted. Closed by serve.
	tokens *jwtlogin.Verifier
	jsKey  []byte       // nil: JetStream unencrypted
	view   *keys.Cipher // nil: the view store unencrypted
	// gateway seals the HTTP gateway's write logs; nil: unencrypted.
	gateway *keys.Cipher
}

// load reads the files the flags name, except the key file, which the
// server opens once it holds the data directory; natsURL says whether the
// embedded server is used ("") or an external one.
func (f *securityFlags) load(natsURL string) (security, error) {
	var sec security
	var err error
	if f.tlsCert != "" || f.tlsKey != "" || f.tlsClientCA != "" {
		if sec.tls, err = embedded.LoadServerTLS(f.tlsCert, f.tlsKey, f.tlsClientCA); err != nil {
			return sec, usagef("--tls-cert/--tls-key/--tls-client-ca: %v", err)
		}
	}
	if f.authFile != "" {
		if sec.users, err = auth.Load(f.authFile); err != nil {
			return sec, usagef("--auth: %v", err)
		}
	}
	if natsURL != "" && f.keyFile != "" {
		return sec, usagef("--key-file encrypts the embedded server's JetStream; configure an external server's encryption in its own config")
	}
	return sec, nil
}

func runServe(ctx context.Context, m *Main, args []string) error {
	fc, meta, err := loadServeConfig(m, args)
	if err != nil {
		return err
	}
	if err := fc.check(); err != nil {
		return err
	}
	recorded, err := fc.effectivePolicies()
	if err != nil {
		return err
	}
	c := fc.serveConfig(recorded)
	if _, err := c.policies.resolve(projection.NewRegistry()); err != nil {
		return err
	}
	if c.rules, c.rulesSrc, err = loadRules(c.rulesPath); err != nil {
		return err
	}
	log, err := c.logs.logger(m.Stderr)
	if err != nil {
		return err
	}
	if meta.printConfig {
		return printConfig(m.Stdout, fc, meta.json)
	}
	log = slog.New(telemetry.LogHandler(log.Handler())) // trace ids on lines logged inside a span
	return serve(ctx, c, log)
}

// serve runs the server (deploy/server) until ctx ends, or until its
// projector stops on its own; either way everything it started has
// stopped, the data directory's lock last, before it returns.
func serve(ctx context.Context, c serveConfig, log *slog.Logger) (err error) {
	sec, err := c.sec.load(c.natsURL)
	if err != nil {
		return err
	}
	if c.rules != nil && sec.users != nil {
		// Under sync rules clients read changes only through the
		// server's filtered feed; the token login's accounts are made
		// from these same users.
		sec.users = sec.users.WithFilteredReads(true)
	}
	if sec.tokens, err = c.sec.jwt.verifier(sec.users != nil); err != nil {
		return err
	}
	if sec.tokens != nil {
		defer func() { err = errors.Join(err, sec.tokens.Close()) }()
	}
	cfg, err := c.serverConfig(sec, log)
	if err != nil {
		return err
	}
	s, err := server.Start(ctx, cfg)
	if err != nil {
		if errors.Is(err, ErrUsage) {
			return err
		}
		return fmt.Errorf("serve: %w", err)
	}
	select {
	case <-ctx.Done():
		log.Info("ebb shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		return s.Close(sctx)
	case <-s.Done():
		return fmt.Errorf("serve: %w", s.Wait())
	}
}

// serverConfig is c as the server's Config: the security loaded, the
// policies resolved, and ebb serve's policy record kept in the data
// directory (checked and saved before the projector starts).
func (c serveConfig) serverConfig(sec security, log *slog.Logger) (server.Config, error) {
	policies, err := c.policies.resolve(projection.NewRegistry())
	if err != nil {
		return server.Config{}, err
	}
	var urls []string
	if c.natsURL != "" {
		urls = strings.Split(c.natsURL, ",")
	}
	return server.Config{
		Data:              c.data,
		View:              c.viewPath,
		NATSURLs:          urls,
		NATSListen:        c.natsListen,
		Replicas:          c.replicas,
		FsyncInterval:     c.syncEvery,
		Partitions:        c.partitions,
		LeaseTTL:          c.leaseTTL,
		Policies:          policies,
		Rules:             c.rules,
		BeforeProject:     c.beforeProject(c.recordPolicies(log)),
		HTTPListen:        c.httpListen,
		HTTPHeaderTimeout: c.headerTimeout,
		WriteLogs:         c.writeLogs,
		Gateway:           c.gateway,
		TLS:               sec.tls,
		Users:             sec.users,
		Quotas:            c.quotas,
		Tokens:            tokenVerifier(sec.tokens),
		TokenLogin:        tokenLogin(sec, log),
		KeyFile:           c.sec.keyFile,
		Logger:            log,
		ServiceName:       c.telemetry.ServiceName,
		Getenv:            c.telemetry.otelGetenv(os.Getenv),
		ProjectorReady:    func(p *projection.Projector) error { return projectorReady(p) },
		GroupReady:        func(g *projection.Group) error { return groupReady(g) },
	}, nil
}

// recordPolicies is the server's BeforeProject: it refuses policies other
// than those a non-empty view was built under, and records c's in the
// data directory for verify (see policy.go).
func (c serveConfig) recordPolicies(log *slog.Logger) func(context.Context, projection.Store) error {
	return func(ctx context.Context, store projection.Store) error {
		if err := checkPolicyChange(ctx, c, store); err != nil {
			return err
		}
		if c.recordedPolicies {
			log.Info("no policies configured: using those recorded in the data directory", "policies", c.policies.String())
		}
		return c.policies.save(c.data)
	}
}

// projectorReady is /readyz's check of the projector: nil while it is
// making progress (or idle with nothing to do), else an error naming the
// cause. It is the one call site of that check.
var projectorReady = (*projection.Projector).Ready

// groupReady is projectorReady with --partitions: a server on standby,
// holding no partition, is ready.
var groupReady = (*projection.Group).Ready

// viewFile is the server view's bbolt file in the data directory.
const viewFile = server.ViewFile
