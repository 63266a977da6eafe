package projection

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection/rules"
)

// rawMsg is one EVENTS message as the applier sees it.
type rawMsg struct {
	Subject string
	Header  nats.Header
	Data    []byte
	Seq     uint64    // stream sequence
	Time    time.Time // when the stream stored it: the "now" of the drift check
}

// applier turns EVENTS messages into one store Batch. It is the single code
// path of the live projector and of Verify's rebuild, so both decide the
// same. It is used by one goroutine at a time.
type applier struct {
	store Store
	// partitioned: a partition's applier, which sees only its documents' events
	// (so a writer's sequence jumps past its mark by design).
	partitioned bool
	policies    Policies
	limits      events.Limits
	maxDrift    time.Duration
	prop        propagation.TextMapPropagator
	outbox      bool   // produce changes, receipts and dead letters (false in a rebuild)
	holeWindow  uint64 // the dedupe window of every writer (HighWater.record)
	maxDocBytes int    // bound of a document's encoded change (Config.MaxDocBytes)
	log         *slog.Logger
	tracer      trace.Tracer // live projector with a TracerProvider only; nil otherwise
	rules       *rules.Set   // sync rules (Config.Rules); nil: none

	// batch state, reset by reset
	batch    Batch
	docs     map[events.DocAddress]Doc
	hwm      map[ClientKey]*HighWater // the batch's view of each writer's mark; batch.HighWater holds copies
	seqIDs   map[seqKey]string        // the event ids the batch applied, by writer and sequence (batch.SeqEvents)
	stats    stepStats
	started  time.Time          // when the live projector began deciding the batch
	outcomes map[outcomeKey]int // outcomes by policy (live projector only)
	spans    []trace.Span       // apply spans: ended by finishSpans if the batch fails, else handed to its flight (takeSpans)

	// the message being applied (traced)
	spanCtx context.Context // its apply span's context; nil outside traced
	cur     decided
}

// stepStats counts what the current batch did.
// stepStats counts what one batch did; created is the documents it made
// (first versions), which the projector adds to StreamMarks.Docs.
type stepStats struct{ applied, duplicates, dead, created int }

func (a *applier) reset(checkpoint uint64) {
	a.batch = Batch{Checkpoint: checkpoint}
	clear(a.docs)
	clear(a.hwm)
	clear(a.seqIDs)
	if a.docs == nil {
		a.docs = make(map[events.DocAddress]Doc)
		a.hwm = make(map[ClientKey]*HighWater)
		a.seqIDs = make(map[seqKey]string)
	}
	a.stats = stepStats{}
	clear(a.outcomes)
}

func (a *applier) doc(ctx context.Context, addr events.DocAddress) (Doc, error) {
	if d, ok := a.docs[addr]; ok {
		return d, nil
	}
	return a.store.Get(ctx, addr)
}

// highWater returns the batch's mark of writer k, read from the store the
// first time. The batch changes it in place.
func (a *applier) highWater(ctx context.Context, k ClientKey) (*HighWater, error) {
	if h, ok := a.hwm[k]; ok {
		return h, nil
	}
	h, err := a.store.WriterHighWater(ctx, k)
	if err != nil {
		return nil, err
	}
	a.hwm[k] = &h
	return &h, nil
}

// seen decides an event whose sequence its writer k already used (or is
// too far below the writer's mark to tell, see HighWater.behind): the one
// place such an event is decided. Inside the dedupe window the id applied
// at the sequence tells a true duplicate (the same event) from a reuse (a
// log restored from a backup or copied wrote another event there); below
// it, or for a sequence applied before ids were kept, it is taken for a
// duplicate. Nothing changes either way; a reuse, and a duplicate that may
// be a late event, are logged.
func (a *applier) seen(ctx context.Context, m rawMsg, ev *events.Event, k ClientKey, hw *HighWater) error {
	a.stats.duplicates++
	outcome := events.OutcomeDuplicate
	reason := fmt.Sprintf("client sequence %d already applied (high-water mark %d)", ev.Seq, hw.Seq)
	if hw.behind(ev.Seq, a.holeWindow) {
		reason = fmt.Sprintf("client sequence %d is too far behind the high-water mark %d to tell from a duplicate (dedupe window %d): taken for a duplicate",
			ev.Seq, hw.Seq, a.holeWindow)
		if a.outbox {
			a.log.WarnContext(a.traceCtx(ctx), "event too far behind its writer to tell from a duplicate; dropped as a duplicate",
				"event", ev.ID, "tenant", ev.Tenant, "client", ev.Client, "device", ev.Device, "seq", ev.Seq, "high_water", hw.Seq, "stream_seq", m.Seq)
		}
	} else {
		held, err := a.seqEvent(ctx, k, ev.Seq)
		if err != nil {
			return err
		}
		if held != "" && held != ev.ID {
			outcome = events.OutcomeReused
			reason = fmt.Sprintf("sequence %d of this log already holds event %s: nothing changed; start a new log (device) and write the event again", ev.Seq, held)
			if a.outbox {
				a.log.WarnContext(a.traceCtx(ctx), "event reuses a sequence its writer's log gave another event (a restored or copied local store); answered reused",
					"event", ev.ID, "held_by", held, "tenant", ev.Tenant, "client", ev.Client, "device", ev.Device, "seq", ev.Seq, "high_water", hw.Seq, "stream_seq", m.Seq)
			}
		}
	}
	a.note(ev, outcome, 0)
	return a.receipt(m, &events.Receipt{
		Event: ev.ID, Tenant: ev.Tenant, Client: ev.Client, Device: ev.Device, Seq: ev.Seq,
		Collection: ev.Collection, Doc: ev.Doc, Outcome: outcome, Reason: reason,
	})
}

// seqKey is one sequence of one writer.
type seqKey struct {
	writer ClientKey
	seq    uint64
}

// seqEvent returns the id applied at sequence seq of writer k: the batch's,
// else the store's; "" when none is held.
func (a *applier) seqEvent(ctx context.Context, k ClientKey, seq uint64) (string, error) {
	if id, ok := a.seqIDs[seqKey{k, seq}]; ok {
		return id, nil
	}
	return a.store.SeqEvent(ctx, k, seq)
}

// remember records that ev applied at its sequence of writer k, whose mark
// moved from old to hw, for the batch and the store; and lets the store
// forget the ids that left the window, amortised: once per
// forgetStep(window) sequences the mark passes, so a writer holds at most
// window + step ids and a forgotten id costs one delete.
func (a *applier) remember(k ClientKey, ev *events.Event, old uint64, hw *HighWater) {
	a.seqIDs[seqKey{k, ev.Seq}] = ev.ID
	a.batch.SeqEvents = append(a.batch.SeqEvents, SeqEvent{Writer: k, Seq: ev.Seq, Event: ev.ID})
	floor := func(mark uint64) uint64 { // ids at or below it are outside the window
		if mark <= a.holeWindow {
			return 0
		}
		return mark - a.holeWindow
	}
	step := forgetStep(a.holeWindow)
	if f := floor(hw.Seq); f/step > floor(old)/step {
		if a.batch.ForgetSeqEvents == nil {
			a.batch.ForgetSeqEvents = make(map[ClientKey]uint64)
		}
		a.batch.ForgetSeqEvents[k] = f
	}
}

// add applies one message to the batch. Only store failures are errors: a
// message that cannot be applied becomes a dead letter. The live projector
// traces it (see traced).
func (a *applier) add(ctx context.Context, m rawMsg) error {
	if a.outbox {
		return a.traced(ctx, m)
	}
	return a.apply(ctx, m)
}

// apply is add without the tracing.
func (a *applier) apply(ctx context.Context, m rawMsg) error {
	if m.Seq > a.batch.Checkpoint {
		a.batch.Checkpoint = m.Seq
	}
	ev, err := events.DecodeEvent(m.Data, a.limits)
	if err != nil {
		return a.dead(m, nil, fmt.Sprintf("decode event: %v", err))
	}
	if err := ev.CheckSubject(m.Subject); err != nil {
		return a.dead(m, ev, err.Error())
	}
	addr := ev.Address()
	if err := events.CheckDrift(ev.HLC, m.Time, a.maxDrift); err != nil {
		return a.dead(m, ev, fmt.Sprintf("hlc: %v", err))
	}
	ck := ClientKey{Tenant: ev.Tenant, Client: ev.Client, Device: ev.Device}
	hw, err := a.highWater(ctx, ck)
	if err != nil {
		return err
	}
	if hw.applied(ev.Seq) {
		return a.seen(ctx, m, ev, ck, hw)
	}
	// A partition sees only the writer's events of its own documents, so
	// its mark lags the writer's sequence by whatever went to the others:
	// a jump is normal there, and refusing it would refuse real writes.
	if !a.partitioned && hw.ahead(ev.Seq, a.holeWindow) {
		// Not recorded: the writer's real sequences below it stay new.
		return a.dead(m, ev, fmt.Sprintf("client sequence %d is %d ahead of the writer's high-water mark %d, beyond the dedupe window of %d: refused, so it cannot make the writer's later writes look like duplicates",
			ev.Seq, ev.Seq-hw.Seq, hw.Seq, a.holeWindow))
	}
	cur, err := a.doc(ctx, addr)
	if err != nil {
		return err
	}
	if reason := reusedID(cur, ev); reason != "" {
		// Under sync rules the reason names the state: not to a writer
		// who may not read it.
		hidden, err := a.hiddenFrom(ctx, m, ev, cur, rejected(reason), audiences{})
		if err != nil {
			return err
		}
		if hidden {
			reason = hiddenReason(ev.Collection, ev.Doc)
		}
		return a.dead(m, ev, reason)
	}
	d, err := Decide(a.policies, cur, ev)
	if err != nil {
		// A resolver broke its contract: refuse the event rather than stall
		// the stream behind it; the reason names the resolver.
		return a.dead(m, ev, err.Error())
	}
	var change []byte // the encoded change, when the event makes a new state
	if d.Doc != nil {
		a.keep(cur, d.Doc) // sync rules: what a parent's tombstone keeps for its followers (audience.go)
		if change, err = a.policies.EncodeChange(d.Doc, d.Settled); err != nil {
			return a.dead(m, ev, fmt.Sprintf("encode the new state: %v", err))
		}
		if len(change) > a.maxDocBytes {
			// Decided the same in a rebuild: the size of the state, not of
			// anything the live projector alone sees.
			d = rejected(fmt.Sprintf("the document would encode to %d bytes, over the limit of %d bytes (MaxDocBytes): not applied; remove fields or split the document",
				len(change), a.maxDocBytes))
			change = nil
		}
	}
	// Sync rules (audience.go): the readers of the new state, computed
	// once for the write check, the receipt and the change's headers.
	ruled := a.rules.Ruled(ev.Collection)
	var readers []string
	if ruled && d.Doc != nil && d.Doc.Exists() {
		if readers, err = a.audience(ctx, *d.Doc); err != nil {
			return err
		}
	}
	if d, err = a.judgeWrite(ctx, m, ev, cur, d, readers); err != nil {
		return err
	}
	var aud audiences // who reads the change, who may hold a copy
	if ruled && d.Doc != nil {
		if aud, err = a.heldBy(ctx, cur, d.Doc, readers); err != nil {
			return err
		}
	}
	hidden, err := a.hiddenFrom(ctx, m, ev, cur, d, aud) // say nothing of a state the writer may not read
	if err != nil {
		return err
	}
	old := hw.Seq
	hw.record(ev.Seq, a.holeWindow)
	a.remember(ck, ev, old, hw)
	if a.batch.HighWater == nil {
		a.batch.HighWater = make(map[ClientKey]HighWater)
	}
	a.batch.HighWater[ck] = *hw // a copy of the header: set again after every change
	a.stats.applied++
	version := cur.Version
	if hidden {
		version = 0
	}
	if d.Doc != nil {
		if !hidden {
			version = d.Doc.Version
		}
		if cur.Version == 0 {
			a.stats.created++
		}
		a.docs[addr] = *d.Doc
		a.batch.Docs = append(a.batch.Docs, *d.Doc)
	}
	r := &events.Receipt{
		Event: ev.ID, Tenant: ev.Tenant, Client: ev.Client, Device: ev.Device, Seq: ev.Seq,
		Collection: ev.Collection, Doc: ev.Doc, Outcome: d.Outcome, Reason: d.Reason, Version: version,
	}
	switch {
	case hidden && d.Outcome == events.OutcomeRejected:
		r.Reason = hiddenReason(ev.Collection, ev.Doc) // whatever decided it: no version, event, clock or size
	case hidden:
		r.Reason = "" // applied on a state the writer may not read: nothing of it
	}
	a.note(ev, d.Outcome, version)
	if d.Settled != nil {
		if !hidden {
			r.Conflict = d.Settled.ID
		}
		a.batch.Conflicts = append(a.batch.Conflicts, ConflictRecord{Address: addr, Conflict: *d.Settled})
	}
	if d.Doc != nil && a.outbox {
		h := changeHeader(a.trace(m.Header), aud, ruled && d.Doc != nil)
		a.batch.Outbox = append(a.batch.Outbox, OutboxEntry{
			Subject: events.ChangeSubject(ev.Tenant, ev.Collection, ev.Doc),
			MsgID:   changeMsgID(d.Doc), Header: h, Data: change,
		})
		if err := a.reemitFollowers(ctx, ev, cur, d.Doc, readers); err != nil {
			return err
		}
	}
	return a.receipt(m, r)
}

// receipt queues r on its writer's receipt subject (r.Subject(): the
// device's, or the client's for a legacy log).
func (a *applier) receipt(m rawMsg, r *events.Receipt) error {
	if !a.outbox {
		return nil
	}
	r.Schema = events.SchemaVersion
	r.Stream = m.Seq
	r.Reason = truncate(r.Reason, maxReasonBytes)
	data := encodeReceipt(r) // events.EncodeReceipt's bytes (jsonenc.go)
	a.batch.Outbox = append(a.batch.Outbox, OutboxEntry{
		Subject: r.Subject(),
		MsgID:   receiptMsgID(r), Header: a.trace(m.Header), Data: data,
	})
	return nil
}

// sender is what can be read of a refused event's writer.
type sender struct {
	ID     string `json:"id"`
	Client string `json:"client"`
	Device string `json:"-"` // read on its own (rawDevice): a bad device must not cost the receipt
	Seq    uint64 `json:"seq"`
}

// rawDevice returns the "device" string of an undecodable payload, "" when
// it has none that reads as a string.
func rawDevice(data []byte) string {
	var d struct {
		Device string `json:"device"`
	}
	if json.Unmarshal(data, &d) != nil {
		return ""
	}
	return d.Device
}

// dead refuses m: a dead letter with reason and, when the writer is known,
// an invalid receipt. The tenant and the client are the subject's (what
// NATS permissions vouched for), never the payload's, so a receipt can
// neither leak across tenants nor reach a client a forged event named. The
// receipt goes to the payload's device (decoded, or read from the raw
// payload when it is a valid name) only when the payload's client is the
// subject's; otherwise to the subject client's legacy receipt subject. ev
// is the decoded event when decoding succeeded.
func (a *applier) dead(m rawMsg, ev *events.Event, reason string) error {
	a.stats.dead++
	a.note(ev, events.OutcomeInvalid, 0)
	if !a.outbox {
		return nil
	}
	tenant, _ := events.TenantOfSubject(m.Subject)
	if validTenant(tenant) != nil {
		tenant = ""
	}
	var s sender
	if ev != nil {
		s = sender{ID: ev.ID, Client: ev.Client, Device: ev.Device, Seq: ev.Seq}
	} else if json.Unmarshal(m.Data, &s) != nil {
		s = sender{}
	} else {
		s.Device = rawDevice(m.Data)
	}
	if _, err := events.ParseID(s.ID); err != nil {
		s.ID = "" // not an event id: nothing to name, nobody to answer
	}
	client := ""
	if addr, err := events.ParseEventSubject(m.Subject); err == nil {
		client = addr.Client
	}
	if s.Client != client || (s.Device != "" && events.ValidateName("device", s.Device, events.DefaultLimits.MaxNameBytes) != nil) {
		s.Device = "" // a device of a client the subject did not vouch for, or no device at all
	}
	s.Client = client
	reason = truncate(reason, maxReasonBytes)
	// A reference to the message in EVENTS (subject, stream_seq) with a
	// bounded copy, so the dead letter fits in a message whatever its cause.
	dl := &events.DeadLetter{
		Schema: events.SchemaVersion, Reason: reason, Subject: m.Subject, Stream: m.Seq,
		Header: boundHeader(m.Header, maxDeadHeader), Data: m.Data[:min(len(m.Data), maxDeadData)], Size: len(m.Data),
		Event: s.ID, Tenant: tenant, Client: s.Client,
	}
	data, err := events.EncodeDeadLetter(dl)
	if err != nil {
		return err
	}
	a.batch.Outbox = append(a.batch.Outbox, OutboxEntry{
		Subject: events.DeadSubject(tenant), MsgID: fmt.Sprintf("dead:%d", m.Seq), Data: data,
	})
	if tenant == "" || s.ID == "" || events.ValidateName("client", s.Client, events.DefaultLimits.MaxNameBytes) != nil {
		return nil
	}
	return a.receipt(m, &events.Receipt{
		Event: s.ID, Tenant: tenant, Client: s.Client, Device: s.Device, Seq: s.Seq, Outcome: events.OutcomeInvalid, Reason: reason,
	})
}

// reusedID returns why ev must be refused when its id already names
// another write of the document: its current state's cause, or an open
// conflict (the id a resolve names). Only a true duplicate (the same
// writer and sequence) may carry it again, and the dedupe answered that
// before. Decided from the document's state alone, so a rebuild decides
// the same. Empty when the id is free on this document.
func reusedID(cur Doc, ev *events.Event) string {
	if cur.Version > 0 && cur.Event == ev.ID {
		return fmt.Sprintf("event id %s already names version %d of this document, written by client %q at sequence %d: an event id must name one write",
			ev.ID, cur.Version, cur.Client, cur.Seq)
	}
	for _, c := range cur.Conflicts {
		if c.ID == ev.ID {
			return fmt.Sprintf("event id %s already names open conflict %s of this document: an event id must name one write", ev.ID, c.ID)
		}
	}
	return ""
}

// changeMsgID is the Nats-Msg-Id of the change that made d: its document
// (subject tokens, which hold neither '/' nor ':') and version, unique for
// the state it publishes whatever event ids clients chose, and the same
// when the outbox republishes it.
func changeMsgID(d *Doc) string {
	return fmt.Sprintf("chg:%s/%s/%s:%d", events.EncodeToken(d.Tenant), events.EncodeToken(d.Collection), events.EncodeToken(d.ID), d.Version)
}

// receiptMsgID is the Nats-Msg-Id of receipt r: the write it answers, by
// writer (tenant, client and, for a device's log, device tokens), event id
// and sequence. Two writes that share an event id (another writer's, or
// the same writer's at another sequence) never lose a receipt; a true
// duplicate's receipt, inside JetStream's window, is dropped as the first
// one's repeat. A legacy log's id is what it was before devices.
func receiptMsgID(r *events.Receipt) string {
	if r.Device == "" {
		return fmt.Sprintf("rcpt:%s/%s/%s:%d", events.EncodeToken(r.Tenant), events.EncodeToken(r.Client), r.Event, r.Seq)
	}
	return fmt.Sprintf("rcpt:%s/%s/%s/%s:%d", events.EncodeToken(r.Tenant), events.EncodeToken(r.Client), events.EncodeToken(r.Device), r.Event, r.Seq)
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = " […]"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// boundHeader returns the entries of h, by key in order, while their keys
// and values total at most n bytes; nil when h is empty.
func boundHeader(h nats.Header, n int) map[string][]string {
	if len(h) == 0 {
		return nil
	}
	out := make(map[string][]string, len(h))
	for _, k := range slices.Sorted(maps.Keys(h)) {
		size := len(k)
		for _, v := range h[k] {
			size += len(v)
		}
		if size > n {
			continue
		}
		n -= size
		out[k] = h[k]
	}
	return out
}

func validTenant(t string) error {
	return events.ValidateName("tenant", t, events.DefaultLimits.MaxNameBytes)
}

// trace returns the headers that carry trace context onto what an event
// caused (its change and receipt): the apply span's context when the
// message is traced, else the event's own from h. Nil when there is none.
func (a *applier) trace(h nats.Header) map[string][]string {
	if a.prop == nil {
		return nil
	}
	// Inside an apply span its context is carried (it is the child of the
	// event's); without tracing, the event's own.
	ctx := a.spanCtx
	if ctx == nil {
		if len(h) == 0 {
			return nil
		}
		ctx = a.prop.Extract(context.Background(), events.HeaderCarrier(h))
	}
	out := nats.Header{}
	a.prop.Inject(ctx, events.HeaderCarrier(out))
	if len(out) == 0 {
		return nil
	}
	return out
}

// Bounds of what the applier publishes, so every message fits in a NATS
// message (1 MiB by default) with room for its headers.
const (
	// DefaultMaxDocBytes bounds a document's encoded change, the whole
	// state as published to CHANGES (its fields, open conflicts, the
	// conflict record it settles, and clocks under merge or a custom
	// resolver): an event whose result would be
	// larger is rejected. Config.MaxDocBytes overrides it.
	DefaultMaxDocBytes = 512 << 10
	// maxDeadData is how much of a refused message's payload a dead letter
	// copies; the rest is in EVENTS at the dead letter's stream_seq.
	maxDeadData = 4 << 10
	// maxDeadHeader bounds the headers a dead letter copies (keys in
	// order, values whole; the rest left out).
	maxDeadHeader = 4 << 10
	// maxReasonBytes bounds a receipt's or dead letter's reason.
	maxReasonBytes = 1 << 10
)
