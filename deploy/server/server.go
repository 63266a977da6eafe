package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/console"
	"github.com/ebbsync/ebb/deploy/datadir"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/deploy/telemetry"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// failedStartTimeout bounds stopping what a failed Start had started, and
// the stop after the projector stopped on its own.
const failedStartTimeout = 15 * time.Second

// streamsTimeout bounds creating or reconciling the streams at start.
const streamsTimeout = 30 * time.Second

// Server is a running ebb server. Its methods are safe for concurrent
// use.
type Server struct {
	cfg      Config
	nc       *nats.Conn
	js       jetstream.JetStream
	natsURL  string
	httpAddr string
	proj     runningProjector

	// stops stop what Start started, run in reverse order.
	stops []func(context.Context) error
	// natsStopped says whether the embedded server (if any) has stopped,
	// so the data directory's lock is released only once nothing writes
	// in it.
	natsStopped atomic.Bool
	// cancel ends runCtx, the context of the parts that run until Close.
	cancel context.CancelFunc

	closing   chan struct{} // closed by Close
	closeOnce sync.Once
	stopOnce  sync.Once
	done      chan struct{} // closed once every part has stopped
	stopErr   error         // from the stops; set before done is closed
	cause     error         // why the server stopped on its own; set before done is closed
	watcher   sync.WaitGroup

	// The sync-rules interlock on external NATS (guardRules): rulesKick
	// asks for a check now, rules is its state and the change feed's.
	rulesKick chan struct{}
	rules     rulesGuard
}

// Start starts a server as cfg says and returns once it serves: the data
// directory locked, NATS up (embedded or connected), the streams present
// with the settings asked (events.ReconcileStreams; what it changed or
// kept is logged), the projector started, and HTTP listening. ctx bounds
// the start only; the server runs until Close, or until its projector
// stops on its own (Done, Wait). A Start that fails stops whatever it had
// started, releases the data directory, and returns the error naming what
// failed; a Config it refuses wraps ErrInvalidConfig.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Server{cfg: c, cancel: cancel, closing: make(chan struct{}), done: make(chan struct{}), rulesKick: make(chan struct{}, 1)}
	s.natsStopped.Store(true)
	// A cancelled ctx aborts the start, including parts that already run
	// on runCtx; once Start has returned, ctx no longer matters.
	unbind := context.AfterFunc(ctx, cancel)
	err = s.start(ctx, runCtx)
	if !unbind() && err == nil {
		// ctx ended as the start finished, and has already cancelled
		// runCtx: the parts on it are stopping.
		err = fmt.Errorf("start: %w", context.Cause(ctx))
	}
	if err != nil {
		sctx, scancel := context.WithTimeout(context.Background(), failedStartTimeout)
		defer scancel()
		s.stop(sctx, nil)
		return nil, errors.Join(err, s.stopErr)
	}
	s.watcher.Add(1)
	go s.watch()
	return s, nil
}

// start starts the parts in order, appending each one's stop to s.stops.
func (s *Server) start(ctx, runCtx context.Context) error {
	c := &s.cfg
	log := c.Logger
	// Nothing in the data directory is touched before it is ours: a second
	// server that started nats-server on the same JetStream directory, even
	// one that then failed, could destroy the first one's streams.
	lock, err := datadir.Acquire(c.Data, datadir.Options{Create: true, Command: "ebb serve"})
	if err != nil {
		return err
	}
	s.stops = append(s.stops, func(context.Context) error {
		if !s.natsStopped.Load() {
			// The embedded server did not finish stopping in time and may
			// still write its JetStream directory: keep the lock; the
			// process's exit releases it.
			return nil
		}
		return lock.Release()
	})

	ciphers, err := openKeys(c)
	if err != nil {
		return err
	}
	if c.Tokens != nil && len(c.NATSURLs) > 0 {
		log.Warn("login tokens are accepted over HTTP only: NATS token logins need the embedded server")
	}
	var meter *auth.Meter // users' publish and storage quotas; nil without users
	if c.Users != nil {
		meter = auth.NewMeter(c.Quotas.Or(c.Users.Limits().Quotas()))
	}
	nc, url, err := s.connect(ctx, c, ciphers.jetStream, meter)
	if err != nil {
		return err
	}
	s.nc, s.natsURL = nc, url
	// Acks the projector gave up on must not pile up in nats.go's pending
	// list: the async publish deadline matches the projector's.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(projection.DefaultPublishTimeout))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	s.js = js
	sctx, cancel := context.WithTimeout(ctx, streamsTimeout)
	changes, err := events.ReconcileStreams(sctx, js, events.StreamOptions{Replicas: c.Replicas})
	cancel()
	for _, ch := range changes {
		if ch.Kept {
			log.Warn("stream setting differs from ebb's default; kept", "stream", ch.Stream, "setting", ch.Setting, "have", ch.Have, "default", ch.Want)
		} else {
			log.Info("stream changed", "stream", ch.Stream, "setting", ch.Setting, "from", ch.Have, "to", ch.Want)
		}
	}
	if err != nil {
		return err
	}

	getenv := c.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	// The exporters may hold on to the context they are made with.
	tel, err := telemetry.New(runCtx, telemetry.Config{ServiceName: c.ServiceName, Prometheus: true, Getenv: getenv})
	if err != nil {
		return err
	}
	s.stops = append(s.stops, tel.Shutdown)
	prov := providers{tracer: tel.TracerProvider(), meter: tel.MeterProvider(), propagator: tel.Propagator()}

	proj, store, err := s.startProjector(ctx, runCtx, c, ciphers.view, js, prov)
	if err != nil {
		return err
	}
	s.proj = proj
	if err := serverGauges(prov.meter, js, proj); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}

	// HTTP writes (PUT/PATCH/DELETE of a document) are events the server
	// builds in durable logs of its own, in the locked data directory.
	writer, err := gateway.OpenWriter(ctx, gateway.WriterConfig{Dir: filepath.Join(c.Data, "gateway"), JetStream: gateway.Metered(js, meter), Conn: nc,
		Cipher: ciphers.gateway, Logger: log, TracerProvider: prov.tracer, MeterProvider: prov.meter,
		MaxOpenLogs: c.WriteLogs.MaxOpenLogs, IdleClose: c.WriteLogs.IdleClose})
	if err != nil {
		return err
	}
	// Stopped after the HTTP server (stops run in reverse) and before NATS.
	s.stops = append(s.stops, func(context.Context) error { return writer.Close() })

	gc := c.Gateway
	gc.Writer = writer
	gc.History = store
	gc.JetStream = gateway.Metered(js, meter)
	gc.Metrics = tel.MetricsHandler().ServeHTTP
	gc.Ready = func(ctx context.Context) error { return s.ready(ctx, true) }
	gc.Users = c.Users
	gc.Tokens = c.Tokens
	gc.Logger = log
	gc.TracerProvider = prov.tracer
	gc.Propagator = prov.propagator
	gc.MeterProvider = prov.meter
	if c.Rules != nil {
		// Sync rules: client users read documents and changes only
		// through filters (the gateway's, and the change responder the
		// filtered-reads accounts route "_ebb.api.changes" to).
		gc.Visibility = projection.Visibility{Rules: c.Rules, Store: store}
		gc.Groups = func(u auth.User) []string { return u.Groups }
	}
	// The change responder: under rules the only way a client reads its
	// changes; without, a replica's compact catch-up (deploy/feed).
	if err := s.startFeed(); err != nil {
		return err
	}
	s.stops = append(s.stops, func(context.Context) error { s.stopFeed(); return nil })
	gw, err := gateway.New(gc)
	if err != nil {
		return err
	}
	// The console (/ui) reads the view and the streams; everything else
	// is the gateway's.
	con, err := console.New(console.Config{JetStream: js, Store: store, Users: c.Users, Filtered: c.Rules != nil, Logger: log.With("component", "console")})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", gw)
	guarded := c.Rules != nil && len(c.NATSURLs) > 0
	if guarded {
		// Refused while the sync-rules interlock fails (guardRules).
		mux.Handle("GET /v1/{tenant}/changes", s.rulesGate(gw))
	}
	mux.Handle(console.Prefix+"/", con)
	mux.Handle(console.Prefix, con)
	if s.httpAddr, err = s.serveHTTP(c.HTTPListen, c.HTTPHeaderTimeout, mux, c.TLS, log); err != nil {
		return err
	}

	if guarded {
		// Start checked every server already (connect); from now on the
		// check runs every RulesCheckInterval and after every reconnect.
		gctx, gcancel := context.WithCancel(runCtx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.guardRules(gctx, c.RulesCheckInterval)
		}()
		s.stops = append(s.stops, func(context.Context) error { gcancel(); wg.Wait(); return nil })
	}

	log.Info("ebb ready", "nats", url, "http", s.URL(), "data", c.Data,
		"tls", c.TLS != nil, "auth", c.Users != nil, "encrypted", ciphers.jetStream != nil)
	return nil
}

// ciphers are the keys KeyFile gives; all nil without one.
type ciphers struct {
	jetStream []byte       // the embedded JetStream's storage key
	view      *keys.Cipher // seals the view store
	gateway   *keys.Cipher // seals the gateway's write logs
}

// openKeys opens c.KeyFile against the data directory (which must be
// locked) for the embedded server; without a key file it refuses a data
// directory that was encrypted. With external NATS there is nothing to
// open.
func openKeys(c *Config) (ciphers, error) {
	var out ciphers
	if len(c.NATSURLs) > 0 {
		return out, nil
	}
	if c.KeyFile == "" {
		return out, keys.CheckNoKey(c.Data)
	}
	k, err := keys.Open(c.KeyFile, c.Data)
	if err != nil {
		return out, err
	}
	out.jetStream = k.Derive(keys.PurposeJetStream)
	if out.view, err = k.Cipher(keys.PurposeView); err != nil {
		return out, err
	}
	if out.gateway, err = k.Cipher(keys.PurposeGateway); err != nil {
		return out, err
	}
	return out, nil
}

// ready is the readiness the gateway's /readyz adds to the streams'
// presence: the NATS connection and the projector. With short (/readyz,
// served without authentication), the sync-rules interlock's cause is
// only its kind (shortRulesCause); Ready has it whole.
func (s *Server) ready(_ context.Context, short bool) error {
	var natsErr error
	if st := s.nc.Status(); st != nats.CONNECTED {
		natsErr = fmt.Errorf("nats connection to %s: %s", s.natsURL, st)
	}
	var rulesErr error
	if err := s.rulesFailure(); err != nil {
		if short {
			err = shortRulesCause(err)
		}
		rulesErr = fmt.Errorf("sync rules interlock (clients' change reads stopped): %w", err)
	}
	return errors.Join(natsErr, rulesErr, s.proj.ready(&s.cfg))
}

// Ready reports whether the server is ready, as /readyz does: nil, or an
// error joining every cause (a missing stream, the NATS connection not
// connected, the projector stalled or stopped). ctx bounds the stream
// look-ups.
func (s *Server) Ready(ctx context.Context) error {
	var errs []error
	for _, name := range []string{events.StreamEvents, events.StreamChanges, events.StreamReceipts, events.StreamDead} {
		if _, err := s.js.Stream(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", name, err))
		}
	}
	return errors.Join(append(errs, s.ready(ctx, false))...)
}

// Addr is the HTTP listener's address, host:port (the port bound when
// Config.HTTPListen asked for port 0).
func (s *Server) Addr() string { return s.httpAddr }

// URL is the HTTP base URL: http:// or, with Config.TLS, https:// and Addr.
func (s *Server) URL() string {
	if s.cfg.TLS != nil {
		return "https://" + s.httpAddr
	}
	return "http://" + s.httpAddr
}

// NATSURL is the URL of the NATS server the server uses: the embedded
// server's client URL, or Config.NATSURLs joined with commas, each with
// its password (if any) replaced by "REDACTED" (RedactURL).
func (s *Server) NATSURL() string { return s.natsURL }

// Done is closed once the server has stopped, after Close or after its
// projector stopped on its own; Wait then says why.
func (s *Server) Done() <-chan struct{} { return s.done }

// Wait blocks until the server has stopped and returns why: nil after
// Close, or an error wrapping the projector's when it stopped on its own
// (the server then stops everything else by itself), joined with any
// error from stopping the parts.
func (s *Server) Wait() error {
	<-s.done
	return errors.Join(s.cause, s.stopErr)
}

// Close stops the server: the HTTP listener (in-flight requests may finish
// within ctx), the gateway's writer, the projector, the view, telemetry,
// NATS (the embedded server last), then it releases the data directory.
// ctx bounds the stop; an embedded server that has not stopped within it
// keeps the lock, which the process's exit releases. It returns the
// errors from stopping; a second call, or one after the server stopped
// on its own, waits for that stop and returns its errors.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { close(s.closing) })
	s.stop(ctx, nil)
	s.watcher.Wait()
	return s.stopErr
}

// stop runs the stops once, in reverse order, then closes done; cause is
// why the server stops (nil: asked to). Only the first call stops; the
// others wait for it.
func (s *Server) stop(ctx context.Context, cause error) {
	s.stopOnce.Do(func() {
		s.cause = cause
		s.cancel()
		var err error
		for i := len(s.stops) - 1; i >= 0; i-- {
			err = errors.Join(err, s.stops[i](ctx))
		}
		s.stopErr = err
		close(s.done)
	})
}

// watch stops the server when its projector stops on its own.
func (s *Server) watch() {
	defer s.watcher.Done()
	select {
	case <-s.closing:
		return
	case <-s.proj.done():
	}
	select {
	case <-s.closing:
		return // stopped by Close
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), failedStartTimeout)
	defer cancel()
	cause := errors.New("projector stopped")
	if err := s.proj.err(); err != nil {
		cause = fmt.Errorf("projector stopped: %w", err)
	}
	s.stop(ctx, cause)
}
