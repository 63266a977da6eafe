// Package embeddedtest holds test helpers that run a real in-process
// nats-server with JetStream (package embedded) for tests across ebb.
//
// A typical test:
//
//	s := embeddedtest.MustStart(t)
//	nc := embeddedtest.MustConnect(t, s)
//	js := embeddedtest.MustJetStream(t, nc)
//
// To take the server down and bring it back on the same storage and the same
// port (clients configured with nats.MaxReconnects(-1) reconnect by
// themselves), shut it down and restart it from its effective config:
//
//	cfg := s.Config() // Dir and Listen with the bound port, e.g. 127.0.0.1:41234
//	s.Shutdown(ctx)
//	// ... exercise the offline path ...
//	s = embeddedtest.MustStart(t, embeddedtest.WithConfig(cfg))
//
// or, in one step, s = embeddedtest.MustRestart(t, s).
package embeddedtest

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
)

// shutdownTimeout bounds the Shutdown run in tb.Cleanup.
const shutdownTimeout = 30 * time.Second

// MustStart starts an embedded server for tb with storage in tb.TempDir() on a
// random loopback port (127.0.0.1:-1), applies opts to the Config in order,
// and shuts the server down in tb.Cleanup. It fails tb if the server does not
// start.
func MustStart(tb testing.TB, opts ...func(*embedded.Config)) *embedded.Server {
	tb.Helper()
	cfg := embedded.Config{Dir: tb.TempDir(), Listen: "127.0.0.1:-1"}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := embedded.Start(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("embeddedtest: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			tb.Errorf("embeddedtest: %v", err)
		}
	})
	return s
}

// MustRestart shuts s down (if it is still running) and starts a new server
// with s's effective config: the same Dir, the same bound port, the same
// options. The new server is shut down in tb.Cleanup.
func MustRestart(tb testing.TB, s *embedded.Server) *embedded.Server {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), shutdownTimeout)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		tb.Fatalf("embeddedtest: restart: %v", err)
	}
	return MustStart(tb, WithConfig(s.Config()))
}

// WithConfig replaces the whole Config, for example with the result of
// Server.Config to restart on the same Dir and port.
func WithConfig(cfg embedded.Config) func(*embedded.Config) {
	return func(c *embedded.Config) { *c = cfg }
}

// InProcess makes the server listen on no port; clients connect in process.
func InProcess() func(*embedded.Config) {
	return func(c *embedded.Config) { c.DontListen, c.Listen = true, "" }
}

// MustConnect connects to s (see embedded.Server.Connect) and closes the
// connection in tb.Cleanup. It fails tb if the connection fails.
func MustConnect(tb testing.TB, s *embedded.Server, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := s.Connect(opts...)
	if err != nil {
		tb.Fatalf("embeddedtest: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// MustJetStream returns a JetStream context on nc. It fails tb on error.
func MustJetStream(tb testing.TB, nc *nats.Conn, opts ...jetstream.JetStreamOpt) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		tb.Fatalf("embeddedtest: jetstream: %v", err)
	}
	return js
}

// WaitFor polls cond until it holds, failing tb with what was awaited when
// timeout passes first. Tests wait on a condition with a deadline this way
// instead of sleeping for asynchronous work.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// Buffer is a bytes.Buffer safe for concurrent writers and readers: give it
// as the log output of a server or a command and read it while they run.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
