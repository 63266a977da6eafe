package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/feed"
	"github.com/ebbsync/ebb/events"
)

// PushResult is the fate of one event of a pushed batch.
type PushResult struct {
	ID        string `json:"id,omitempty"`
	Status    string `json:"status"` // accepted, duplicate, invalid, failed
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	Error     string `json:"error,omitempty"`
	Field     string `json:"field,omitempty"`
	// quota is set on a failure that is a quota refusal (auth.QuotaError).
	quota *auth.QuotaError
}

// Push statuses.
const (
	StatusAccepted  = "accepted"  // stored in EVENTS; its receipt will tell the outcome
	StatusDuplicate = "duplicate" // stored before (same event id); nothing new
	StatusInvalid   = "invalid"   // refused; fix it, do not retry as is
	StatusFailed    = "failed"    // not stored (NATS unavailable); retry the batch
)

// PushResponse answers a push: one result per event, in order.
type PushResponse struct {
	Results []PushResult `json:"results"`
}

func (g *Gateway) pushEvents(w http.ResponseWriter, r *http.Request) {
	tenant, err := g.tenant(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	var batch []json.RawMessage
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, g.cfg.MaxBody))
	if err := dec.Decode(&batch); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", tooBig.Limit))
			return
		}
		g.fail(w, r, bad("request body: want a JSON array of events: %v", err))
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		g.fail(w, r, bad("request body: trailing data after the JSON array"))
		return
	}
	if len(batch) > g.cfg.MaxBatch {
		g.fail(w, r, bad("batch of %d events, limit %d", len(batch), g.cfg.MaxBatch))
		return
	}
	ctx, span := g.startPush(r)
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	resp := PushResponse{Results: make([]PushResult, len(batch))}
	status := http.StatusOK
	defer func() { endPush(span, status, len(batch)) }()
	for i, raw := range batch {
		res := &resp.Results[i]
		if status != http.StatusOK {
			// An earlier event failed to publish; publishing later ones could
			// let a later write of a document overtake it.
			*res = PushResult{ID: eventID(raw), Status: StatusFailed, Error: "not attempted: an earlier event of the batch failed"}
			continue
		}
		*res = g.publish(ctx, tenant, raw, r.Header)
		if res.Status == StatusFailed {
			status = http.StatusServiceUnavailable
			if res.quota != nil {
				status = quotaStatus(w, res.quota)
			}
		}
	}
	writeJSON(w, status, resp)
}

// eventID digs the id out of an event that may be malformed, for the result.
func eventID(raw json.RawMessage) string {
	var e struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(raw, &e)
	return e.ID
}

func (g *Gateway) publish(ctx context.Context, tenant string, raw json.RawMessage, h http.Header) PushResult {
	ev, err := events.DecodeEvent(raw, g.cfg.Limits)
	if err != nil {
		res := PushResult{ID: eventID(raw), Status: StatusInvalid, Error: err.Error()}
		var fe *events.FieldError
		if errors.As(err, &fe) {
			res.Field = fe.Field
		}
		return res
	}
	if ev.Tenant != tenant {
		return PushResult{ID: ev.ID, Status: StatusInvalid, Field: "tenant",
			Error: fmt.Sprintf("event tenant %q does not match the URL's tenant %q", ev.Tenant, tenant)}
	}
	if u, ok := userOf(ctx); ok && u.Role == auth.RoleClient && ev.Client != u.Name {
		return PushResult{ID: ev.ID, Status: StatusInvalid, Field: "client",
			Error: fmt.Sprintf("event client %q is not the authenticated user %q (a client's id is its user name)", ev.Client, u.Name)}
	}
	data, err := events.EncodeEvent(ev)
	if err != nil {
		return PushResult{ID: ev.ID, Status: StatusInvalid, Error: err.Error()}
	}
	msg := nats.NewMsg(ev.Subject())
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	if u, ok := userOf(ctx); ok {
		// Set by the server, never by the client: write rules trust it.
		msg.Header.Set(events.HeaderWriterGroups, g.writerGroups(u))
	}
	g.injectTrace(ctx, msg)
	ack, err := g.cfg.JetStream.PublishMsg(ctx, msg)
	if err != nil {
		res := PushResult{ID: ev.ID, Status: StatusFailed, Error: err.Error()}
		if errors.As(err, &res.quota) {
			return res
		}
		g.log.WarnContext(ctx, "push: publish event failed", "event", ev.ID, "err", err)
		return res
	}
	if ack.Duplicate {
		return g.duplicate(ctx, ev, data, ack.Sequence)
	}
	return PushResult{ID: ev.ID, Status: StatusAccepted, StreamSeq: ack.Sequence}
}

// duplicate answers an event JetStream dropped as a repeat of the message
// stored at seq (same Nats-Msg-Id inside its duplicate window). It is a
// duplicate only if that message is the same event; an id reused for
// another event (another body, in this batch or an earlier one) would
// otherwise be dropped without a trace, so it is invalid (field id). The
// two are compared as canonical encodings, so a NATS client's spacing or
// key order does not count.
func (g *Gateway) duplicate(ctx context.Context, ev *events.Event, data []byte, seq uint64) PushResult {
	st, err := g.cfg.JetStream.Stream(ctx, events.StreamEvents)
	var stored *jetstream.RawStreamMsg
	if err == nil {
		stored, err = st.GetMsg(ctx, seq)
	}
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// Gone already (a limit on EVENTS): nothing to compare with.
		return PushResult{ID: ev.ID, Status: StatusDuplicate, StreamSeq: seq}
	case err != nil:
		g.log.WarnContext(ctx, "push: read the event a duplicate repeats", "event", ev.ID, "stream_seq", seq, "err", err)
		return PushResult{ID: ev.ID, Status: StatusFailed, Error: fmt.Sprintf("read event %s at %s sequence %d to compare: %v", ev.ID, events.StreamEvents, seq, err)}
	}
	if old, err := events.DecodeEvent(stored.Data, g.cfg.Limits); err == nil && stored.Subject == ev.Subject() {
		if oldData, err := events.EncodeEvent(old); err == nil && bytes.Equal(oldData, data) {
			return PushResult{ID: ev.ID, Status: StatusDuplicate, StreamSeq: seq}
		}
	}
	return PushResult{ID: ev.ID, Status: StatusInvalid, Field: "id",
		// Not the stored event's subject: it may name another tenant's
		// client and document.
		Error: fmt.Sprintf("event id %s already names another event (%s sequence %d): an event id names one write; give this one a new id",
			ev.ID, events.StreamEvents, seq)}
}

// ChangeEntry is one change of a pull, with its CHANGES sequence.
type ChangeEntry = feed.Entry

// ChangesResponse answers a pull of changes (feed.Page). Pass LastSeq as
// the next request's after.
type ChangesResponse = feed.Page

// ReceiptEntry is one receipt of a pull, with its RECEIPTS sequence.
type ReceiptEntry struct {
	Seq     uint64          `json:"seq"`
	Receipt *events.Receipt `json:"receipt"`
}

// ReceiptsResponse answers a pull of receipts.
type ReceiptsResponse struct {
	Receipts []ReceiptEntry `json:"receipts"`
	LastSeq  uint64         `json:"last_seq"`
	More     bool           `json:"more"`
	StreamState
}

// StreamState is where the stream a page was read from stands, read after
// the page (feed.StreamState).
type StreamState = feed.StreamState

// page reads the after, limit and wait query parameters.
func (g *Gateway) page(r *http.Request) (after uint64, limit int, wait time.Duration, err error) {
	if after, err = uintParam(r, "after", 0); err != nil {
		return
	}
	l, err := uintParam(r, "limit", uint64(g.cfg.MaxPage))
	if err != nil {
		return
	}
	if l == 0 || l > uint64(g.cfg.MaxPage) {
		return 0, 0, 0, bad("query parameter limit=%d: want 1 to %d", l, g.cfg.MaxPage)
	}
	limit = int(l)
	if s := r.URL.Query().Get("wait"); s != "" {
		if wait, err = time.ParseDuration(s); err != nil || wait < 0 {
			return 0, 0, 0, bad("query parameter wait=%q: want a duration such as 30s", s)
		}
		wait = min(wait, g.cfg.MaxWait)
	}
	return after, limit, wait, nil
}

// pullChanges answers one page of the tenant's changes (feed.Source.Changes),
// of the collections ?collection= names (repeatable; none: all), through
// the audience filter for a client user when the gateway runs with sync
// rules (Config.Visibility).
func (g *Gateway) pullChanges(w http.ResponseWriter, r *http.Request) {
	tenant, err := g.tenant(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	after, limit, wait, err := g.page(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	q := feed.Query{Tenant: tenant, Collections: r.URL.Query()["collection"], After: after, Limit: limit, Wait: wait}
	if _, err := feed.Filters(tenant, q.Collections, g.cfg.Limits); err != nil {
		g.fail(w, r, bad("query parameter collection: %v", err))
		return
	}
	q.Principals, q.Filtered = g.principals(r.Context())
	if wait > 0 {
		release, err := g.longPolls.Acquire(longPollUser(r))
		if err != nil {
			g.fail(w, r, err)
			return
		}
		defer release()
	}
	resp, err := g.src.Changes(r.Context(), q)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (g *Gateway) pullReceipts(w http.ResponseWriter, r *http.Request) {
	tenant, err := g.tenant(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	client := r.PathValue("client")
	if err := events.ValidateName("client", client, g.cfg.Limits.MaxNameBytes); err != nil {
		g.fail(w, r, err)
		return
	}
	// Every receipt subject of the client: its legacy log's and each of
	// its devices' (one ordered consumer with both filters), or one
	// device's with ?device=.
	filters := events.ClientReceipts(tenant, client)
	if q := r.URL.Query(); q.Has("device") {
		device := q.Get("device")
		if err := events.ValidateName("device", device, g.cfg.Limits.MaxNameBytes); err != nil {
			g.fail(w, r, err)
			return
		}
		filters = []string{events.DeviceReceiptSubject(tenant, client, device)}
	}
	resp := ReceiptsResponse{Receipts: []ReceiptEntry{}}
	resp.LastSeq, resp.More, err = pull(g, r, events.StreamReceipts, filters, readReceipt,
		func(seq uint64, rc *events.Receipt) {
			resp.Receipts = append(resp.Receipts, ReceiptEntry{Seq: seq, Receipt: rc})
		})
	if err == nil {
		resp.StreamState, err = g.src.State(r.Context(), events.StreamReceipts)
	}
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// pull reads the page the request asks for (after, limit, wait) of stream
// on filters, reads each message with read (which decodes it and checks it
// against its subject) and hands it to add. A message read refuses is
// skipped (counted and logged), never served and never fatal. It returns
// the sequence to pass as the next after, past skipped messages too, and
// whether more are waiting.
func pull[T any](g *Gateway, r *http.Request, stream string, filters []string, read func(subject string, data []byte) (T, error), add func(uint64, T)) (last uint64, more bool, err error) {
	after, limit, wait, err := g.page(r)
	if err != nil {
		return 0, false, err
	}
	if wait > 0 {
		release, err := g.longPolls.Acquire(longPollUser(r))
		if err != nil {
			return 0, false, err
		}
		defer release()
	}
	last = after
	more, err = g.src.ReadAfter(r.Context(), stream, filters, after, limit, wait, func(seq uint64, m jetstream.Msg) error {
		last = seq
		v, err := read(m.Subject(), m.Data())
		if err != nil {
			g.skipped(r.Context(), stream, seq, m.Subject(), err)
			return nil
		}
		add(seq, v)
		return nil
	})
	return last, more, err
}
