package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/events"
)

func runWatch(ctx context.Context, m *Main, args []string) error {
	var c clientFlags
	var all bool
	pos, err := parseClient(m, "watch", &c, args, func(fs *flag.FlagSet) {
		fs.BoolVar(&all, "all", false, "start with the current state of every document, then follow")
	}, "COLLECTION?")
	if err != nil {
		return err
	}
	nc, err := c.conn.connect(c.nats, "ebb-watch", nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	if c.conn.user != "" {
		if err := checkTenant(nc, c.conn.user, c.tenant); err != nil {
			nc.Close()
			return fmt.Errorf("watch: %w", err)
		}
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	var colls []string
	if len(pos) == 1 {
		colls = pos
	}
	var from uint64 // 0: the current state of every document first
	if !all {
		st, err := js.Stream(ctx, events.StreamChanges)
		if err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		from = st.CachedInfo().State.LastSeq + 1
	}
	w, err := consumer.Watch(ctx, js, consumer.WatchConfig{Tenant: c.tenant, Collections: colls, From: from,
		Handler: func(ctx context.Context, ch *events.Change) error { return printJSON(m.Stdout, ch) }})
	if err != nil {
		return usageIfInvalid(fmt.Errorf("watch: %w", err))
	}
	defer w.Stop()
	select {
	case <-ctx.Done():
	case <-w.Done():
		if err := w.Err(); err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("watch: %w", err)
		}
	}
	return nil
}
