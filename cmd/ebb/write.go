package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
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
		doc, from, err := m.readDoc(pos[2])
		if err != nil {
			return err
		}
		if fields, err = parseFields(doc); err != nil {
			if from != "" {
				return usagef("%s: %v", from, err)
			}
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

	out := writeOutcome{State: "queued, offline"}
	last, ok, err := s.r.Log().LastEntry(ctx)
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", op, coll, id, err)
	}
	if ok {
		out.Event = last.Event.ID
	}
	if s.online() {
		sctx, cancel := context.WithTimeout(ctx, pushTimeout)
		_, serr := s.r.Sync(sctx)
		cancel()
		if out, err = outcomeOf(ctx, s, out.Event, serr); err != nil {
			return fmt.Errorf("%s %s/%s: %w", op, coll, id, err)
		}
		if d, err := s.r.Get(ctx, coll, id); err == nil || errors.Is(err, consumer.ErrNotFound) {
			doc = d
		}
	}
	if c.json {
		rec := recordOf(doc)
		if err := printJSON(m.Stdout, struct {
			docRecord
			writeOutcome
		}{rec, out}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(m.Stdout, "%s %s/%s: %s\n", op, coll, id, out.text())
	}
	if out.failed() {
		return errRefusedWrite
	}
	return nil
}

// maxDocInput bounds a document read from a file or stdin; the event's own
// limits (events.DefaultLimits) are checked after.
const maxDocInput = 64 << 20

// readDoc returns the JSON document an argument stands for: the argument
// itself, the contents of FILE for "@FILE", or stdin for "-". from names
// the source ("" for the argument itself) for error messages.
func (m *Main) readDoc(arg string) (doc, from string, err error) {
	var r io.Reader
	switch {
	case arg == "-":
		from, r = "stdin", m.Stdin
		if r == nil {
			return "", from, usagef("no stdin to read the document from")
		}
	case strings.HasPrefix(arg, "@"):
		from = arg[1:]
		f, err := os.Open(from)
		if err != nil {
			return "", from, usagef("read document: %v", err)
		}
		defer f.Close()
		r = f
	default:
		return arg, "", nil
	}
	b, err := io.ReadAll(io.LimitReader(r, maxDocInput+1))
	if err != nil {
		return "", from, fmt.Errorf("read document from %s: %w", from, err)
	}
	if len(b) > maxDocInput {
		return "", from, usagef("document in %s is larger than %d bytes", from, maxDocInput)
	}
	return string(b), from, nil
}

// errRefusedWrite is a write the server refused: the command has printed
// what happened on stdout and exits 1.
var errRefusedWrite = errors.New("the server refused the write")

// writeOutcome is what became of one write, as far as the command saw.
type writeOutcome struct {
	// State: "queued, offline", "queued (<why>)" (not yet pushed),
	// "pushed, no receipt yet", or "settled" once a receipt came.
	State    string         `json:"state"`
	Event    string         `json:"event,omitempty"`
	Outcome  events.Outcome `json:"outcome,omitempty"`
	Reason   string         `json:"reason,omitempty"`
	Conflict string         `json:"conflict,omitempty"`
	Version  uint64         `json:"applied_version,omitempty"` // the document version the receipt reported
}

// outcomeOf reads the fate of event id after a Sync that returned serr.
func outcomeOf(ctx context.Context, s *clientSession, id string, serr error) (writeOutcome, error) {
	out := writeOutcome{Event: id}
	e, ok, err := s.r.Log().Entry(ctx, id)
	if err != nil {
		return out, err
	}
	switch {
	case ok && e.State == producer.StateSettled:
		out.State, out.Outcome, out.Reason, out.Conflict, out.Version = "settled", e.Outcome, e.Reason, e.Conflict, e.Version
	case ok && e.State == producer.StateFailed:
		out.State, out.Reason = "failed", e.Err
	case ok && e.State == producer.StatePublished:
		out.State = "pushed, no receipt yet"
	case serr != nil && !errors.Is(serr, context.DeadlineExceeded):
		out.State = "queued (" + serr.Error() + ")"
	default:
		out.State = "queued, not pushed yet"
	}
	return out, nil
}

// failed reports whether the server refused the write.
func (o writeOutcome) failed() bool {
	switch {
	case o.State == "failed":
		return true
	case o.State != "settled":
		return false
	}
	return o.Outcome == events.OutcomeRejected || o.Outcome == events.OutcomeInvalid
}

// text is the one-line account of o.
func (o writeOutcome) text() string {
	if o.State == "failed" {
		return "refused by the server: " + o.Reason + " (see 'ebb status')"
	}
	if o.State != "settled" {
		return o.State
	}
	switch o.Outcome {
	case events.OutcomeApplied:
		return fmt.Sprintf("synced, applied (version %d)", o.Version)
	case events.OutcomeMerged:
		return fmt.Sprintf("synced, merged with a concurrent write (version %d): %s", o.Version, o.Reason)
	case events.OutcomeConflict:
		return fmt.Sprintf("synced, conflict %s held open: settle it with 'ebb resolve' (see 'ebb conflicts')", o.Conflict)
	case events.OutcomeRejected:
		return "rejected: " + o.Reason + " (see 'ebb rejections')"
	case events.OutcomeInvalid:
		return "invalid: " + o.Reason + " (see 'ebb rejections')"
	case events.OutcomeDuplicate:
		return "synced, already applied (duplicate)"
	case events.OutcomeReused:
		return "written again as a new device: " + o.Reason
	}
	return string(o.Outcome)
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
