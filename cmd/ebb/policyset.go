package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/datadir"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// errPolicyHistory is a policy change `ebb policy set` refuses because
// ebb verify could not replay it: projection.Verify replays every event
// under one set of policies, so a collection's policy can change only
// before its first event.
var errPolicyHistory = errors.New("the policy of a collection with events cannot change")

// runPolicy is `ebb policy show|set`.
func runPolicy(ctx context.Context, m *Main, args []string) error {
	if len(args) == 0 {
		return usagef("ebb policy: want show or set (run 'ebb policy --help')")
	}
	switch args[0] {
	case "show":
		return runPolicyShow(m, args[1:])
	case "set":
		return runPolicySet(ctx, m, args[1:])
	case "-h", "-help", "--help":
		m.commandHelp("policy", nil)
		return flag.ErrHelp
	}
	return usagef("ebb policy: unknown verb %q (want show or set)", args[0])
}

// policyRecord is `ebb policy show --json`.
type policyRecord struct {
	Data        string            `json:"data"`
	Default     string            `json:"default"`
	Collections map[string]string `json:"collections"`
	History     []policyChange    `json:"history"`
}

func runPolicyShow(m *Main, args []string) error {
	var data string
	var asJSON bool
	fs := m.newFlagSet("policy show")
	fs.StringVar(&data, "data", "./ebb-data", "the server's data directory")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := m.parse(fs, interleave(fs, args)); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("ebb policy show takes no arguments, got %q", fs.Args())
	}
	pc, err := loadPolicies(data)
	if err != nil {
		return err
	}
	if asJSON {
		rec := policyRecord{Data: data, Default: pc.Default, Collections: pc.Collections, History: pc.History}
		if rec.Collections == nil {
			rec.Collections = map[string]string{}
		}
		if rec.History == nil {
			rec.History = []policyChange{}
		}
		return printJSON(m.Stdout, rec)
	}
	fmt.Fprintf(m.Stdout, "%s\n", pc)
	for _, h := range pc.History {
		fmt.Fprintf(m.Stdout, "  %s: %s %s -> %s after EVENTS sequence %d\n", h.At.Format(time.RFC3339), h.Collection, h.From, h.To, h.After)
	}
	return nil
}

// runPolicySet changes one collection's recorded policy, offline: it
// takes the data directory's lock (refused while a server runs on it),
// and allows the change only when ebb verify can still replay the view:
// the view is empty, or EVENTS holds no event of the collection. The
// change is recorded with the EVENTS sequence after which it is in force.
func runPolicySet(ctx context.Context, m *Main, args []string) error {
	var data, view, natsURL, keyFile string
	var asJSON bool
	fs := m.newFlagSet("policy set")
	fs.StringVar(&data, "data", "./ebb-data", "the server's data directory")
	fs.StringVar(&view, "view", "", "the view's bbolt file (default view.db in --data)")
	fs.StringVar(&natsURL, "nats", "", "read EVENTS from this NATS server instead of the embedded one in --data")
	fs.StringVar(&keyFile, "key-file", m.env("EBB_KEY_FILE", ""), "the key file ebb serve encrypts the data directory with (env EBB_KEY_FILE)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	var conn connFlags
	conn.register(m, fs, clientContext{})
	if err := m.parse(fs, interleave(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("ebb policy set: want COLLECTION POLICY, got %d argument(s)", fs.NArg())
	}
	coll, name := fs.Arg(0), fs.Arg(1)
	if err := validateArg("COLLECTION", coll); err != nil {
		return err
	}
	if view == "" {
		view = filepath.Join(data, viewFile)
	}
	lock, err := datadir.Acquire(data, datadir.Options{Command: "ebb policy set"})
	if err != nil {
		return fmt.Errorf("policy set: %w", err)
	}
	defer lock.Release()
	prev, err := loadPolicies(data)
	if err != nil {
		return err
	}
	next := prev
	next.Collections = maps.Clone(prev.Collections)
	if next.Collections == nil {
		next.Collections = map[string]string{}
	}
	next.Collections[coll] = name
	if _, err := next.resolve(projection.NewRegistry()); err != nil {
		return err
	}
	from := prev.Collections[coll]
	if from == "" {
		from = prev.Default
		if from == "" {
			from = "lww"
		}
	}
	if from == name {
		next.History = prev.History
		if err := next.save(data); err != nil {
			return fmt.Errorf("policy set: %w", err)
		}
		return printPolicySet(m, asJSON, next, "unchanged", coll, name)
	}

	sec, err := verifyKeys(keyFile, data)
	if err != nil {
		return fmt.Errorf("policy set: %w", err)
	}
	store, err := projection.OpenBolt(view, projection.BoltOptions{Timeout: time.Second, Cipher: sec.view})
	if err != nil {
		return fmt.Errorf("policy set: open the view %s: %w", view, err)
	}
	cp, err := store.Checkpoint(ctx)
	store.Close()
	if err != nil {
		return fmt.Errorf("policy set: read the view's checkpoint: %w", err)
	}
	if cp > 0 {
		n, err := collectionEvents(ctx, data, natsURL, conn, sec.jsKey, coll)
		if err != nil {
			return fmt.Errorf("policy set: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("policy set %s %s: %w: EVENTS holds %d event(s) of %s applied under %s, and ebb verify replays every event under one set of policies (projection.Verify has no policy history yet), so it would report differences that are not there. Use a new data directory for the new policy", coll, name, errPolicyHistory, n, coll, from)
		}
	}
	next.History = append(slices.Clone(prev.History), policyChange{After: cp, Collection: coll, From: from, To: name, At: time.Now().UTC()})
	if err := next.save(data); err != nil {
		return fmt.Errorf("policy set: %w", err)
	}
	return printPolicySet(m, asJSON, next, "changed", coll, name)
}

func printPolicySet(m *Main, asJSON bool, pc policyConfig, state, coll, name string) error {
	if asJSON {
		return printJSON(m.Stdout, struct {
			State      string `json:"state"`
			Collection string `json:"collection"`
			Policy     string `json:"policy"`
		}{state, coll, name})
	}
	fmt.Fprintf(m.Stdout, "policy of %s: %s (%s); now %s\n", coll, name, state, pc)
	return nil
}

// collectionEvents counts the events of collection coll in EVENTS, read
// from the embedded server in data (started without a listener) or from
// natsURL.
func collectionEvents(ctx context.Context, data, natsURL string, conn connFlags, jsKey []byte, coll string) (int, error) {
	var nc *nats.Conn
	var err error
	if natsURL != "" {
		nc, err = conn.connect(natsURL, "ebb-policy")
	} else {
		var srv *embedded.Server
		srv, err = embedded.Start(ctx, embedded.Config{Dir: filepath.Join(data, "jetstream"), DontListen: true, JetStreamKey: jsKey})
		if err != nil {
			return 0, err
		}
		defer srv.Shutdown(context.WithoutCancel(ctx))
		nc, err = srv.Connect()
	}
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	st, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", events.StreamEvents, err)
	}
	filter := events.EventsPrefix + ".*.*." + events.EncodeToken(coll) + ".*"
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, fmt.Errorf("stream %s subjects %s: %w", events.StreamEvents, filter, err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n, nil
}
