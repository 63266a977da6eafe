package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/deploy/server"
	"github.com/ebbsync/ebb/deploy/telemetry"
	"github.com/ebbsync/ebb/events"
)

// Client command defaults, each overridable by flag or environment.
const (
	defaultClientData = "./ebb-client"
	defaultNATSURL    = "nats://127.0.0.1:4222"
	defaultTenant     = "default"
	connectTimeout    = 2 * time.Second
)

// errUnreachable marks a command that needed the server and could not reach it.
var errUnreachable = errors.New("server unreachable")

// errRefused marks a command whose credentials or certificates the server
// refused; retrying will not help.
var errRefused = errors.New("server refused the connection")

// clientFlags are the flags every client command takes.
type clientFlags struct {
	data   string
	nats   string
	tenant string
	json   bool
	conn   connFlags
	// keyFile encrypts the local store (empty: plaintext).
	keyFile string
	// context names the saved context the defaults came from (--context).
	context string
}

// connFlags are how a client reaches and proves itself to the server.
type connFlags struct {
	tlsCA    string
	tlsCert  string
	tlsKey   string
	user     string
	password string
	// token is a login JWT from the app's identity provider, used instead
	// of a password (see resolveToken).
	token string
}

func (c *connFlags) register(m *Main, fs *flag.FlagSet, cc clientContext) {
	fs.StringVar(&c.tlsCA, "tls-ca", m.env("EBB_TLS_CA", cc.TLSCA), "PEM file of the CA that signed the server's certificate (env EBB_TLS_CA)")
	fs.StringVar(&c.tlsCert, "tls-cert", m.env("EBB_TLS_CERT", cc.TLSCert), "PEM client certificate, for a server that verifies clients (env EBB_TLS_CERT)")
	fs.StringVar(&c.tlsKey, "tls-key", m.env("EBB_TLS_KEY", cc.TLSKey), "PEM key of --tls-cert (env EBB_TLS_KEY)")
	fs.StringVar(&c.user, "user", m.env("EBB_USER", cc.User), "user name; under auth it is also the client id (env EBB_USER)")
	fs.StringVar(&c.password, "password", m.env("EBB_PASSWORD", cc.Password), "password (env EBB_PASSWORD)")
	fs.StringVar(&c.token, "token", m.env("EBB_TOKEN", cc.Token), "login JWT from the app's identity provider, instead of a password; the user defaults to its sub claim (env EBB_TOKEN)")
}

// resolveToken checks a login token before it is sent: it may not come
// with a password, it must not have expired (the server would refuse it
// with nothing but "Authorization Violation"), and without --user the
// user name (the client id and inbox) is its sub claim. The server
// verifies the token; nothing here is trusted.
func (c *connFlags) resolveToken(now time.Time) error {
	if c.token == "" {
		return nil
	}
	if c.password != "" {
		return usagef("--token and --password exclude each other")
	}
	sub, exp, err := jwtlogin.Peek(c.token, "")
	if err != nil {
		return usagef("--token: %v", err)
	}
	if !exp.IsZero() && now.After(exp) {
		return usagef("--token: login token expired at %s: log in again", exp.UTC().Format(time.RFC3339))
	}
	if c.user == "" {
		if sub == "" {
			return usagef("--token: no sub claim; give --user as the server maps it")
		}
		c.user = sub
	}
	return nil
}

// options returns the NATS options for c: TLS, credentials, and the
// user's private inbox prefix, without which a confined user cannot
// receive replies.
func (c *connFlags) options() ([]nats.Option, error) {
	var opts []nats.Option
	tc, err := embedded.LoadClientTLS(c.tlsCA, c.tlsCert, c.tlsKey)
	if err != nil {
		return nil, usagef("%v", err)
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	if err := c.resolveToken(time.Now()); err != nil {
		return nil, err
	}
	switch {
	case c.token != "":
		opts = append(opts, nats.Token(c.token), nats.CustomInboxPrefix(auth.InboxPrefix(c.user)))
	case c.user != "":
		opts = append(opts, nats.UserInfo(c.user, c.password), nats.CustomInboxPrefix(auth.InboxPrefix(c.user)))
	}
	return opts, nil
}

// connect dials url as c. A refused credential or certificate is an error
// wrapping errRefused, anything else one wrapping errUnreachable.
func (c *connFlags) connect(url, name string, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := c.options()
	if err != nil {
		return nil, err
	}
	// Asynchronous errors (a permission violation) are read where they
	// matter (nc.LastError, the publisher's probe); nats.go's default
	// handler would print them as stray lines.
	quiet := nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})
	opts = append(append(opts, nats.Name(name), nats.Timeout(connectTimeout), quiet), extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		// url may hold a password or a token: shown only redacted, and
		// nats.go's error (which may quote it) with it taken out.
		shown, rerr := server.RedactURL(url), server.RedactError(err, url)
		if refused(err) {
			return nil, fmt.Errorf("connect to %s: %w: %w", shown, errRefused, rerr)
		}
		return nil, fmt.Errorf("connect to %s: %w: %w", shown, errUnreachable, rerr)
	}
	return nc, nil
}

// checkTenant asks the server whether user may read tenant, so a user
// confined to another tenant gets a clear error at once instead of
// requests that time out. It sends a direct-get request without a reply
// subject (harmless: the server answers nobody) and flushes: a permission
// violation comes back on the connection before the flush's PONG.
func checkTenant(nc *nats.Conn, user, tenant string) error {
	subj := "$JS.API.DIRECT.GET." + events.StreamChanges + "." + events.TenantChanges(tenant)
	if err := nc.Publish(subj, nil); err != nil {
		return fmt.Errorf("check access to tenant %q: %w", tenant, err)
	}
	if err := nc.FlushTimeout(connectTimeout); err != nil {
		return fmt.Errorf("check access to tenant %q: %w: %w", tenant, errUnreachable, err)
	}
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		return fmt.Errorf("%w: user %q may not access tenant %q: %w", errRefused, user, tenant, err)
	}
	return nil
}

// refused reports whether a connect error is the server refusing us
// (credentials, certificates) rather than being unreachable.
func refused(err error) bool {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var alert tls.AlertError
	var verify *tls.CertificateVerificationError
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return true // a TLS alert from the server, such as "certificate required"
	}
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, embedded.ErrClientCertRequired) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrSecureConnRequired) ||
		errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &alert) || errors.As(err, &verify)
}

func (m *Main) env(name, def string) string {
	if v := m.Getenv(name); v != "" {
		return v
	}
	return def
}

// register binds the client flags. Their defaults come from the
// environment (EBB_*), then from the context cc, then the built-in ones.
func (c *clientFlags) register(m *Main, fs *flag.FlagSet, cc clientContext) {
	fs.StringVar(&c.data, "data", m.env("EBB_DATA", or(cc.Data, defaultClientData)), "client data directory (env EBB_DATA)")
	fs.StringVar(&c.nats, "nats", m.env("EBB_NATS", or(cc.NATS, defaultNATSURL)), "NATS server URL (env EBB_NATS)")
	fs.StringVar(&c.tenant, "tenant", m.env("EBB_TENANT", or(cc.Tenant, defaultTenant)), "tenant (env EBB_TENANT)")
	fs.BoolVar(&c.json, "json", false, "print JSON")
	fs.StringVar(&c.keyFile, "key-file", m.env("EBB_KEY_FILE", cc.KeyFile), "encrypt the local store with this key file: 64 hex digits or a passphrase (env EBB_KEY_FILE)")
	fs.StringVar(&c.context, "context", "", "use this saved context instead of the one in use (env EBB_CONTEXT; see 'ebb context')")
	c.conn.register(m, fs, cc)
}

// or returns v, or def when v is empty.
func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

// parseClient parses a client command line and checks it has exactly the
// positional arguments named in want (a trailing "?" marks one optional).
// extra, if not nil, registers the command's own flags.
func parseClient(m *Main, name string, c *clientFlags, args []string, extra func(*flag.FlagSet), want ...string) ([]string, error) {
	fs := m.newFlagSet(name)
	cc, err := m.selectedContext(contextArg(args))
	if err != nil && m.collectFlags == nil {
		return nil, err
	}
	c.register(m, fs, cc)
	if extra != nil {
		extra(fs)
	}
	if err := m.parse(fs, interleave(fs, args)); err != nil {
		return nil, err
	}
	if err := c.conn.resolveToken(time.Now()); err != nil {
		return nil, err
	}
	required := 0
	for _, w := range want {
		if !strings.HasSuffix(w, "?") {
			required++
		}
	}
	if n := fs.NArg(); n < required || n > len(want) {
		return nil, usagef("ebb %s: want %s, got %d argument(s)", name, strings.Join(want, " "), n)
	}
	if err := events.ValidateName("tenant", c.tenant, events.DefaultLimits.MaxNameBytes); err != nil {
		return nil, usagef("--tenant: %v", err)
	}
	for i, a := range fs.Args() {
		if err := validateArg(want[i], a); err != nil {
			return nil, err
		}
	}
	return fs.Args(), nil
}

// validateArg checks a COLLECTION or ID argument against the contract.
func validateArg(kind, v string) error {
	var err error
	switch strings.TrimSuffix(kind, "?") {
	case "COLLECTION":
		err = events.ValidateName("collection", v, events.DefaultLimits.MaxNameBytes)
	case "ID":
		err = events.ValidateName("doc", v, events.DefaultLimits.MaxDocIDBytes)
	}
	if err != nil {
		return &usageError{err}
	}
	return nil
}

// interleave moves flags that follow positional arguments to the front, so
// `ebb get todos t1 --json` works like `ebb get --json todos t1`.
func interleave(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil {
			if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
				continue
			}
			if i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
		}
	}
	return append(append(flags, "--"), pos...)
}

// clientSession is an open replica and, when the server answered, its connection.
type clientSession struct {
	r       *consumer.Replica
	nc      *nats.Conn // nil: offline
	connErr error      // why nc is nil, when connecting was tried
	tel     *telemetry.Telemetry
}

func (s *clientSession) online() bool { return s.nc != nil }

// Close closes the replica, then the connection, then flushes telemetry
// (a console exporter prints the command's spans now).
func (s *clientSession) Close() error {
	err := s.r.Close()
	if s.nc != nil {
		s.nc.Close()
	}
	return errors.Join(err, shutdownTelemetry(s.tel))
}

// shutdownTelemetry flushes and stops tel, bounded by a few seconds.
func shutdownTelemetry(tel *telemetry.Telemetry) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		return fmt.Errorf("flush telemetry: %w", err)
	}
	return nil
}

// openClient opens the replica in c.data. With connect it also tries the
// server once, briefly; an unreachable server leaves the session offline.
func openClient(ctx context.Context, m *Main, c clientFlags, connect bool) (*clientSession, error) {
	tel, err := telemetry.New(ctx, telemetry.Config{ServiceName: "ebb-client", Getenv: m.Getenv})
	if err != nil {
		return nil, err
	}
	seal, err := c.storeCipher()
	if err != nil {
		_ = shutdownTelemetry(tel)
		return nil, err
	}
	log := slog.New(telemetry.LogHandler(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	// Under auth the client id is the user name (per-client credentials):
	// the server lets a user read only its own receipts. Each data
	// directory is one device of that user: its store mints its own device
	// id, so a second device (or a reinstall) writes beside the first, and
	// a damaged store is refused (see 'ebb doctor'), never replaced.
	r, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: c.data, Tenant: c.tenant, Client: c.conn.user, Logger: log,
		TracerProvider: tel.TracerProvider(), MeterProvider: tel.MeterProvider(), Cipher: seal})
	if err != nil {
		_ = shutdownTelemetry(tel)
		return nil, err
	}
	s := &clientSession{r: r, tel: tel}
	if !connect {
		return s, nil
	}
	nc, err := c.conn.connect(c.nats, "ebb-cli", nats.MaxReconnects(-1))
	if errors.Is(err, ErrUsage) || errors.Is(err, errRefused) {
		// Not an offline state: retrying later will not help, so say so
		// now rather than queue writes that can never be sent.
		_ = s.Close()
		return nil, err
	}
	if err != nil {
		s.connErr = err
		return s, nil
	}
	if c.conn.user != "" {
		if err := checkTenant(nc, c.conn.user, c.tenant); err != nil {
			nc.Close()
			_ = r.Close()
			return nil, err
		}
	}
	if err := r.Attach(ctx, nc); err != nil {
		nc.Close()
		s.connErr = err
		return s, nil
	}
	s.nc = nc
	return s, nil
}

// storeCipher returns the cipher of the local store: nil without
// --key-file (after checking c.data was never opened with a key), else
// the key file's client-store subkey, with the salt and check files in
// c.data (keys.Open). A wrong key is an error wrapping keys.ErrWrongKey.
func (c *clientFlags) storeCipher() (*keys.Cipher, error) {
	if c.keyFile == "" {
		if err := keys.CheckNoKey(c.data); err != nil {
			return nil, fmt.Errorf("open local store: %w", err)
		}
		return nil, nil
	}
	k, err := keys.Open(c.keyFile, c.data)
	if err != nil {
		return nil, fmt.Errorf("open local store: %w", err)
	}
	return k.Cipher(keys.PurposeClient)
}

// parseFields parses a JSON object of fields, saying where it is malformed.
func parseFields(arg string) (events.Fields, error) {
	var fields events.Fields
	err := json.Unmarshal([]byte(arg), &fields)
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		line, col := position(arg, syn.Offset)
		return nil, usagef("bad JSON at line %d, column %d: %v", line, col, syn)
	case errors.As(err, &typ):
		return nil, usagef("bad JSON: want an object of fields, got %s", typ.Value)
	case err != nil:
		return nil, usagef("bad JSON: %v", err)
	case fields == nil:
		return nil, usagef("bad JSON: want an object of fields, got null")
	}
	return fields, nil
}

// position turns a byte offset into a 1-based line and column.
func position(s string, off int64) (line, col int) {
	line, col = 1, 1
	for i, r := range s {
		if int64(i) >= off-1 {
			break
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

// docRecord is the JSON shape of one document in client output.
type docRecord struct {
	Collection string            `json:"collection"`
	ID         string            `json:"id"`
	Version    uint64            `json:"version"`
	Deleted    bool              `json:"deleted"`
	Pending    int               `json:"pending"`
	Conflicts  []events.Conflict `json:"conflicts"`
	Doc        events.Fields     `json:"doc"`
}

func recordOf(d consumer.Doc) docRecord {
	rec := docRecord{Collection: d.Collection, ID: d.ID, Version: d.Version, Deleted: d.Deleted,
		Pending: d.Pending, Conflicts: d.Conflicts, Doc: d.Fields}
	if rec.Conflicts == nil {
		rec.Conflicts = []events.Conflict{}
	}
	if rec.Doc == nil {
		rec.Doc = events.Fields{}
	}
	return rec
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}
