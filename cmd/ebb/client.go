package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/consumer"
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

// clientFlags are the flags every client command takes.
type clientFlags struct {
	data   string
	nats   string
	tenant string
	json   bool
}

func (m *Main) env(name, def string) string {
	if v := m.Getenv(name); v != "" {
		return v
	}
	return def
}

func (c *clientFlags) register(m *Main, fs *flag.FlagSet) {
	fs.StringVar(&c.data, "data", m.env("EBB_DATA", defaultClientData), "client data directory (env EBB_DATA)")
	fs.StringVar(&c.nats, "nats", m.env("EBB_NATS", defaultNATSURL), "NATS server URL (env EBB_NATS)")
	fs.StringVar(&c.tenant, "tenant", m.env("EBB_TENANT", defaultTenant), "tenant (env EBB_TENANT)")
	fs.BoolVar(&c.json, "json", false, "print JSON")
}

// parseClient parses a client command line and checks it has exactly the
// positional arguments named in want (a trailing "?" marks one optional).
// extra, if not nil, registers the command's own flags.
func parseClient(m *Main, name string, c *clientFlags, args []string, extra func(*flag.FlagSet), want ...string) ([]string, error) {
	fs := m.newFlagSet(name)
	c.register(m, fs)
	if extra != nil {
		extra(fs)
	}
	if err := m.parse(fs, interleave(fs, args)); err != nil {
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
	r  *consumer.Replica
	nc *nats.Conn // nil: offline
}

func (s *clientSession) online() bool { return s.nc != nil }

// Close closes the replica, then the connection.
func (s *clientSession) Close() error {
	err := s.r.Close()
	if s.nc != nil {
		s.nc.Close()
	}
	return err
}

// openClient opens the replica in c.data. With connect it also tries the
// server once, briefly; an unreachable server leaves the session offline.
func openClient(ctx context.Context, m *Main, c clientFlags, connect bool) (*clientSession, error) {
	log := slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r, err := consumer.OpenReplica(ctx, consumer.ReplicaConfig{Dir: c.data, Tenant: c.tenant, Logger: log})
	if err != nil {
		return nil, err
	}
	s := &clientSession{r: r}
	if !connect {
		return s, nil
	}
	nc, err := nats.Connect(c.nats, nats.Name("ebb-cli"), nats.Timeout(connectTimeout), nats.MaxReconnects(-1))
	if err != nil {
		return s, nil
	}
	if err := r.Attach(ctx, nc); err != nil {
		nc.Close()
		return s, nil
	}
	s.nc = nc
	return s, nil
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
