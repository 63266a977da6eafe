package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/events"
)

// serveConfig is what `ebb serve` was asked to do.
type serveConfig struct {
	data       string
	natsListen string
	natsURL    string
	syncEvery  time.Duration
	logs       logFlags
}

func runServe(ctx context.Context, m *Main, args []string) error {
	var c serveConfig
	fs := m.newFlagSet("serve")
	fs.StringVar(&c.data, "data", "./ebb-data", "data directory (JetStream storage and the view)")
	fs.StringVar(&c.natsListen, "nats-listen", embedded.DefaultListen, "address of the embedded NATS server's client listener")
	fs.StringVar(&c.natsURL, "nats", "", "use this existing NATS JetStream server or cluster instead of the embedded one")
	fs.DurationVar(&c.syncEvery, "fsync-interval", 0, "embedded JetStream fsync interval; 0 fsyncs every write before acking")
	c.logs.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: serve takes no arguments, got %q", ErrUsage, fs.Args())
	}
	log, err := c.logs.logger(m.Stderr)
	if err != nil {
		return err
	}

	var nc *nats.Conn
	if c.natsURL == "" {
		srv, err := embedded.Start(ctx, embedded.Config{
			Dir:    filepath.Join(c.data, "jetstream"),
			Listen: c.natsListen,
			Sync:   embedded.SyncPolicy{Interval: c.syncEvery},
			Logger: log,
		})
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				log.Error("shut down embedded nats", "err", err)
			}
		}()
		if nc, err = srv.Connect(nats.Name("ebb-serve")); err != nil {
			return fmt.Errorf("serve: connect to embedded nats: %w", err)
		}
		c.natsURL = srv.ClientURL()
	} else if nc, err = nats.Connect(c.natsURL, nats.Name("ebb-serve"), nats.MaxReconnects(-1)); err != nil {
		return fmt.Errorf("serve: connect to %s: %w", c.natsURL, err)
	}
	defer nc.Close()

	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("serve: jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = events.EnsureStreams(sctx, js, events.StreamOptions{})
	cancel()
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("ebb ready", "nats", c.natsURL, "data", c.data)
	<-ctx.Done()
	log.Info("ebb shutting down")
	return nil
}
