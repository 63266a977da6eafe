package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// errStop ends a Scan early.
var errStop = errors.New("stop scan")

// docJSON is one document as the console shows it.
type docJSON struct {
	Tenant     string                       `json:"tenant"`
	Collection string                       `json:"collection"`
	ID         string                       `json:"id"`
	Version    uint64                       `json:"version"`
	Deleted    bool                         `json:"deleted,omitempty"`
	Fields     events.Fields                `json:"fields"`
	HLC        events.HLC                   `json:"hlc"`
	Clocks     map[string]events.FieldClock `json:"clocks,omitempty"`
	Event      string                       `json:"event"`
	Client     string                       `json:"client"`
	Conflicts  []events.Conflict            `json:"conflicts"`
}

func toJSON(d projection.Doc) docJSON {
	if d.Fields == nil {
		d.Fields = events.Fields{}
	}
	if d.Conflicts == nil {
		d.Conflicts = []events.Conflict{}
	}
	return docJSON{Tenant: d.Tenant, Collection: d.Collection, ID: d.ID, Version: d.Version, Deleted: d.Deleted,
		Fields: d.Fields, HLC: d.HLC, Clocks: d.Clocks, Event: d.Event, Client: d.Client, Conflicts: d.Conflicts}
}

// me answers who is asking and which tenants it may pick.
func (c *Console) me(w http.ResponseWriter, r *http.Request, v viewer) (any, error) {
	tenants := []string{}
	if v.all {
		err := c.cfg.Store.Scan(r.Context(), func(d projection.Doc) error {
			if len(tenants) == 0 || tenants[len(tenants)-1] != d.Tenant {
				tenants = append(tenants, d.Tenant)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("scan view for tenants: %w", err)
		}
	} else {
		tenants = append(tenants, v.tenant)
	}
	return map[string]any{"user": v.name, "role": v.role, "admin": v.all, "tenants": tenants,
		"trace_url": c.cfg.TraceURL, "client_path": ClientPath}, nil
}

// docs lists one page of a collection's documents whose id contains q,
// in id order after the id `after`; it also names the tenant's collections.
func (c *Console) docs(w http.ResponseWriter, r *http.Request, v viewer) (any, error) {
	tenant, err := tenantParam(r, v)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	coll, search, after := q.Get("collection"), q.Get("q"), q.Get("after")
	limit, err := intParam(r, "limit", DefaultPage, maxPage)
	if err != nil {
		return nil, err
	}
	collections := []string{}
	page := []docJSON{}
	more := false
	err = c.cfg.Store.Scan(r.Context(), func(d projection.Doc) error {
		if d.Tenant != tenant {
			return nil
		}
		if len(collections) == 0 || collections[len(collections)-1] != d.Collection {
			collections = append(collections, d.Collection)
		}
		if coll == "" {
			coll = d.Collection
		}
		if d.Collection != coll || (after != "" && d.ID <= after) || !strings.Contains(d.ID, search) {
			return nil
		}
		if len(page) == limit {
			more = true
			return nil
		}
		page = append(page, toJSON(d))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan view of tenant %s: %w", tenant, err)
	}
	next := ""
	if more && len(page) > 0 {
		next = page[len(page)-1].ID
	}
	return map[string]any{"tenant": tenant, "collection": coll, "collections": collections, "docs": page,
		"more": more, "next": next}, nil
}

// historyEntry is one event of a document, as EVENTS holds it.
type historyEntry struct {
	Seq   uint64        `json:"stream_seq"`
	Time  time.Time     `json:"time"`
	Event *events.Event `json:"event,omitempty"`
	Error string        `json:"error,omitempty"`
	Trace string        `json:"trace,omitempty"`
}

// doc answers one document, its conflict records and the events that
// wrote it.
func (c *Console) doc(w http.ResponseWriter, r *http.Request, v viewer) (any, error) {
	tenant, err := tenantParam(r, v)
	if err != nil {
		return nil, err
	}
	addr := events.DocAddress{Tenant: tenant, Collection: r.URL.Query().Get("collection"), Doc: r.URL.Query().Get("id")}
	if addr.Collection == "" || addr.Doc == "" {
		return nil, status(http.StatusBadRequest, "query parameters collection and id are required")
	}
	d, err := c.cfg.Store.Get(r.Context(), addr)
	if err != nil {
		return nil, fmt.Errorf("get %s/%s/%s: %w", addr.Tenant, addr.Collection, addr.Doc, err)
	}
	if d.Version == 0 {
		return nil, status(http.StatusNotFound, "no document %s/%s/%s", addr.Tenant, addr.Collection, addr.Doc)
	}
	records, err := c.cfg.Store.Conflicts(r.Context(), addr)
	if err != nil {
		return nil, fmt.Errorf("conflicts of %s/%s/%s: %w", addr.Tenant, addr.Collection, addr.Doc, err)
	}
	if records == nil {
		records = []events.Conflict{}
	}
	filter := events.EventsPrefix + "." + events.EncodeToken(tenant) + ".*." + events.EncodeToken(addr.Collection) + "." + events.EncodeToken(addr.Doc)
	history := []historyEntry{}
	truncated, err := c.scan(r.Context(), events.StreamEvents, filter, func(m *jetstream.RawStreamMsg) error {
		history = append(history, eventEntry(m))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"doc": toJSON(d), "records": records, "history": history, "truncated": truncated}, nil
}

func eventEntry(m *jetstream.RawStreamMsg) historyEntry {
	h := historyEntry{Seq: m.Sequence, Time: m.Time, Trace: traceID(m.Header.Get("traceparent"))}
	var ev events.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		h.Error = "unreadable event: " + err.Error()
	} else {
		h.Event = &ev
	}
	return h
}

// conflicts lists the tenant's documents with open conflicts.
func (c *Console) conflicts(w http.ResponseWriter, r *http.Request, v viewer) (any, error) {
	tenant, err := tenantParam(r, v)
	if err != nil {
		return nil, err
	}
	out := []docJSON{}
	err = c.cfg.Store.Scan(r.Context(), func(d projection.Doc) error {
		if d.Tenant == tenant && len(d.Conflicts) > 0 {
			out = append(out, toJSON(d))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan view of tenant %s: %w", tenant, err)
	}
	return map[string]any{"tenant": tenant, "docs": out}, nil
}

// deadJSON is one dead letter.
type deadJSON struct {
	Seq    uint64             `json:"seq"`
	Time   time.Time          `json:"time"`
	Letter *events.DeadLetter `json:"letter,omitempty"`
	Error  string             `json:"error,omitempty"`
}

// dead lists the newest dead letters (of one tenant, or all for an admin
// asking without a tenant).
func (c *Console) dead(w http.ResponseWriter, r *http.Request, v viewer) (any, error) {
	filter := events.DeadPrefix + ".>"
	if t := r.URL.Query().Get("tenant"); t != "" || !v.all {
		tenant, err := tenantParam(r, v)
		if err != nil {
			return nil, err
		}
		filter = events.DeadSubject(tenant)
	}
	out := []deadJSON{}
	truncated, err := c.scan(r.Context(), events.StreamDead, filter, func(m *jetstream.RawStreamMsg) error {
		d := deadJSON{Seq: m.Sequence, Time: m.Time}
		var dl events.DeadLetter
		if err := json.Unmarshal(m.Data, &dl); err != nil {
			d.Error = "unreadable dead letter: " + err.Error()
		} else {
			d.Letter = &dl
		}
		out = append(out, d)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"dead": out, "truncated": truncated}, nil
}

// clientRejections counts one client's refused writes.
type clientRejections struct {
	Client   string           `json:"client"`
	Outcomes map[string]int   `json:"outcomes"`
	Latest   []events.Receipt `json:"latest"` // the newest few, newest first
}

const latestRejections = 5

// refused reports whether a receipt tells its writer the write did not
// apply.
func refused(o events.Outcome) bool {
	return o != events.OutcomeApplied && o != events.OutcomeMerged && o != events.OutcomeDuplicate
}

// rejections counts the refused writes of each client of a tenant.
func (c *Console) rejections(w http.ResponseWriter, r *http.Request, v viewer) (any, error) {
	tenant, err := tenantParam(r, v)
	if err != nil {
		return nil, err
	}
	by := map[string]*clientRejections{}
	total := map[string]int{}
	filter := events.ReceiptsPrefix + "." + events.EncodeToken(tenant) + ".>"
	truncated, err := c.scan(r.Context(), events.StreamReceipts, filter, func(m *jetstream.RawStreamMsg) error {
		var rc events.Receipt
		if json.Unmarshal(m.Data, &rc) != nil || rc.Tenant != tenant {
			return nil
		}
		total[string(rc.Outcome)]++
		if !refused(rc.Outcome) {
			return nil
		}
		cr := by[rc.Client]
		if cr == nil {
			cr = &clientRejections{Client: rc.Client, Outcomes: map[string]int{}}
			by[rc.Client] = cr
		}
		cr.Outcomes[string(rc.Outcome)]++
		cr.Latest = append([]events.Receipt{rc}, cr.Latest...)
		if len(cr.Latest) > latestRejections {
			cr.Latest = cr.Latest[:latestRejections]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	clients := make([]*clientRejections, 0, len(by))
	for _, cr := range by {
		clients = append(clients, cr)
	}
	slices.SortFunc(clients, func(a, b *clientRejections) int { return strings.Compare(a.Client, b.Client) })
	return map[string]any{"tenant": tenant, "clients": clients, "outcomes": total, "truncated": truncated}, nil
}

// streamJSON is one stream's state.
type streamJSON struct {
	Name     string    `json:"name"`
	Messages uint64    `json:"messages"`
	Bytes    uint64    `json:"bytes"`
	FirstSeq uint64    `json:"first_seq"`
	LastSeq  uint64    `json:"last_seq"`
	Subjects uint64    `json:"subjects"`
	Created  time.Time `json:"created"`
	Error    string    `json:"error,omitempty"`
}

// streams answers the four streams, the projector's checkpoint and lag
// (with the lag samples kept so far), outcomes counted from RECEIPTS and
// conflict records by policy and status. Admin only under auth: it counts
// every tenant.
func (c *Console) streams(w http.ResponseWriter, r *http.Request, v viewer) (any, error) {
	if !v.all {
		return nil, status(http.StatusForbidden, "forbidden: user %s may not read the streams (admin only)", v.name)
	}
	ctx := r.Context()
	var list []streamJSON
	var eventsLast uint64
	for _, name := range []string{events.StreamEvents, events.StreamChanges, events.StreamReceipts, events.StreamDead} {
		s := streamJSON{Name: name}
		st, err := c.cfg.JetStream.Stream(ctx, name)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx)
		}
		if err != nil {
			s.Error = err.Error()
		} else {
			s.Messages, s.Bytes, s.FirstSeq, s.LastSeq = info.State.Msgs, info.State.Bytes, info.State.FirstSeq, info.State.LastSeq
			s.Subjects, s.Created = info.State.NumSubjects, info.Created
			if name == events.StreamEvents {
				eventsLast = s.LastSeq
			}
		}
		list = append(list, s)
	}
	checkpoint, err := c.cfg.Store.Checkpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("read projector checkpoint: %w", err)
	}
	lag := uint64(0)
	if eventsLast > checkpoint {
		lag = eventsLast - checkpoint
	}
	samples := c.sample(time.Now(), lag)

	policies := map[string]map[string]int{}
	err = c.cfg.Store.ScanConflicts(ctx, func(cr projection.ConflictRecord) error {
		p := string(cr.Conflict.Policy)
		if policies[p] == nil {
			policies[p] = map[string]int{}
		}
		policies[p][string(cr.Conflict.Status)]++
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan conflict records: %w", err)
	}
	outcomes := map[string]int{}
	truncated, err := c.scan(ctx, events.StreamReceipts, events.ReceiptsPrefix+".>", func(m *jetstream.RawStreamMsg) error {
		var rc events.Receipt
		if json.Unmarshal(m.Data, &rc) == nil {
			outcomes[string(rc.Outcome)]++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"streams": list, "checkpoint": checkpoint, "lag": lag, "lag_samples": samples,
		"outcomes": outcomes, "outcomes_truncated": truncated, "conflicts_by_policy": policies}, nil
}

// sample records the lag at now (at most one sample a second) and returns
// the samples kept.
func (c *Console) sample(now time.Time, lag uint64) []lagSample {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.lag); n == 0 || now.Sub(c.lag[n-1].At) >= time.Second {
		c.lag = append(c.lag, lagSample{At: now.UTC(), Lag: lag})
		if len(c.lag) > lagSamples {
			c.lag = slices.Delete(c.lag, 0, len(c.lag)-lagSamples)
		}
	}
	return slices.Clone(c.lag)
}

// journey follows one write: the event on EVENTS, its receipt, the change
// it made and the trace id its headers carry.
func (c *Console) journey(w http.ResponseWriter, r *http.Request, v viewer) (any, error) {
	tenant, err := tenantParam(r, v)
	if err != nil {
		return nil, err
	}
	id := strings.TrimSpace(r.URL.Query().Get("event"))
	if _, err := events.ParseID(id); err != nil {
		return nil, status(http.StatusBadRequest, "query parameter event: %v", err)
	}
	ctx := r.Context()
	out := map[string]any{"event_id": id, "tenant": tenant}
	var receipt *events.Receipt
	filter := events.ReceiptsPrefix + "." + events.EncodeToken(tenant) + ".>"
	_, err = c.scan(ctx, events.StreamReceipts, filter, func(m *jetstream.RawStreamMsg) error {
		var rc events.Receipt
		if json.Unmarshal(m.Data, &rc) == nil && rc.Event == id && rc.Tenant == tenant {
			receipt = &rc
			out["receipt"] = rc
			out["receipt_seq"] = m.Sequence
			out["receipt_trace"] = traceID(m.Header.Get("traceparent"))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var event *historyEntry
	if receipt != nil && receipt.Stream > 0 {
		if st, err := c.cfg.JetStream.Stream(ctx, events.StreamEvents); err == nil {
			if m, err := st.GetMsg(ctx, receipt.Stream); err == nil {
				e := eventEntry(m)
				if e.Event != nil && e.Event.ID == id {
					event = &e
				}
			}
		}
	}
	if event == nil {
		_, err = c.scan(ctx, events.StreamEvents, events.TenantEvents(tenant), func(m *jetstream.RawStreamMsg) error {
			e := eventEntry(m)
			if e.Event != nil && e.Event.ID == id {
				event = &e
				return errStop
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if event != nil {
		out["event"] = event
		out["trace"] = event.Trace
		if c.cfg.TraceURL != "" && event.Trace != "" {
			out["trace_link"] = strings.ReplaceAll(c.cfg.TraceURL, "{trace}", event.Trace)
		}
		addr := event.Event.Address()
		d, err := c.cfg.Store.Get(ctx, addr)
		if err != nil {
			return nil, fmt.Errorf("get %s/%s/%s: %w", addr.Tenant, addr.Collection, addr.Doc, err)
		}
		if d.Version > 0 {
			out["doc"] = toJSON(d)
			out["current"] = d.Event == id
		}
	}
	if event == nil && receipt == nil {
		return nil, status(http.StatusNotFound, "event %s of tenant %s: not in the newest %d messages of EVENTS or RECEIPTS", id, tenant, c.cfg.MaxScan)
	}
	return out, nil
}

// traceID returns the trace id of a W3C traceparent, or "".
func traceID(traceparent string) string {
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		return ""
	}
	return parts[1]
}

// scan calls fn for each message of stream on filter among its newest
// MaxScan sequences, in order, until fn returns errStop (not an error) or
// another error. truncated reports that older messages were left out.
func (c *Console) scan(ctx context.Context, stream, filter string, fn func(*jetstream.RawStreamMsg) error) (truncated bool, err error) {
	st, err := c.cfg.JetStream.Stream(ctx, stream)
	if err != nil {
		return false, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("stream %s info: %w", stream, err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		return false, nil
	}
	seq := first
	if last-first+1 > uint64(c.cfg.MaxScan) {
		seq, truncated = last-uint64(c.cfg.MaxScan)+1, true
	}
	for seq <= last {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return truncated, nil
		}
		if err != nil {
			return truncated, fmt.Errorf("read %s from %d on %s: %w", stream, seq, filter, err)
		}
		if m.Sequence > last {
			return truncated, nil
		}
		if err := fn(m); err != nil {
			if errors.Is(err, errStop) {
				return truncated, nil
			}
			return truncated, err
		}
		seq = m.Sequence + 1
	}
	return truncated, nil
}
