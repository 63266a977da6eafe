// Command ebb is the one binary of ebb: the server (`ebb serve`), the client
// commands, and the operator tools. main stays thin: it maps the result of
// Main.Run to an exit code: 0 ok, 1 failure, 2 usage (a command line,
// configuration or input that could not be used); every error is one line
// on stderr.
//
// Each subcommand is one entry in the command table (app.go) and one file;
// its entry holds the arguments, notes and examples `ebb help CMD` prints.
// `ebb serve` layers its settings: defaults, a YAML file (--config),
// EBB_SERVE_* variables, flags (config.go). Client commands take their
// defaults from EBB_* variables, then from the saved context in use
// (context.go).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := NewMain()
	os.Exit(ExitCode(m.Run(ctx, os.Args[1:])))
}
