package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/events"
)

// pushTimeout bounds how long a write command waits to push and hear back
// once connected; the write is durable locally either way.
const pushTimeout = 10 * time.Second

func runPut(ctx context.Context, m *Main, args []string) error {
	return runWrite(ctx, m, "put", args, "COLLECTION", "ID", "JSON")
}

func runPatch(ctx context.Context, m *Main, args []string) error {
	return runWrite(ctx, m, "patch", args, "COLLECTION", "ID", "JSON")
}

func runDelete(ctx context.Context, m *Main, args []string) error {
	return runWrite(ctx, m, "delete", args, "COLLECTION", "ID")
}

func runResolve(ctx context.Context, m *Main, args []string) error {
	return runWrite(ctx, m, "resolve", args, "COLLECTION", "ID", "JSON")
}

// runWrite appends one write to the local log, then pushes it when the
// server is reachable. It succeeds offline.
func runWrite(ctx context.Context, m *Main, op string, args []string, want ...string) error {
	var c clientFlags
	pos, err := parseClient(m, op, &c, args, nil, want...)
	if err != nil {
		return err
	}
	coll, id := pos[0], pos[1]
	var fields events.Fields
	if len(pos) > 2 {
		if fields, err = parseFields(pos[2]); err != nil {
			return err
		}
	}
	s, err := openClient(ctx, m, c, true)
	if err != nil {
		return err
	}
	defer s.Close()

	var doc consumer.Doc
	switch op {
	case "put":
		doc, err = s.r.Put(ctx, coll, id, fields)
	case "patch":
		doc, err = s.r.Patch(ctx, coll, id, fields)
	case "delete":
		doc, err = s.r.Delete(ctx, coll, id)
	case "resolve":
		doc, err = resolve(ctx, s.r, coll, id, fields)
	}
	if err != nil {
		return usageIfInvalid(fmt.Errorf("%s %s/%s: %w", op, coll, id, err))
	}

	state := "queued, offline"
	if s.online() {
		sctx, cancel := context.WithTimeout(ctx, pushTimeout)
		_, err := s.r.Sync(sctx)
		cancel()
		switch {
		case err == nil:
			state = "synced"
		case errors.Is(err, context.DeadlineExceeded):
			state = "pushed, no receipt yet"
		default:
			state = "queued (" + err.Error() + ")"
		}
		if d, err := s.r.Get(ctx, coll, id); err == nil || errors.Is(err, consumer.ErrNotFound) {
			doc = d
		}
	}
	if c.json {
		rec := recordOf(doc)
		return printJSON(m.Stdout, struct {
			docRecord
			State string `json:"state"`
		}{rec, state})
	}
	fmt.Fprintf(m.Stdout, "%s %s/%s: %s\n", op, coll, id, state)
	return nil
}

// resolve settles the document's open conflict with fields.
func resolve(ctx context.Context, r *consumer.Replica, coll, id string, fields events.Fields) (consumer.Doc, error) {
	d, err := r.Get(ctx, coll, id)
	if err != nil && !errors.Is(err, consumer.ErrNotFound) {
		return consumer.Doc{}, err
	}
	switch len(d.Conflicts) {
	case 0:
		return consumer.Doc{}, usagef("no open conflict on %s/%s (run 'ebb sync' to fetch new ones)", coll, id)
	case 1:
	default:
		// Resolving the oldest first keeps the history in order; the
		// resolved state replaces the document either way.
	}
	return r.Resolve(ctx, coll, id, d.Conflicts[0].ID, fields)
}

// usageIfInvalid turns a contract violation (a bad name, a limit, a field
// value) into a usage error that prints just what was wrong, so it exits 2
// with one clear line.
func usageIfInvalid(err error) error {
	var fe *events.FieldError
	if errors.As(err, &fe) {
		return &usageError{fe}
	}
	return err
}
