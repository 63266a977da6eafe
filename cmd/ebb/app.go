package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
)

// Main is the ebb program with its environment made explicit, so tests run
// it in process.
type Main struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// NewMain returns a Main wired to the process's standard streams and environment.
func NewMain() *Main {
	return &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, m *Main, args []string) error
}

var commands = map[string]command{
	"serve":      {"run the server: embedded NATS JetStream, streams, projector, HTTP", runServe},
	"put":        {"COLLECTION ID JSON: write a whole document (works offline)", runPut},
	"patch":      {"COLLECTION ID JSON: change some fields; null removes one (works offline)", runPatch},
	"delete":     {"COLLECTION ID: delete a document (works offline)", runDelete},
	"resolve":    {"COLLECTION ID JSON: settle a document's open conflict with this value", runResolve},
	"get":        {"COLLECTION ID: print a document, with pending local writes", runGet},
	"ls":         {"COLLECTION: list document ids", runList},
	"conflicts":  {"[COLLECTION]: list open conflicts", runConflicts},
	"rejections": {"list the writes the server refused and why; --dismiss EVENT clears one", runRejections},
	"sync":       {"push pending writes, pull changes, wait for receipts", runSync},
	"watch":      {"[COLLECTION]: print changes as they arrive, one JSON object a line", runWatch},
	"verify":     {"rebuild the view from EVENTS and compare it with the live one", runVerify},
	"status":     {"pending and failed writes, last synced sequence, lag, reachability", runStatus},
	"doctor":     {"check the local store; --reset sets a damaged one aside and starts a new device", runDoctor},
}

// ErrUsage marks a command line that could not be understood or input that
// was refused as invalid; it exits 2.
var ErrUsage = errors.New("usage")

// usageError is an ErrUsage whose message is only what was wrong.
type usageError struct{ err error }

func (e *usageError) Error() string        { return e.err.Error() }
func (e *usageError) Unwrap() error        { return e.err }
func (e *usageError) Is(target error) bool { return target == ErrUsage }

// usagef returns an ErrUsage saying what was wrong with the command line.
func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode maps the result of Run to a process exit code.
func ExitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, ErrUsage):
		return 2
	}
	return 1
}

// Run runs the command line args (without the program name) and reports
// errors as one line on Stderr.
func (m *Main) Run(ctx context.Context, args []string) error {
	err := m.run(ctx, args)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(m.Stderr, "ebb: %v\n", err)
	}
	return err
}

func (m *Main) run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		m.usage()
		if len(args) == 0 {
			return usagef("no command given")
		}
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		return usagef("unknown command %q (run 'ebb help')", args[0])
	}
	return cmd.run(ctx, m, args[1:])
}

func (m *Main) usage() {
	fmt.Fprintln(m.Stdout, "ebb: offline-first sync on NATS JetStream\n\nUsage: ebb <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(m.Stdout, "  %-10s %s\n", n, commands[n].summary)
	}
}

// newFlagSet returns a flag set for a subcommand that reports errors as
// ErrUsage instead of exiting.
func (m *Main) newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("ebb "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by Run
	fs.Usage = func() {}
	return fs
}

// parse parses args and wraps flag errors as ErrUsage; -h prints the
// command's flags on Stdout.
func (m *Main) parse(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(m.Stdout)
		fmt.Fprintf(m.Stdout, "Usage of %s:\n", fs.Name())
		fs.PrintDefaults()
		return err
	case err != nil:
		return usagef("%v", err)
	}
	return nil
}

// logFlags are the logging flags every long-running command takes.
type logFlags struct {
	format string
	level  string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.format, "log-format", "auto", "log format: text, json, or auto (text on a terminal, JSON otherwise)")
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(l.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "auto":
		if isTerminal(w) {
			return slog.New(slog.NewTextHandler(w, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: want text, json or auto", l.format)
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
