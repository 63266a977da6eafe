package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/cmd/ebb/internal/datadir"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/projection"
)

// runVerify rebuilds the view from EVENTS and compares it with the live one
// (DESIGN.md invariant 4). It needs the server's data directory to itself:
// it takes the same lock as `ebb serve` and refuses, naming the holder,
// while a server runs on it. With --nats it reads EVENTS from that server
// instead of starting the embedded one on the data directory.
func runVerify(ctx context.Context, m *Main, args []string) error {
	var data, natsURL string
	fs := m.newFlagSet("verify")
	fs.StringVar(&data, "data", "./ebb-data", "the server's data directory")
	fs.StringVar(&natsURL, "nats", "", "read EVENTS from this NATS server instead of the embedded one")
	var conn connFlags
	conn.register(m, fs, clientContext{})
	var keyFile string
	fs.StringVar(&keyFile, "key-file", m.env("EBB_KEY_FILE", ""), "the key file ebb serve encrypts the data directory with (env EBB_KEY_FILE)")
	if err := m.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("verify takes no arguments, got %q", fs.Args())
	}
	// The same lock as ebb serve's, taken before anything in data is read:
	// verify starts nats-server on the data directory's JetStream storage.
	lock, err := datadir.Acquire(data, datadir.Options{Command: "ebb verify"})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer lock.Release()
	pc, err := loadPolicies(data)
	if err != nil {
		return err
	}
	policies, err := pc.resolve(projection.NewRegistry())
	if err != nil {
		return err
	}
	sec, err := verifyKeys(keyFile, data)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	live, err := projection.OpenBolt(filepath.Join(data, viewFile), projection.BoltOptions{Timeout: time.Second, Cipher: sec.view})
	if err != nil {
		return fmt.Errorf("verify: open the live view in %s: %w", data, err)
	}
	defer live.Close()

	var nc *nats.Conn
	if natsURL != "" {
		nc, err = conn.connect(natsURL, "ebb-verify")
	} else {
		var srv *embedded.Server
		srv, err = embedded.Start(ctx, embedded.Config{Dir: filepath.Join(data, "jetstream"), DontListen: true, JetStreamKey: sec.jsKey})
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		defer srv.Shutdown(context.WithoutCancel(ctx))
		nc, err = srv.Connect()
	}
	if err != nil {
		return fmt.Errorf("verify: connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	rep, err := projection.Verify(ctx, js, live, projection.Config{Policies: policies})
	if errors.Is(err, projection.ErrDiverged) {
		fmt.Fprintf(m.Stdout, "DIFFERENT after replaying events 1..%d: %s\n", rep.Checkpoint, rep.Diff)
		return &exitError{code: 1, err: fmt.Errorf("verify: the view differs from its rebuild: %s", rep.Diff)}
	}
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	fmt.Fprintf(m.Stdout, "OK: %d documents, events 1..%d replayed, view hash %s\n", rep.Docs, rep.Checkpoint, rep.LiveHash)
	return nil
}

// verifyKeys reads the key the server data directory data is encrypted
// with (none without keyFile, after checking data never had one): the
// JetStream key and the view's cipher, as ebb serve derives them.
func verifyKeys(keyFile, data string) (security, error) {
	var sec security
	if keyFile == "" {
		return sec, keys.CheckNoKey(data)
	}
	k, err := keys.Open(keyFile, data)
	if err != nil {
		return sec, err
	}
	sec.jsKey = k.Derive(keys.PurposeJetStream)
	sec.view, err = k.Cipher(keys.PurposeView)
	return sec, err
}
