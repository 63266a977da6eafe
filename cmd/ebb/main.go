// Command ebb is the one binary of ebb: the server (`ebb serve`), the client
// commands, and the operator tools. main stays thin: it maps the result of
// Main.Run to an exit code.
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
