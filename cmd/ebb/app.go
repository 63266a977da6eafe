package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
)

// Main is the ebb program with its environment made explicit, so tests run
// it in process.
type Main struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string

	// collectFlags, when set, receives each command's flag set instead of
	// the command running (shell completion lists the flags this way).
	collectFlags func(*flag.FlagSet)
}

// NewMain returns a Main wired to the process's standard streams and environment.
func NewMain() *Main {
	return &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// command is one subcommand. Its help (`ebb help NAME`, `ebb NAME --help`)
// is built from these fields and the flags the command registers; each
// subcommand lives in its own file and is added to commands below.
type command struct {
	summary string   // one line, what it does
	args    string   // positional arguments, as in "COLLECTION ID JSON"; "" for none
	about   string   // optional paragraph: what the arguments mean, what to know
	example string   // one or more command lines, one a line
	verbs   []string // for a noun with verbs (policy, context): its verbs, for completion
	run     func(ctx context.Context, m *Main, args []string) error
}

// docArg is the help paragraph of commands that take a JSON document.
const docArg = "JSON is a JSON object of fields, @FILE to read it from FILE, or - to read it from stdin."

// commands are the subcommands by name. It is filled in init because help
// and completion read it.
var commands map[string]command

func init() {
	commands = map[string]command{
		"serve": {summary: "run the server: embedded NATS JetStream, streams, projector, HTTP",
			about:   "Settings come from --config FILE (YAML; env EBB_CONFIG), then EBB_SERVE_* environment variables, then flags. --print-config prints the effective configuration. Without any policy setting a server on a built view uses the policies recorded in its data directory.",
			example: "ebb serve --policy todos=manual\nebb serve --config /etc/ebb/ebb.yaml\nebb serve --config ebb.yaml --print-config --json", run: runServe},
		"nats-config": {summary: "print the accounts block of an external NATS server's config for a users file (--rules: filtered reads)",
			about:   natsConfigAbout,
			example: "ebb nats-config --auth users.yaml -o nats-auth.conf\nebb nats-config --auth users.yaml --rules rules.yaml -o /etc/nats/nats-auth.conf", run: runNATSConfig},
		"put": {summary: "write a whole document (works offline)", args: "COLLECTION ID JSON", about: docArg,
			example: "ebb put todos t1 '{\"title\":\"milk\"}'\nebb put todos t2 @doc.json\ncat doc.json | ebb put todos t3 -", run: runPut},
		"patch": {summary: "change some fields; null removes one (works offline)", args: "COLLECTION ID JSON", about: docArg,
			example: "ebb patch todos t1 '{\"done\":true}'", run: runPatch},
		"delete": {summary: "delete a document (works offline)", args: "COLLECTION ID",
			example: "ebb delete todos t1", run: runDelete},
		"resolve": {summary: "settle a document's open conflict with this value", args: "COLLECTION ID JSON", about: docArg,
			example: "ebb resolve lists l1 '{\"name\":\"groceries\"}'", run: runResolve},
		"get": {summary: "print a document, with pending local writes", args: "COLLECTION ID",
			example: "ebb get todos t1\nebb get todos t1 --json", run: runGet},
		"ls": {summary: "list document ids", args: "COLLECTION",
			example: "ebb ls todos", run: runList},
		"conflicts": {summary: "list open conflicts", args: "[COLLECTION]",
			example: "ebb conflicts\nebb conflicts lists --json", run: runConflicts},
		"history": {summary: "a document's conflict records on the server: open, resolved, and what lww and merge overwrote", args: "COLLECTION ID",
			example: "ebb history lists l1\nebb history todos t1 --http https://ebb.example:8080 --json", run: runHistory},
		"rejections": {summary: "list the writes the server refused and why; --dismiss EVENT clears one",
			example: "ebb rejections\nebb rejections --dismiss 01J9Z8Q2V7XW3K5M6N8P0R2T4Y", run: runRejections},
		"sync": {summary: "push pending writes, pull changes, wait for receipts",
			example: "ebb sync\nebb sync --timeout 1m --json", run: runSync},
		"watch": {summary: "print changes as they arrive, one JSON object a line", args: "[COLLECTION]",
			example: "ebb watch todos\nebb watch --all", run: runWatch},
		"verify": {summary: "rebuild the view from EVENTS and compare it with the live one (server stopped)",
			example: "ebb verify --data ./ebb-data\nebb verify --config ebb.yaml --json", run: runVerify},
		"status": {summary: "pending and failed writes, last synced sequence, lag, reachability",
			example: "ebb status\nebb status --json", run: runStatus},
		"doctor": {summary: "check the local store; --reset sets a damaged one aside and starts a new device",
			example: "ebb doctor\nebb doctor --reset", run: runDoctor},
		"policy": {summary: "show or change the conflict policies recorded in a server's data directory", args: "show | set COLLECTION POLICY",
			about:   "POLICY is lww, merge, reject or manual. set works offline (server stopped) and refuses a change verify could not replay: see 'ebb policy set --help'.",
			example: "ebb policy show --data ./ebb-data\nebb policy set todos manual --data ./ebb-data", verbs: []string{"show", "set"}, run: runPolicy},
		"context": {summary: "save and select client settings (server, tenant, user, data directory)", args: "save NAME | use NAME | ls | show [NAME] | rm NAME",
			about:   "A context holds the client flags a user would otherwise export as EBB_* variables. Flags beat environment variables, which beat the context in use (--context NAME, env EBB_CONTEXT, or 'ebb context use'). Contexts live in $XDG_CONFIG_HOME/ebb (default ~/.config/ebb).",
			example: "ebb context save alice --nats nats://127.0.0.1:4222 --tenant acme --user alice --data ./alice\nebb context use alice\nebb context ls", verbs: []string{"save", "use", "ls", "show", "rm"}, run: runContext},
		"dead": {summary: "list, show and replay the dead letters: messages the projector refused, with why", args: "list | show ID | replay ID|--all",
			about:   deadAbout,
			example: "ebb dead list\nebb dead list --tenant acme --json\nebb dead show 17\nebb dead replay 17\nebb dead replay --all --tenant acme", verbs: []string{"list", "show", "replay"}, run: runDead},
		"streams": {summary: "the state of EVENTS, CHANGES, RECEIPTS and DEAD, and the projector's lag",
			about:   "Read from the server's JetStream while it serves: messages, bytes, first and last sequence, replicas; and per projector durable (one per partition) the last EVENTS sequence it acknowledged and its lag behind EVENTS. With --http, also the checkpoint one server committed, from its /metrics (with --partitions, the lowest over the partitions it applies).",
			example: "ebb streams\nebb streams --http http://127.0.0.1:8080\nebb streams --nats nats://ebb.example:4222 --json", run: runStreams},
		"backup": {summary: "back up a server while it serves: its streams (EVENTS first of all) and its policies", args: "DIR|FILE.tar",
			about:   backupAbout,
			example: "ebb backup ./backup-2026-12-01\nebb backup --nats nats://ebb.example:4222 --data /var/lib/ebb ebb.tar", run: runBackup},
		"restore": {summary: "restore a backup into a new data directory (or an external NATS), ready to serve", args: "DIR|FILE.tar",
			about:   restoreAbout,
			example: "ebb restore --data ./ebb-data ./backup-2026-12-01\nebb restore --nats nats://nats.example:4222 --view postgres://ebb@db/ebb ebb.tar", run: runRestore},
		"bench": {summary: "measure ebb beside raw JetStream on the same server: push, projector, catch-up, writes, latency", about: benchAbout, example: "ebb bench --quick\nebb bench --json > bench.json\nebb bench --only push,projector --rounds 5", run: runBench},
		"version": {summary: "print the version, VCS revision and Go version of this binary",
			example: "ebb version\nebb version --json", run: runVersion},
		"completion": {summary: "print a shell completion script", args: "bash | zsh | fish",
			example: "source <(ebb completion bash)\nebb completion zsh > \"${fpath[1]}/_ebb\"\nebb completion fish > ~/.config/fish/completions/ebb.fish", verbs: []string{"bash", "zsh", "fish"}, run: runCompletion},
		"help": {summary: "show the commands, or one command's arguments, flags and example", args: "[COMMAND]",
			example: "ebb help\nebb help put", run: runHelp},
	}
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
	if len(args) == 0 {
		m.usage()
		return usagef("no command given")
	}
	switch args[0] {
	case "-h", "-help", "--help":
		m.usage()
		return nil
	case "-v", "-version", "--version":
		return runVersion(ctx, m, args[1:])
	}
	cmd, ok := commands[args[0]]
	if !ok {
		return usagef("unknown command %q (run 'ebb help')", args[0])
	}
	return cmd.run(ctx, m, args[1:])
}

// runHelp prints the command list, or with a command name that command's
// help (the same as `ebb NAME --help`).
func runHelp(ctx context.Context, m *Main, args []string) error {
	switch {
	case len(args) == 0:
		m.usage()
		return nil
	case len(args) > 1:
		return usagef("ebb help: want [COMMAND], got %d arguments", len(args))
	case args[0] == "help":
		m.commandHelp("help", nil)
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		return usagef("unknown command %q (run 'ebb help')", args[0])
	}
	err := cmd.run(ctx, m, []string{"--help"})
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func (m *Main) usage() {
	fmt.Fprintln(m.Stdout, "ebb: offline-first sync on NATS JetStream\n\nUsage: ebb <command> [arguments] [flags]\n\nCommands:")
	for _, n := range slices.Sorted(maps.Keys(commands)) {
		fmt.Fprintf(m.Stdout, "  %-11s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(m.Stdout, "\nRun 'ebb help COMMAND' or 'ebb COMMAND --help' for a command's arguments, flags and examples.")
}

// commandHelp prints the help of the command name: usage line, summary,
// notes, examples and, when fs is not nil, its flags.
func (m *Main) commandHelp(name string, fs *flag.FlagSet) {
	cmd := commands[strings.Fields(name)[0]]
	usage := "ebb " + name
	if cmd.args != "" && !strings.Contains(name, " ") {
		usage += " " + cmd.args
	}
	fmt.Fprintf(m.Stdout, "Usage: %s [flags]\n\n%s\n", usage, cmd.summary)
	if cmd.about != "" {
		fmt.Fprintf(m.Stdout, "\n%s\n", cmd.about)
	}
	if cmd.example != "" {
		fmt.Fprintln(m.Stdout, "\nExamples:")
		for _, l := range strings.Split(cmd.example, "\n") {
			fmt.Fprintf(m.Stdout, "  %s\n", l)
		}
	}
	n := 0
	if fs != nil {
		fs.VisitAll(func(*flag.Flag) { n++ })
	}
	if n > 0 {
		fmt.Fprintln(m.Stdout, "\nFlags:")
		fs.SetOutput(m.Stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
}

// newFlagSet returns a flag set for a subcommand that reports errors as
// ErrUsage instead of exiting. name is the command ("put") or, for a
// command with verbs, the command and verb ("policy set").
func (m *Main) newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("ebb "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by Run
	fs.Usage = func() {}
	return fs
}

// parse parses args and wraps flag errors as ErrUsage; -h and --help print
// the command's help on Stdout and return flag.ErrHelp (exit 0). While
// completion collects flags (m.collectFlags set), it hands fs over instead
// of parsing.
func (m *Main) parse(fs *flag.FlagSet, args []string) error {
	if m.collectFlags != nil {
		m.collectFlags(fs)
		return flag.ErrHelp
	}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		m.commandHelp(strings.TrimPrefix(fs.Name(), "ebb "), fs)
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
