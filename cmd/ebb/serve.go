package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"

	"github.com/ebbsync/ebb/cmd/ebb/internal/datadir"
	"github.com/ebbsync/ebb/cmd/ebb/internal/gateway"
	"github.com/ebbsync/ebb/cmd/ebb/internal/telemetry"
	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// serveConfig is what `ebb serve` was asked to do.
type serveConfig struct {
	data       string
	natsListen string
	httpListen string
	natsURL    string
	// replicas is the stream replicas asked for; 0 asks for none (new
	// streams get 1, existing ones keep theirs).
	replicas  int
	syncEvery time.Duration
	// headerTimeout cuts an HTTP client that has not sent its request
	// headers within it (slowloris).
	headerTimeout time.Duration
	// gateway holds the HTTP gateway's limits from flags; serve fills in
	// the rest.
	gateway  gateway.Config
	policies policyConfig
	logs     logFlags
	sec      securityFlags
}

// securityFlags are serve's TLS, authentication and encryption settings.
type securityFlags struct {
	tlsCert     string
	tlsKey      string
	tlsClientCA string
	authFile    string
	keyFile     string
}

func (f *securityFlags) register(m *Main, fs *flag.FlagSet) {
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate: serve NATS and HTTP over TLS")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&f.tlsClientCA, "tls-client-ca", "", "PEM CA file: require and verify client certificates signed by it")
	fs.StringVar(&f.authFile, "auth", "", "YAML users file: require credentials, confine each user to its tenant (see deploy/auth)")
	fs.StringVar(&f.keyFile, "key-file", m.env("EBB_KEY_FILE", ""), "encrypt JetStream storage and the view with this key file: 64 hex digits or a passphrase (env EBB_KEY_FILE)")
}

// security is what securityFlags load to.
type security struct {
	tls   *tls.Config  // nil: plain
	users *auth.Users  // nil: no authentication
	jsKey []byte       // nil: JetStream unencrypted
	view  *keys.Cipher // nil: the view store unencrypted
}

// load reads the files the flags name; natsURL says whether the embedded
// server is used ("") or an external one.
func (f *securityFlags) load(data, natsURL string) (security, error) {
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
	if natsURL != "" {
		if f.keyFile != "" {
			return sec, usagef("--key-file encrypts the embedded server's JetStream; configure an external server's encryption in its own config")
		}
		return sec, nil
	}
	if f.keyFile == "" {
		if err := keys.CheckNoKey(data); err != nil {
			return sec, fmt.Errorf("serve: %w", err)
		}
		return sec, nil
	}
	k, err := keys.Open(f.keyFile, data)
	if err != nil {
		return sec, fmt.Errorf("serve: %w", err)
	}
	sec.jsKey = k.Derive(keys.PurposeJetStream)
	if sec.view, err = k.Cipher(keys.PurposeView); err != nil {
		return sec, fmt.Errorf("serve: %w", err)
	}
	return sec, nil
}

func runServe(ctx context.Context, m *Main, args []string) error {
	var c serveConfig
	fs := m.newFlagSet("serve")
	fs.StringVar(&c.data, "data", "./ebb-data", "data directory (JetStream storage and the view)")
	fs.StringVar(&c.natsListen, "nats-listen", embedded.DefaultListen, "address of the embedded NATS server's client listener")
	fs.StringVar(&c.httpListen, "http-listen", "127.0.0.1:8080", "address of the HTTP listener (health, metrics, gateway)")
	fs.StringVar(&c.natsURL, "nats", "", "use this existing NATS JetStream server or cluster instead of the embedded one; several comma-separated URLs of one cluster are tried in turn")
	fs.IntVar(&c.replicas, "replicas", 0, "replicas of each stream (3 on a 3-node cluster): new streams get them, existing ones are raised to them, never lowered; 0 creates R1 and keeps existing streams' replicas")
	fs.DurationVar(&c.syncEvery, "fsync-interval", 0, "embedded JetStream fsync interval; 0 fsyncs every write before acking")
	fs.DurationVar(&c.headerTimeout, "http-header-timeout", 10*time.Second, "cut an HTTP client that has not sent its request headers within this long")
	fs.Int64Var(&c.gateway.MaxBody, "http-max-body", 8<<20, "largest HTTP request body in bytes; larger ones are answered 413")
	fs.IntVar(&c.gateway.MaxLongPolls, "http-max-long-polls", gateway.DefaultMaxLongPolls, "long-polls served at once in all; more are answered 429")
	fs.IntVar(&c.gateway.MaxLongPollsPerUser, "http-max-long-polls-per-user", gateway.DefaultMaxLongPollsPerUser, "long-polls served at once per user (per remote address without --auth); more are answered 429")
	perColl := policyFlags{}
	fs.Var(perColl, "policy", "conflict policy of one collection, COLLECTION=POLICY (lww, merge, reject, manual); repeatable")
	fs.StringVar(&c.policies.Default, "default-policy", "lww", "conflict policy of every other collection")
	c.logs.register(fs)
	c.sec.register(m, fs)
	if err := m.parse(fs, args); err != nil {
		return err
	}
	c.policies.Collections = perColl
	if _, err := c.policies.resolve(projection.NewRegistry()); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("serve takes no arguments, got %q", fs.Args())
	}
	if c.replicas < 0 || c.replicas > 5 {
		return usagef("--replicas must be between 0 and 5 (JetStream's limit), got %d", c.replicas)
	}
	if c.replicas > 1 && c.natsURL == "" {
		return usagef("--replicas %d needs a cluster (--nats); the embedded server is a single node", c.replicas)
	}
	if c.gateway.MaxBody <= 0 || c.gateway.MaxLongPolls <= 0 || c.gateway.MaxLongPollsPerUser <= 0 {
		return usagef("--http-max-body, --http-max-long-polls and --http-max-long-polls-per-user must be positive")
	}
	log, err := c.logs.logger(m.Stderr)
	if err != nil {
		return err
	}
	log = slog.New(telemetry.LogHandler(log.Handler())) // trace ids on lines logged inside a span
	return serve(ctx, c, log)
}

// serve runs the server until ctx ends; every part it starts is stopped, in
// reverse order, before it returns. It locks the data directory (creating
// it if missing) before it reads or writes anything in it, and holds the
// lock until everything else has stopped.
func serve(ctx context.Context, c serveConfig, log *slog.Logger) (err error) {
	var stops []func(context.Context) error
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for i := len(stops) - 1; i >= 0; i-- {
			err = errors.Join(err, stops[i](sctx))
		}
	}()

	// Nothing in the data directory is touched before it is ours: a second
	// server that started nats-server on the same JetStream directory, even
	// one that then failed, could destroy the first one's streams.
	lock, err := datadir.Acquire(c.data, datadir.Options{Create: true, Command: "ebb serve"})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	stops = append(stops, func(context.Context) error { return lock.Release() })

	sec, err := c.sec.load(c.data, c.natsURL)
	if err != nil {
		return err
	}
	nc, url, err := connectServer(ctx, c, sec, log, &stops)
	if err != nil {
		return err
	}
	// Acks the projector gave up on must not pile up in nats.go's pending
	// list: the async publish deadline matches the projector's.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(projection.DefaultPublishTimeout))
	if err != nil {
		return fmt.Errorf("serve: jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	changes, err := events.ReconcileStreams(sctx, js, events.StreamOptions{Replicas: c.replicas})
	cancel()
	for _, ch := range changes {
		if ch.Kept {
			log.Warn("stream setting differs from ebb's default; kept", "stream", ch.Stream, "setting", ch.Setting, "have", ch.Have, "default", ch.Want)
		} else {
			log.Info("stream changed", "stream", ch.Stream, "setting", ch.Setting, "from", ch.Have, "to", ch.Want)
		}
	}
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}

	tel, err := telemetry.New(ctx, telemetry.Config{ServiceName: "ebb", Prometheus: true, Getenv: os.Getenv})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	stops = append(stops, tel.Shutdown)

	proj, err := startProjector(ctx, c, sec.view, js, tel, log, &stops)
	if err != nil {
		return err
	}
	if err := serverGauges(tel.MeterProvider(), js, proj); err != nil {
		return fmt.Errorf("serve: metrics: %w", err)
	}

	gw, err := gateway.New(gateway.Config{
		MaxBody:             c.gateway.MaxBody,
		MaxLongPolls:        c.gateway.MaxLongPolls,
		MaxLongPollsPerUser: c.gateway.MaxLongPollsPerUser,
		JetStream:           js,
		Metrics:             tel.MetricsHandler().ServeHTTP,
		Ready: func(context.Context) error {
			var natsErr error
			if st := nc.Status(); st != nats.CONNECTED {
				natsErr = fmt.Errorf("nats connection to %s: %s", url, st)
			}
			return errors.Join(natsErr, projectorReady(proj))
		},
		Users:          sec.users,
		Logger:         log,
		TracerProvider: tel.TracerProvider(),
		Propagator:     tel.Propagator(),
		MeterProvider:  tel.MeterProvider(),
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	httpAddr, err := serveHTTP(c.httpListen, c.headerTimeout, gw, sec.tls, log, &stops)
	if err != nil {
		return err
	}

	scheme := "http://"
	if sec.tls != nil {
		scheme = "https://"
	}
	log.Info("ebb ready", "nats", url, "http", scheme+httpAddr, "data", c.data,
		"tls", sec.tls != nil, "auth", sec.users != nil, "encrypted", sec.jsKey != nil)
	select {
	case <-ctx.Done():
		log.Info("ebb shutting down")
		return nil
	case <-proj.Done():
		return fmt.Errorf("serve: projector stopped: %w", proj.Err())
	}
}

// projectorReady is /readyz's check of the projector: nil while it is
// healthy, else an error naming the cause. It is the one call site of that
// check.
//
// TODO(merge): wire projection's readiness here once it lands:
//
//	var projectorReady = (*projection.Projector).Ready
//
// (nil when healthy, else an error naming the cause, such as no progress).
// Until then it only knows whether the projector has stopped.
var projectorReady = func(p *projection.Projector) error {
	select {
	case <-p.Done():
		return fmt.Errorf("projector stopped: %w", p.Err())
	default:
		return nil
	}
}

// viewFile is the server view's bbolt file in the data directory.
const viewFile = "view.db"

// startProjector opens the view store (sealed with view unless it is nil)
// and starts the projector on it.
func startProjector(ctx context.Context, c serveConfig, view *keys.Cipher, js jetstream.JetStream, tel *telemetry.Telemetry, log *slog.Logger, stops *[]func(context.Context) error) (*projection.Projector, error) {
	policies, err := c.policies.resolve(projection.NewRegistry())
	if err != nil {
		return nil, err
	}
	store, err := projection.OpenBolt(filepath.Join(c.data, viewFile), projection.BoltOptions{Timeout: 2 * time.Second, Cipher: view})
	if err != nil {
		return nil, fmt.Errorf("serve: open view in %s: %w", c.data, err)
	}
	*stops = append(*stops, func(context.Context) error { return store.Close() })
	if err := checkPolicyChange(ctx, c, store); err != nil {
		return nil, err
	}
	if err := c.policies.save(c.data); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	proj, err := projection.New(js, store, projection.Config{Policies: policies, Logger: log,
		TracerProvider: tel.TracerProvider(), MeterProvider: tel.MeterProvider(), Propagator: tel.Propagator()})
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if err := proj.Start(ctx); err != nil {
		return nil, fmt.Errorf("serve: start projector: %w", err)
	}
	*stops = append(*stops, func(context.Context) error { return proj.Close() })
	return proj, nil
}

// connectServer starts the embedded NATS server (unless c.natsURL names an
// external one) and connects to it.
func connectServer(ctx context.Context, c serveConfig, sec security, log *slog.Logger, stops *[]func(context.Context) error) (*nats.Conn, string, error) {
	opts := []nats.Option{nats.Name("ebb-serve"), nats.MaxReconnects(-1)}
	if c.natsURL != "" {
		nc, err := nats.Connect(c.natsURL, opts...)
		if err != nil {
			return nil, "", fmt.Errorf("serve: connect to %s: %w", c.natsURL, err)
		}
		*stops = append(*stops, func(context.Context) error { nc.Close(); return nil })
		return nc, c.natsURL, nil
	}
	var users []*server.User
	if sec.users != nil {
		users = sec.users.NATSUsers()
	}
	srv, err := embedded.Start(ctx, embedded.Config{
		Dir:          filepath.Join(c.data, "jetstream"),
		Listen:       c.natsListen,
		Sync:         embedded.SyncPolicy{Interval: c.syncEvery},
		Logger:       log,
		TLS:          sec.tls,
		Users:        users,
		JetStreamKey: sec.jsKey,
	})
	if err != nil {
		return nil, "", fmt.Errorf("serve: %w", err)
	}
	*stops = append(*stops, srv.Shutdown)
	nc, err := srv.Connect(opts...)
	if err != nil {
		return nil, "", fmt.Errorf("serve: connect to embedded nats: %w", err)
	}
	*stops = append(*stops, func(context.Context) error { nc.Close(); return nil })
	return nc, srv.ClientURL(), nil
}

// serveHTTP listens on addr and serves h until stopped; it returns the bound
// address.
func serveHTTP(addr string, headerTimeout time.Duration, h http.Handler, tc *tls.Config, log *slog.Logger, stops *[]func(context.Context) error) (string, error) {
	if headerTimeout <= 0 {
		headerTimeout = 10 * time.Second
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("serve: http listen on %s: %w", addr, err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      2 * time.Minute, // above the gateway's longest long-poll
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	*stops = append(*stops, func(ctx context.Context) error {
		err := hs.Shutdown(ctx)
		if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return err
	})
	return ln.Addr().String(), nil
}

// serverGauges reports each stream's message count and last sequence, and
// the projector's checkpoint and lag behind EVENTS.
func serverGauges(mp metric.MeterProvider, js jetstream.JetStream, proj *projection.Projector) error {
	meter := mp.Meter("github.com/ebbsync/ebb/cmd/ebb")
	msgs, err := meter.Int64ObservableGauge("ebb.stream.messages", metric.WithDescription("messages held by each ebb stream"))
	if err != nil {
		return err
	}
	last, err := meter.Int64ObservableGauge("ebb.stream.last_sequence", metric.WithDescription("last sequence of each ebb stream"))
	if err != nil {
		return err
	}
	checkpoint, err := meter.Int64ObservableGauge("ebb.projector.checkpoint", metric.WithDescription("last EVENTS sequence the projector committed"))
	if err != nil {
		return err
	}
	lag, err := meter.Int64ObservableGauge("ebb.projector.lag", metric.WithDescription("events stored in EVENTS that the projector has not applied yet"))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		for _, name := range []string{events.StreamEvents, events.StreamChanges, events.StreamReceipts, events.StreamDead} {
			st, err := js.Stream(ctx, name)
			if err != nil {
				return fmt.Errorf("stream %s: %w", name, err)
			}
			attr := metric.WithAttributes(streamAttr(name))
			o.ObserveInt64(msgs, int64(st.CachedInfo().State.Msgs), attr)
			o.ObserveInt64(last, int64(st.CachedInfo().State.LastSeq), attr)
			if name == events.StreamEvents {
				cp := proj.Stats().Checkpoint
				o.ObserveInt64(checkpoint, int64(cp))
				o.ObserveInt64(lag, int64(st.CachedInfo().State.LastSeq-min(cp, st.CachedInfo().State.LastSeq)))
			}
		}
		return nil
	}, msgs, last, checkpoint, lag)
	return err
}
