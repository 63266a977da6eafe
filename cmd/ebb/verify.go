package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/ebbsync/ebb/deploy/server"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/datadir"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/projection"
)

// runVerify rebuilds the view from EVENTS and compares it with the live one
// (DESIGN.md invariant 4). It needs the server's data directory to itself:
// it takes the same lock as `ebb serve` and refuses, naming the holder,
// while a server runs on it. With --nats it reads EVENTS from that server
// instead of starting the embedded one on the data directory. A
// partitioned PostgreSQL view (ebb serve --partitions) is verified
// partition by partition, each up to its own checkpoint; stop every
// server applying it first.
func runVerify(ctx context.Context, m *Main, args []string) error {
	var data, natsURL, view, config string
	var asJSON bool
	fs := m.newFlagSet("verify")
	fs.StringVar(&config, "config", m.Getenv("EBB_CONFIG"), "take --data, --view, --nats and --key-file from this ebb serve config file (env EBB_CONFIG); flags override it")
	fs.StringVar(&data, "data", "./ebb-data", "the server's data directory")
	fs.StringVar(&view, "view", "", "the view: a bbolt file (default view.db in --data) or a PostgreSQL URL postgres://...")
	fs.StringVar(&natsURL, "nats", "", "read EVENTS from this NATS server instead of the embedded one")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
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
	if config != "" {
		fc := defaultServeFile()
		if err := loadServeFile(config, &fc); err != nil {
			return err
		}
		if err := applyEnv(&fc, m.Getenv); err != nil {
			return err
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["data"] {
			data = fc.Data
		}
		if !set["view"] {
			view = fc.View.Path
			if fc.View.PostgresURL != "" {
				view = fc.View.PostgresURL
			}
		}
		if !set["nats"] {
			natsURL = strings.Join(fc.NATS.URLs, ",")
		}
		if !set["key-file"] && fc.Keys.File != "" && m.Getenv("EBB_KEY_FILE") == "" {
			keyFile = fc.Keys.File
		}
	}
	if view == "" {
		view = filepath.Join(data, viewFile)
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
	rs, err := recordedRules(data) // the sync rules serve ran (serve_rules.go)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	sec, err := verifyKeys(keyFile, data)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	live, err := server.OpenView(ctx, view, sec.view, time.Second)
	if err != nil {
		return fmt.Errorf("verify: the live view: %w", err)
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
	rep, err := projection.Verify(ctx, js, live, projection.Config{Policies: policies, Rules: rs})
	if asJSON && (err == nil || errors.Is(err, projection.ErrDiverged)) {
		if perr := printJSON(m.Stdout, verifyRecord{OK: err == nil, Docs: rep.Docs, Checkpoint: rep.Checkpoint,
			LiveHash: rep.LiveHash, RebuiltHash: rep.RebuiltHash, Diff: rep.Diff, Policies: pc.String(), Partitions: rep.Partitions}); perr != nil {
			return perr
		}
	}
	if errors.Is(err, projection.ErrDiverged) {
		if !asJSON {
			fmt.Fprintf(m.Stdout, "DIFFERENT after replaying events 1..%d: %s\n", rep.Checkpoint, rep.Diff)
		}
		return &exitError{code: 1, err: fmt.Errorf("verify: the view differs from its rebuild: %s", rep.Diff)}
	}
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if !asJSON {
		fmt.Fprintf(m.Stdout, "OK: %d documents, events 1..%d replayed, view hash %s%s\n", rep.Docs, rep.Checkpoint, rep.LiveHash, partitionsLine(rep.Partitions))
	}
	return nil
}

// verifyRecord is `ebb verify --json`.
type verifyRecord struct {
	OK          bool   `json:"ok"`
	Docs        int    `json:"docs"`
	Checkpoint  uint64 `json:"checkpoint"`
	LiveHash    string `json:"live_hash"`
	RebuiltHash string `json:"rebuilt_hash"`
	Diff        string `json:"diff,omitempty"`
	Policies    string `json:"policies"`
	// Partitions is each partition's checkpoint, by index, for a
	// partitioned view (ebb serve --partitions): each was rebuilt up to it.
	Partitions []uint64 `json:"partitions,omitempty"`
}

// partitionsLine says, for a partitioned view, how far each partition
// was replayed; "" otherwise.
func partitionsLine(cps []uint64) string {
	if len(cps) == 0 {
		return ""
	}
	parts := make([]string, len(cps))
	for i, cp := range cps {
		parts[i] = fmt.Sprintf("%d: 1..%d", i, cp)
	}
	return fmt.Sprintf("; %d partitions (%s)", len(cps), strings.Join(parts, ", "))
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
