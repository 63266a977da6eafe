package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// Dead letters, for operators: `ebb dead list|show|replay`. A dead letter's
// ID is its sequence in DEAD. A replay re-submits the original event to
// EVENTS so the projector judges it again under today's policies and
// limits; each replay is recorded in DEAD, on the letter's subject plus
// ".replay.<ID>", at most once per letter.

// deadAbout is `ebb help dead`'s paragraph.
const deadAbout = `ID is a dead letter's sequence in DEAD, as 'ebb dead list' shows it. replay re-submits the letter's original event (read from EVENTS at the sequence the letter names, or from the letter when EVENTS no longer holds it and the letter kept it whole) to its subject, so the projector judges it again under today's policies and limits: the same event id, writer, device and sequence, under Nats-Msg-Id replay:ID with the header Ebb-Replay-Of: ID. Its receipt is an ordinary one for that event (applied, merged, conflict, rejected, or invalid with a new dead letter); it has the Nats-Msg-Id of the first receipt, so inside RECEIPTS' duplicate window JetStream drops it, and the writer learns the new state from CHANGES. Each replay is recorded in DEAD and done at most once per letter. An event that fails again gets a new dead letter, which --all skips (it would fail again the same way): replay it by its ID after the next fix. Letters of refused changes or receipts hold no event and cannot be replayed.`

// replayHeader names, on a re-submitted event, the dead letter it replays.
const replayHeader = "Ebb-Replay-Of"

// errNotReplayable marks a dead letter that holds no event to re-submit: a
// change or receipt the servers refused for good, or an event EVENTS no
// longer holds whose dead letter kept only part of it.
var errNotReplayable = errors.New("dead letter cannot be replayed")

// replayRecord records one replay, on DEAD at the letter's subject plus
// ".replay.<dead>".
type replayRecord struct {
	Schema int    `json:"schema"`
	Dead   uint64 `json:"dead"` // the dead letter's ID (its DEAD sequence)
	Event  string `json:"event,omitempty"`
	// Subject is the event subject the message was re-submitted to.
	Subject string `json:"subject"`
	// From is the message's sequence in EVENTS when it was dead-lettered;
	// Seq the sequence of its re-submitted copy.
	From uint64 `json:"from_seq"`
	Seq  uint64 `json:"events_seq"`
	// Source says where the payload came from: "events" (the original
	// message, read from EVENTS) or "dead letter" (EVENTS no longer held
	// it and the dead letter kept all of it).
	Source string    `json:"source"`
	Time   time.Time `json:"time"`
}

// deadRecord is one dead letter in `ebb dead list|show --json`.
type deadRecord struct {
	ID         uint64             `json:"id"`
	Time       time.Time          `json:"time"`
	Replayable bool               `json:"replayable"`
	Letter     *events.DeadLetter `json:"letter"`
	Replay     *replayRecord      `json:"replay,omitempty"`
	// ReplayOf is set on the letter of a replayed copy that failed
	// again: the ID of the letter that copy replayed.
	ReplayOf uint64 `json:"replay_of,omitempty"`

	subject string // the letter's subject in DEAD
}

// runDead is `ebb dead list|show|replay`.
func runDead(ctx context.Context, m *Main, args []string) error {
	if len(args) == 0 {
		return usagef("ebb dead: want list, show or replay (run 'ebb dead --help')")
	}
	switch args[0] {
	case "list":
		return runDeadList(ctx, m, args[1:])
	case "show":
		return runDeadShow(ctx, m, args[1:])
	case "replay":
		return runDeadReplay(ctx, m, args[1:])
	case "-h", "-help", "--help":
		m.commandHelp("dead", nil)
		return flag.ErrHelp
	}
	return usagef("ebb dead: unknown verb %q (want list, show or replay)", args[0])
}

func runDeadList(ctx context.Context, m *Main, args []string) error {
	var a adminFlags
	var tenant string
	fs := m.newFlagSet("dead list")
	a.register(m, fs)
	fs.StringVar(&tenant, "tenant", "", "only this tenant's dead letters (default: every tenant's)")
	if err := m.parse(fs, interleave(fs, args)); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("dead list takes no arguments, got %q", fs.Args())
	}
	nc, js, err := a.connect("ebb-dead")
	if err != nil {
		return fmt.Errorf("dead list: %w", err)
	}
	defer nc.Close()
	recs, err := listDead(ctx, js, tenant, tenant != "")
	if err != nil {
		return fmt.Errorf("dead list: %w", err)
	}
	if a.json {
		return printJSON(m.Stdout, recs)
	}
	if len(recs) == 0 {
		fmt.Fprintln(m.Stdout, "no dead letters")
		return nil
	}
	for _, r := range recs {
		state := "not replayable"
		switch {
		case r.Replay != nil:
			state = fmt.Sprintf("replayed as EVENTS %d", r.Replay.Seq)
		case r.Replayable && r.ReplayOf > 0:
			state = fmt.Sprintf("failed again after replaying %d (replay by ID)", r.ReplayOf)
		case r.Replayable:
			state = "replayable"
		}
		what := r.Letter.Event
		if what == "" {
			what = "-"
		}
		fmt.Fprintf(m.Stdout, "%d  %s  %s  %s  %s: %s\n", r.ID, r.Time.UTC().Format(time.RFC3339), r.Letter.Subject, what, state, r.Letter.Reason)
	}
	return nil
}

func runDeadShow(ctx context.Context, m *Main, args []string) error {
	var a adminFlags
	fs := m.newFlagSet("dead show")
	a.register(m, fs)
	if err := m.parse(fs, interleave(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("ebb dead show: want ID, got %d arguments", fs.NArg())
	}
	id, err := parseDeadID(fs.Arg(0))
	if err != nil {
		return err
	}
	nc, js, err := a.connect("ebb-dead")
	if err != nil {
		return fmt.Errorf("dead show: %w", err)
	}
	defer nc.Close()
	r, err := getDead(ctx, js, id)
	if err != nil {
		return fmt.Errorf("dead show: %w", err)
	}
	if a.json {
		return printJSON(m.Stdout, r)
	}
	l := r.Letter
	fmt.Fprintf(m.Stdout, "id:         %d\ntime:       %s\nreason:     %s\nsubject:    %s\nevents seq: %d\nevent:      %s\ntenant:     %s\nclient:     %s\nsize:       %d bytes (%d kept)\n",
		r.ID, r.Time.UTC().Format(time.RFC3339Nano), l.Reason, l.Subject, l.Stream, l.Event, l.Tenant, l.Client, max(l.Size, len(l.Data)), len(l.Data))
	switch {
	case r.Replay != nil:
		fmt.Fprintf(m.Stdout, "replayed:   %s as EVENTS %d (from %s)\n", r.Replay.Time.UTC().Format(time.RFC3339), r.Replay.Seq, r.Replay.Source)
	case r.Replayable:
		fmt.Fprintf(m.Stdout, "replayed:   no ('ebb dead replay %d')\n", r.ID)
	default:
		fmt.Fprintln(m.Stdout, "replayed:   no (not replayable: it holds no event)")
	}
	if utf8.Valid(l.Data) {
		fmt.Fprintf(m.Stdout, "data:       %s\n", l.Data)
	} else {
		fmt.Fprintf(m.Stdout, "data:       %d bytes, not text (see --json)\n", len(l.Data))
	}
	return nil
}

// replayResult is one line of `ebb dead replay --json`.
type replayResult struct {
	ID uint64 `json:"id"`
	// Replayed is true when this run re-submitted the event, false when an
	// earlier replay had (Record is that one's) or it cannot be replayed.
	Replayed bool          `json:"replayed"`
	Record   *replayRecord `json:"record,omitempty"`
	Error    string        `json:"error,omitempty"`
}

func runDeadReplay(ctx context.Context, m *Main, args []string) error {
	var a adminFlags
	var tenant string
	var all bool
	fs := m.newFlagSet("dead replay")
	a.register(m, fs)
	fs.BoolVar(&all, "all", false, "replay every replayable dead letter not replayed yet")
	fs.StringVar(&tenant, "tenant", "", "with --all: only this tenant's dead letters")
	if err := m.parse(fs, interleave(fs, args)); err != nil {
		return err
	}
	switch {
	case all && fs.NArg() > 0:
		return usagef("ebb dead replay: want ID or --all, not both")
	case !all && fs.NArg() != 1:
		return usagef("ebb dead replay: want ID or --all, got %d arguments", fs.NArg())
	case !all && tenant != "":
		return usagef("ebb dead replay: --tenant goes with --all")
	}
	var ids []uint64
	if !all {
		id, err := parseDeadID(fs.Arg(0))
		if err != nil {
			return err
		}
		ids = []uint64{id}
	}
	nc, js, err := a.connect("ebb-dead")
	if err != nil {
		return fmt.Errorf("dead replay: %w", err)
	}
	defer nc.Close()
	if all {
		recs, err := listDead(ctx, js, tenant, tenant != "")
		if err != nil {
			return fmt.Errorf("dead replay: %w", err)
		}
		for _, r := range recs {
			// A letter of a copy that failed again is replayed only by
			// its ID, so --all never loops on an event that stays bad.
			if r.Replayable && r.Replay == nil && r.ReplayOf == 0 {
				ids = append(ids, r.ID)
			}
		}
	}
	var failed []error
	results := []replayResult{}
	for _, id := range ids {
		rec, fresh, err := replayDead(ctx, js, id)
		res := replayResult{ID: id, Replayed: fresh, Record: rec}
		if err != nil {
			res.Error = err.Error()
			failed = append(failed, fmt.Errorf("dead replay %d: %w", id, err))
		}
		results = append(results, res)
		if a.json {
			continue
		}
		switch {
		case err != nil:
			fmt.Fprintf(m.Stdout, "%d: %v\n", id, err)
		case fresh:
			fmt.Fprintf(m.Stdout, "%d: re-submitted %s as EVENTS %d\n", id, rec.Subject, rec.Seq)
		default:
			fmt.Fprintf(m.Stdout, "%d: replayed already, at %s as EVENTS %d\n", id, rec.Time.UTC().Format(time.RFC3339), rec.Seq)
		}
	}
	if a.json {
		if err := printJSON(m.Stdout, results); err != nil {
			return err
		}
	} else if all && len(ids) == 0 {
		fmt.Fprintln(m.Stdout, "nothing to replay")
	}
	return errors.Join(failed...)
}

func parseDeadID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, usagef("dead letter ID %q: want its number, as 'ebb dead list' shows it", s)
	}
	return id, nil
}

// replayable reports whether a dead letter refers to an event in EVENTS
// (a refused publish of a change or receipt has no stream sequence).
func replayable(l *events.DeadLetter) bool {
	return l.Stream > 0 && strings.HasPrefix(l.Subject, events.EventsPrefix+".")
}

// replayOf returns the letter a dead-lettered copy replayed (its
// Ebb-Replay-Of header, kept in the letter), or 0.
func replayOf(l *events.DeadLetter) uint64 {
	for k, vs := range l.Header {
		if strings.EqualFold(k, replayHeader) && len(vs) > 0 {
			n, _ := strconv.ParseUint(vs[0], 10, 64)
			return n
		}
	}
	return 0
}

// replaySubject is where a letter read from subject records its replay.
func replaySubject(deadSubject string, id uint64) string {
	return fmt.Sprintf("%s.replay.%d", deadSubject, id)
}

// listDead reads every dead letter (of tenant, when only is set) with its
// replay record, in DEAD order.
func listDead(ctx context.Context, js jetstream.JetStream, tenant string, only bool) ([]deadRecord, error) {
	letters, replays := events.DeadPrefix+".*", events.DeadPrefix+".*.replay.*"
	if only {
		letters = events.DeadSubject(tenant)
		replays = letters + ".replay.*"
	}
	recs := []deadRecord{}
	done := map[uint64]*replayRecord{}
	err := readFiltered(ctx, js, events.StreamDead, []string{letters, replays}, func(subject string, data []byte, md *jetstream.MsgMetadata) error {
		if strings.Contains(subject, ".replay.") {
			var rr replayRecord
			if err := json.Unmarshal(data, &rr); err != nil {
				return fmt.Errorf("replay record at %s %d: %w", events.StreamDead, md.Sequence.Stream, err)
			}
			done[rr.Dead] = &rr
			return nil
		}
		l, err := events.DecodeDeadLetter(data)
		if err != nil {
			return fmt.Errorf("dead letter %d: %w", md.Sequence.Stream, err)
		}
		recs = append(recs, deadRecord{ID: md.Sequence.Stream, Time: md.Timestamp, Replayable: replayable(l), Letter: l, ReplayOf: replayOf(l), subject: subject})
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := range recs {
		recs[i].Replay = done[recs[i].ID]
	}
	return recs, nil
}

// getDead reads dead letter id and its replay record.
func getDead(ctx context.Context, js jetstream.JetStream, id uint64) (*deadRecord, error) {
	s, err := js.Stream(ctx, events.StreamDead)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", events.StreamDead, err)
	}
	msg, err := s.GetMsg(ctx, id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, usagef("no dead letter %d (DEAD holds %d..%d)", id, s.CachedInfo().State.FirstSeq, s.CachedInfo().State.LastSeq)
	}
	if err != nil {
		return nil, fmt.Errorf("read dead letter %d: %w", id, err)
	}
	if strings.Contains(msg.Subject, ".replay.") {
		return nil, usagef("%s %d is a replay record, not a dead letter", events.StreamDead, id)
	}
	l, err := events.DecodeDeadLetter(msg.Data)
	if err != nil {
		return nil, fmt.Errorf("dead letter %d: %w", id, err)
	}
	r := &deadRecord{ID: id, Time: msg.Time, Replayable: replayable(l), Letter: l, ReplayOf: replayOf(l), subject: msg.Subject}
	rm, err := s.GetLastMsgForSubject(ctx, replaySubject(msg.Subject, id))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return nil, fmt.Errorf("read the replay record of %d: %w", id, err)
	default:
		var rr replayRecord
		if err := json.Unmarshal(rm.Data, &rr); err != nil {
			return nil, fmt.Errorf("replay record of %d: %w", id, err)
		}
		r.Replay = &rr
	}
	return r, nil
}

// replayDead re-submits the event of dead letter id to EVENTS and records
// the replay, unless one is recorded already (then it returns that record
// and fresh false). The copy is the original message as EVENTS holds it
// (or as the letter kept it, when EVENTS no longer does and the letter
// kept it whole): same subject, payload and trace headers, under
// Nats-Msg-Id "replay:<id>" with Ebb-Replay-Of: <id>. It is idempotent: a
// second run finds the record; a run that crashed between the publish and
// the record publishes again under the same Nats-Msg-Id, which JetStream
// drops inside its duplicate window, and after it the projector's writer
// marks answer the copy "duplicate" if the first copy applied.
func replayDead(ctx context.Context, js jetstream.JetStream, id uint64) (rec *replayRecord, fresh bool, err error) {
	r, err := getDead(ctx, js, id)
	if err != nil {
		return nil, false, err
	}
	if r.Replay != nil {
		return r.Replay, false, nil
	}
	l := r.Letter
	if !replayable(l) {
		return nil, false, fmt.Errorf("%w: %d holds no event (subject %s): %s", errNotReplayable, id, l.Subject, l.Reason)
	}
	out := &nats.Msg{Subject: l.Subject, Header: nats.Header{}}
	source := "events"
	evs, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		return nil, false, fmt.Errorf("read stream %s: %w", events.StreamEvents, err)
	}
	orig, err := evs.GetMsg(ctx, l.Stream)
	switch {
	case err == nil && orig.Subject == l.Subject && strings.HasPrefix(string(orig.Data), string(l.Data)):
		out.Data = orig.Data
		copyHeaders(out.Header, orig.Header)
	case (err == nil || errors.Is(err, jetstream.ErrMsgNotFound)) && len(l.Data) >= l.Size:
		// EVENTS no longer holds it (its age limit) or holds another
		// message there: the letter kept the whole payload.
		out.Data, source = l.Data, "dead letter"
		copyHeaders(out.Header, l.Header)
	case err == nil || errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, false, fmt.Errorf("%w: %s no longer holds the message at sequence %d and the dead letter kept %d of its %d bytes", errNotReplayable, events.StreamEvents, l.Stream, len(l.Data), l.Size)
	default:
		return nil, false, fmt.Errorf("read %s %d: %w", events.StreamEvents, l.Stream, err)
	}
	out.Header.Set(replayHeader, strconv.FormatUint(id, 10))
	ack, err := js.PublishMsg(ctx, out, jetstream.WithMsgID(fmt.Sprintf("replay:%d", id)))
	if err != nil {
		return nil, false, fmt.Errorf("re-submit %s: %w", l.Subject, err)
	}
	rec = &replayRecord{Schema: events.SchemaVersion, Dead: id, Event: l.Event, Subject: l.Subject, From: l.Stream, Seq: ack.Sequence, Source: source, Time: time.Now().UTC()}
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, false, err
	}
	_, err = js.PublishMsg(ctx, &nats.Msg{Subject: replaySubject(r.subject, id), Data: data},
		jetstream.WithMsgID(fmt.Sprintf("replayed:%d", id)), jetstream.WithExpectLastSequencePerSubject(0))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		// Another replay of the same letter recorded itself first; its
		// copy and ours carry the same Nats-Msg-Id.
		r, gerr := getDead(ctx, js, id)
		if gerr == nil && r.Replay != nil {
			return r.Replay, false, nil
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("record the replay of %d (the event was re-submitted as %s %d): %w", id, events.StreamEvents, ack.Sequence, err)
	}
	return rec, true, nil
}

// copyHeaders copies h into dst without JetStream's own headers
// (Nats-Msg-Id, Nats-Expected-*): the copy gets its own.
func copyHeaders(dst nats.Header, h map[string][]string) {
	for k, vs := range h {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

// readFiltered reads every message of stream on filters, in order, with an
// ordered consumer, until none is pending.
func readFiltered(ctx context.Context, js jetstream.JetStream, stream string, filters []string, fn func(subject string, data []byte, md *jetstream.MsgMetadata) error) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream, err)
	}
	if s.CachedInfo().State.Msgs == 0 {
		return nil
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: filters})
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream, err)
	}
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("read stream %s: %w", stream, err)
		}
		got, pending := 0, uint64(0)
		for msg := range batch.Messages() {
			md, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("read stream %s: %w", stream, err)
			}
			got, pending = got+1, md.NumPending
			if err := fn(msg.Subject(), msg.Data(), md); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("read stream %s: %w", stream, err)
		}
		if got == 0 || pending == 0 {
			return nil
		}
	}
}
