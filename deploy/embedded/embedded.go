package embedded

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/auth"
)

// Defaults applied to a zero Config field.
const (
	// DefaultListen is the client address used when Config.Listen is empty:
	// the standard NATS port on loopback only, so a fresh `ebb serve` is not
	// reachable from the network until the operator says so.
	DefaultListen = "127.0.0.1:4222"
	// DefaultServerName is used when Config.ServerName is empty.
	DefaultServerName = "ebb"
	// DefaultReadyTimeout is used when Config.ReadyTimeout is zero.
	DefaultReadyTimeout = 10 * time.Second
	// NATSDefaultSyncInterval is nats-server's own background fsync period
	// (sync_interval). Use it in SyncPolicy.Interval to get stock NATS behaviour.
	NATSDefaultSyncInterval = 2 * time.Minute

	// internalUserPrefix starts the names reserved for the internal user.
	internalUserPrefix = "_ebb"
	// internalUser is the internal user's name (auth.InternalUser).
	internalUser = auth.InternalUser
	// globalAccount is nats-server's account of users without one.
	globalAccount = "$G"
	// tlsHandshakeTimeout bounds a client's TLS handshake.
	tlsHandshakeTimeout = 5 * time.Second
)

// Errors returned by Start. Match them with errors.Is.
var (
	// ErrInvalidConfig wraps every Config validation error; the message names
	// the offending field and value.
	ErrInvalidConfig = errors.New("invalid embedded nats config")
	// ErrNotReady means the server did not become ready for connections: it
	// reported a fatal error (for example the port is taken), ReadyTimeout
	// elapsed, or the context passed to Start was cancelled.
	ErrNotReady = errors.New("embedded nats not ready")
)

// SyncPolicy says when JetStream's file store calls fsync. The zero value is
// the safe default: fsync every write before it is acknowledged. See the
// package documentation for what each setting survives and what it costs.
type SyncPolicy struct {
	// Interval, if positive, turns off the fsync per write: writes reach the
	// OS page cache before the ack and are fsynced in the background every
	// Interval (nats-server's default is NATSDefaultSyncInterval). Zero means
	// fsync on every write. Negative is invalid.
	Interval time.Duration
}

// Always reports whether every write is fsynced before it is acknowledged.
func (p SyncPolicy) Always() bool { return p.Interval == 0 }

// String returns "always" or "interval=<d>".
func (p SyncPolicy) String() string {
	if p.Always() {
		return "always"
	}
	return "interval=" + p.Interval.String()
}

// Config configures an embedded server. Every field but Dir may be left zero.
type Config struct {
	// Dir is the JetStream store directory (file storage). Required. It is
	// created if missing; nats-server keeps its files under Dir/jetstream.
	// Starting again on the same Dir recovers its streams.
	Dir string
	// Listen is the "host:port" address for client connections; empty means
	// DefaultListen. Port -1 or 0 picks a free port (read it back with Addr
	// or ClientURL). An empty host means all interfaces. Must be empty when
	// DontListen is set.
	Listen string
	// DontListen runs the server without any TCP listener; clients connect
	// in process through Server.Connect.
	DontListen bool
	// Sync is the fsync policy; the zero value fsyncs every write.
	Sync SyncPolicy
	// ServerName names the server; empty means DefaultServerName.
	ServerName string
	// Logger receives nats-server's log lines with component=nats. Debug lines
	// are produced only if the handler enables slog.LevelDebug, protocol traces
	// only if it enables slog.LevelDebug-4. Nil discards them.
	Logger *slog.Logger
	// ReadyTimeout bounds how long Start waits for the server to accept
	// connections; zero means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// MaxPayload is the largest message accepted, in bytes; zero means the
	// NATS default (1 MiB).
	MaxPayload int32
	// TLS, if set, makes the client listener require TLS with this config
	// (see LoadServerTLS). With ClientAuth tls.RequireAndVerifyClientCert
	// clients must also present a certificate signed by ClientCAs. In
	// process connections (Server.Connect) skip TLS.
	TLS *tls.Config
	// Users, if any, turns on authentication: only these users may connect,
	// each with its permissions and its account (see package deploy/auth,
	// whose NATSUsers makes them). Every account a user points at is
	// configured on the server. The internal user, which Server.Connect
	// uses, gets a random password that never leaves the process: it is
	// the user named auth.InternalUser if Users has one (in that user's
	// account), else one added with every permission in the global
	// account. Logins are checked by auth.NATSAuthenticator under Login.
	Users []*server.User
	// Login limits password guessing on the client listener when Users
	// is set; zero fields take auth's defaults (see auth.LoginLimit).
	Login auth.LoginLimit
	// TokenLogin, if set with Users, checks every login that presents a
	// token (nats.Token) instead of a user name and password (package
	// deploy/auth/jwtlogin makes one); the others go to
	// auth.NATSAuthenticator as before. Start binds it to the server
	// before the server accepts connections.
	TokenLogin TokenLogin

	// Meter, with Users, keeps users' publish rate and tenants' storage
	// quotas (auth.StartAPI runs its measures); nil means one with auth's
	// default quotas.
	Meter *auth.Meter
	// Identities, with Users, tells the publish responder who each
	// writer is, so it stamps the writer's groups on its events
	// (auth.APIConfig.Identities: the users file, or the jwtlogin
	// NATSLogin that is TokenLogin); nil means none is stamped.
	Identities auth.Directory
	// JetStreamKey, if set, encrypts JetStream's storage (AES-GCM) with
	// this key (see package deploy/keys); it must be the same on every
	// start on Dir. Start does not check it: nats-server skips streams it
	// cannot decrypt, so open the key with keys.Open, which refuses a
	// wrong key, before calling Start.
	JetStreamKey []byte
}

// listenAddr is a validated Config.Listen.
type listenAddr struct {
	host string
	port int // -1 means random
}

// validate checks every field and returns all problems at once, each wrapping
// ErrInvalidConfig. On success it returns the parsed listen address.
func (c Config) validate() (listenAddr, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if c.Dir == "" {
		bad("Dir is required")
	}
	var la listenAddr
	switch {
	case c.DontListen && c.Listen != "":
		bad("Listen %q must be empty when DontListen is set", c.Listen)
	case !c.DontListen:
		listen := c.Listen
		if listen == "" {
			listen = DefaultListen
		}
		host, portStr, err := net.SplitHostPort(listen)
		if err != nil {
			bad("Listen %q: %v", listen, err)
			break
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < -1 || port > 65535 {
			bad("Listen %q: port must be a number from -1 to 65535", listen)
			break
		}
		if port == 0 {
			port = -1 // net.Listen's "any port" spelling; nats-server reads 0 as 4222
		}
		la = listenAddr{host: host, port: port}
	}
	if c.Sync.Interval < 0 {
		bad("Sync.Interval %s is negative", c.Sync.Interval)
	}
	if c.ReadyTimeout < 0 {
		bad("ReadyTimeout %s is negative", c.ReadyTimeout)
	}
	if c.MaxPayload < 0 {
		bad("MaxPayload %d is negative", c.MaxPayload)
	}
	if c.JetStreamKey != nil && len(c.JetStreamKey) < 16 {
		bad("JetStreamKey is %d bytes, want at least 16", len(c.JetStreamKey))
	}
	if err := c.Login.Validate(); err != nil {
		bad("Login: %v", err)
	}
	for i, u := range c.Users {
		switch {
		case u == nil || u.Username == "":
			bad("Users[%d] has no name", i)
		case u.Username == internalUser:
		case strings.HasPrefix(u.Username, internalUserPrefix):
			bad("Users[%d] %q: names starting with %q are reserved", i, u.Username, internalUserPrefix)
		}
	}
	return la, errors.Join(errs...)
}

// Server is a running in-process nats-server with JetStream. Its methods are
// safe for concurrent use.
type Server struct {
	ns        *server.Server
	cfg       Config // effective config; Listen holds the bound address
	clientURL string

	internal *server.User // nil without Users
	infoConn *nats.Conn   // serves users' API requests (auth.StartAPI); nil without accounts
	api      *auth.API    // the responders on infoConn; nil without accounts
	tokens   *tokenFirst  // token logins, told of api; nil without them

	shutdownOnce sync.Once
	shutdownDone chan struct{}
}

// Start validates cfg, starts nats-server with JetStream on file storage in
// cfg.Dir, and returns once it accepts connections. Validation errors wrap
// ErrInvalidConfig; a server that fails to come up is shut down and the error
// wraps ErrNotReady. Cancelling ctx aborts the wait for readiness; it has no
// effect on a server already returned.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	la, err := cfg.validate()
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	if cfg.ServerName == "" {
		cfg.ServerName = DefaultServerName
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	opts := &server.Options{
		ServerName: cfg.ServerName,
		DontListen: cfg.DontListen,
		Host:       la.host,
		Port:       la.port,
		NoSigs:     true, // the embedding process owns its signals
		MaxPayload: cfg.MaxPayload,
		JetStream:  true,
		StoreDir:   cfg.Dir,
	}
	if cfg.TLS != nil {
		opts.TLS = true
		opts.TLSConfig = cfg.TLS
		opts.TLSVerify = cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		opts.TLSTimeout = tlsHandshakeTimeout.Seconds()
	}
	var (
		internal *server.User
		authn    *auth.NATSAuthenticator
		tokens   *tokenFirst
	)
	if len(cfg.Users) > 0 {
		var users []*server.User
		users, internal, err = withInternalUser(cfg.Users)
		if err != nil {
			return nil, fmt.Errorf("start embedded nats: %w", err)
		}
		opts.Accounts = accountsOf(users)
		if authn, err = auth.NewNATSAuthenticator(users, cfg.Login); err != nil {
			return nil, fmt.Errorf("start embedded nats: %w", err)
		}
		opts.CustomClientAuthentication = authn
		if cfg.TokenLogin != nil {
			tokens = &tokenFirst{token: cfg.TokenLogin, rest: authn}
			opts.CustomClientAuthentication = tokens
		}
	}
	if err := moveStreamAccount(cfg.Dir, internal); err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	if cfg.JetStreamKey != nil {
		opts.JetStreamKey = hex.EncodeToString(cfg.JetStreamKey)
		opts.JetStreamCipher = server.AES
	}
	if cfg.Sync.Always() {
		opts.SyncAlways = true
		opts.SyncInterval = NATSDefaultSyncInterval // still drives background index syncs
	} else {
		opts.SyncInterval = cfg.Sync.Interval
	}

	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	if authn != nil {
		authn.Bind(ns)
		if cfg.TokenLogin != nil {
			cfg.TokenLogin.Bind(ns)
			tokens.ns.Store(ns)
		}
	}
	bridge := newLogBridge(logger)
	ns.SetLoggerV2(bridge, bridge.debug, bridge.trace, false)

	s := &Server{ns: ns, cfg: cfg, internal: internal, tokens: tokens, shutdownDone: make(chan struct{})}
	ns.Start()
	if err := s.waitReady(ctx, bridge.fatal); err != nil {
		// Best effort: release the listener and the store before reporting.
		shCtx, cancel := context.WithTimeout(context.Background(), cfg.ReadyTimeout)
		defer cancel()
		_ = s.Shutdown(shCtx)
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}

	if !cfg.DontListen {
		addr, ok := ns.Addr().(*net.TCPAddr)
		if !ok {
			_ = s.Shutdown(context.Background())
			return nil, fmt.Errorf("start embedded nats: %w: no client listener address", ErrNotReady)
		}
		s.cfg.Listen = addr.String()
		scheme := "nats://"
		if cfg.TLS != nil {
			scheme = "tls://"
		}
		s.clientURL = scheme + net.JoinHostPort(dialHost(addr.IP), strconv.Itoa(addr.Port))
	}
	if internal != nil && internal.Account != nil {
		if err := s.serveStreamInfo(); err != nil {
			_ = s.Shutdown(context.Background())
			return nil, fmt.Errorf("start embedded nats: %w", err)
		}
	}
	return s, nil
}

// serveStreamInfo answers users' stream info and consumer create requests
// and passes on their events under cfg.Meter's quotas (the configuration
// of auth.NATSUsers sends them to auth.StartAPI's responders), on a
// connection of the internal user; Shutdown closes both.
func (s *Server) serveStreamInfo() error {
	nc, err := s.Connect(nats.Name("ebb-api"), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	log := s.cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	api, err := auth.StartAPIWith(nc, auth.APIConfig{Meter: s.cfg.Meter, Identities: s.cfg.Identities, OnError: func(err error) {
		log.Warn("tenant storage measure failed; the previous counts stay", "err", err)
	}})
	if err != nil {
		nc.Close()
		return err
	}
	s.infoConn, s.api = nc, api
	if s.tokens != nil {
		s.tokens.api.Store(api)
	}
	return nil
}

// waitReady polls the server until it accepts connections, it reports a fatal
// error, the ready timeout elapses or ctx is done.
func (s *Server) waitReady(ctx context.Context, fatal <-chan error) error {
	deadline := time.Now().Add(s.cfg.ReadyTimeout)
	for {
		select {
		case err := <-fatal:
			return fmt.Errorf("%w: %w", ErrNotReady, err)
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
		default:
		}
		if s.ns.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: not accepting connections after %s", ErrNotReady, s.cfg.ReadyTimeout)
		}
	}
}

// dialHost turns a listener IP into one a local client can dial: the
// unspecified address becomes loopback of the same family.
func dialHost(ip net.IP) string {
	switch {
	case ip == nil || ip.Equal(net.IPv4zero):
		return "127.0.0.1"
	case ip.Equal(net.IPv6unspecified):
		return "::1"
	default:
		return ip.String()
	}
}

// ClientURL returns the URL clients dial, such as "nats://127.0.0.1:4222",
// with the actual port when Listen asked for a random one. It is empty when
// DontListen is set.
func (s *Server) ClientURL() string { return s.clientURL }

// Addr returns the bound client address as "host:port" (for example
// "127.0.0.1:41234"), or "" when DontListen is set. Put it in Config.Listen to
// restart on the same port.
func (s *Server) Addr() string { return s.cfg.Listen }

// Config returns the effective configuration: defaults filled in and Listen
// set to the bound address. Passing it to Start after Shutdown restarts the
// server on the same Dir and the same port.
func (s *Server) Config() Config { return s.cfg }

// Connect opens a client connection: in process when DontListen, TLS or
// Users is set (the server's own connection needs neither TLS nor a
// password on the network), otherwise to ClientURL. With Users it
// authenticates as the internal user, unless opts carry other credentials.
// opts are applied after the connection target, so they may add handlers,
// reconnect settings and the like.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	url := s.clientURL
	var pre []nats.Option
	if s.cfg.DontListen || s.cfg.TLS != nil || s.internal != nil {
		// The URL must not say tls://, which would make nats.go insist on
		// TLS that an in-process connection does not do.
		url = ""
		pre = append(pre, nats.InProcessServer(s.ns))
	}
	if s.internal != nil {
		pre = append(pre, nats.UserInfo(s.internal.Username, s.internal.Password))
	}
	opts = append(pre, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect embedded nats: %w", err)
	}
	return nc, nil
}

// NATS returns the underlying nats-server, for what this package does not
// cover. Do not call its Shutdown; use Server.Shutdown.
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server, closing client connections and flushing the
// store, and waits until it is down or ctx is done. It is safe to call more
// than once and concurrently; a call after ctx expired may be repeated to
// keep waiting. It returns ctx's error if ctx ends first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		if s.api != nil {
			_ = s.api.Close()
		}
		if s.infoConn != nil {
			s.infoConn.Close()
		}
		// nats-server's Shutdown blocks until done and cannot be cancelled; run
		// it on its own goroutine so the caller's ctx bounds the wait. The
		// goroutine ends when the server is down.
		go func() {
			s.ns.Shutdown()
			s.ns.WaitForShutdown()
			close(s.shutdownDone)
		}()
	})
	select {
	case <-s.shutdownDone:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shutdown embedded nats: %w", ctx.Err())
	}
}
