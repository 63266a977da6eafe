package gateway

import (
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
	"github.com/ebbsync/ebb/events"
)

// PushResult is the fate of one event of a pushed batch.
type PushResult struct {
	ID        string `json:"id,omitempty"`
	Status    string `json:"status"` // accepted, duplicate, invalid, failed
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	Error     string `json:"error,omitempty"`
	Field     string `json:"field,omitempty"`
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
	g.injectTrace(ctx, msg)
	ack, err := g.cfg.JetStream.PublishMsg(ctx, msg)
	if err != nil {
		g.log.WarnContext(ctx, "push: publish event failed", "event", ev.ID, "err", err)
		return PushResult{ID: ev.ID, Status: StatusFailed, Error: err.Error()}
	}
	if ack.Duplicate {
		return PushResult{ID: ev.ID, Status: StatusDuplicate, StreamSeq: ack.Sequence}
	}
	return PushResult{ID: ev.ID, Status: StatusAccepted, StreamSeq: ack.Sequence}
}

// ChangeEntry is one change of a pull, with its CHANGES sequence.
type ChangeEntry struct {
	Seq    uint64         `json:"seq"`
	Change *events.Change `json:"change"`
}

// ChangesResponse answers a pull of changes. Pass LastSeq as the next
// request's after.
type ChangesResponse struct {
	Changes []ChangeEntry `json:"changes"`
	LastSeq uint64        `json:"last_seq"`
	More    bool          `json:"more"` // more changes are waiting after LastSeq
}

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
}

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

func (g *Gateway) pullChanges(w http.ResponseWriter, r *http.Request) {
	tenant, err := g.tenant(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	resp := ChangesResponse{Changes: []ChangeEntry{}}
	resp.LastSeq, resp.More, err = pull(g, r, events.StreamChanges, events.TenantChanges(tenant), readChange,
		func(seq uint64, c *events.Change) {
			resp.Changes = append(resp.Changes, ChangeEntry{Seq: seq, Change: c})
		})
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
	resp := ReceiptsResponse{Receipts: []ReceiptEntry{}}
	resp.LastSeq, resp.More, err = pull(g, r, events.StreamReceipts, events.ReceiptSubject(tenant, client), readReceipt,
		func(seq uint64, rc *events.Receipt) {
			resp.Receipts = append(resp.Receipts, ReceiptEntry{Seq: seq, Receipt: rc})
		})
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// pull reads the page the request asks for (after, limit, wait) of stream
// on filter, reads each message with read (which decodes it and checks it
// against its subject) and hands it to add. A message read refuses is
// skipped (counted and logged), never served and never fatal. It returns
// the sequence to pass as the next after, past skipped messages too, and
// whether more are waiting.
func pull[T any](g *Gateway, r *http.Request, stream, filter string, read func(subject string, data []byte) (T, error), add func(uint64, T)) (last uint64, more bool, err error) {
	after, limit, wait, err := g.page(r)
	if err != nil {
		return 0, false, err
	}
	if wait > 0 {
		release, err := g.longPolls.acquire(longPollUser(r))
		if err != nil {
			return 0, false, err
		}
		defer release()
	}
	last = after
	more, err = g.readAfter(r.Context(), stream, filter, after, limit, wait, func(seq uint64, subject string, data []byte) error {
		last = seq
		v, err := read(subject, data)
		if err != nil {
			g.skipped(r.Context(), stream, seq, subject, err)
			return nil
		}
		add(seq, v)
		return nil
	})
	return last, more, err
}

// readAfter hands fn up to limit messages of stream on filter with sequence
// after `after`, in order. With none there and wait > 0 it waits up to wait
// for the first. It reports whether more messages are waiting.
func (g *Gateway) readAfter(ctx context.Context, stream, filter string, after uint64, limit int, wait time.Duration,
	fn func(seq uint64, subject string, data []byte) error) (more bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout+wait)
	defer cancel()
	cons, err := g.cfg.JetStream.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{filter},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       after + 1,
		InactiveThreshold: 5 * time.Second,
	})
	if err != nil {
		return false, fmt.Errorf("read %s after %d: %w", stream, after, err)
	}
	handle := func(m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: message metadata: %w", stream, err)
		}
		more = md.NumPending > 0
		return fn(md.Sequence.Stream, m.Subject(), m.Data())
	}
	n := 0
	if wait > 0 {
		// Long-poll: the first message may not exist yet.
		m, err := cons.Next(jetstream.FetchMaxWait(wait))
		switch {
		case errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoMessages):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("read %s after %d: %w", stream, after, err)
		}
		if err := handle(m); err != nil {
			return false, err
		}
		n++
		if !more {
			return false, nil
		}
	}
	if n < limit {
		batch, err := cons.FetchNoWait(limit - n)
		if err != nil {
			return false, fmt.Errorf("read %s after %d: %w", stream, after, err)
		}
		for m := range batch.Messages() {
			if err := handle(m); err != nil {
				return false, err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return false, fmt.Errorf("read %s after %d: %w", stream, after, err)
		}
	}
	return more, nil
}
