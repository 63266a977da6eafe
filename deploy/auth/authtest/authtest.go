// Package authtest starts an "external" nats-server in process from a
// configuration deploy/auth generates (Users.NATSConfig), as an operator
// would include it in their server's config, for tests of ebb against
// an external server.
package authtest

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// MustStartNATS starts nats-server from accounts, an accounts block (the
// output of Users.NATSConfig or `ebb nats-config`), with a client
// listener on loopback at a free port and JetStream stored in
// tb.TempDir(); it is shut down when the test ends. The configuration
// goes through nats-server's own config file parser, so a block it
// refuses fails the test.
func MustStartNATS(tb testing.TB, accounts string) *server.Server {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "nats-server.conf")
	conf := "listen: 127.0.0.1:-1\njetstream: {store_dir: " + strconv.Quote(filepath.Join(dir, "js")) + "}\n" + accounts
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		tb.Fatalf("nats-server refuses %s: %v", path, err)
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("nats-server from %s: %v", path, err)
	}
	ns.Start()
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server not ready for connections within 10s")
	}
	return ns
}
