package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// DocRecord is one document as the server view holds it; `ebb get --json`
// prints the same shape.
type DocRecord struct {
	Collection string            `json:"collection"`
	ID         string            `json:"id"`
	Version    uint64            `json:"version"`
	Deleted    bool              `json:"deleted"`
	Conflicts  []events.Conflict `json:"conflicts"`
	Doc        events.Fields     `json:"doc"`
}

func recordOf(c *events.Change) DocRecord {
	rec := DocRecord{Collection: c.Collection, ID: c.Doc, Version: c.Version, Deleted: c.Deleted,
		Conflicts: c.Conflicts, Doc: c.Fields}
	if rec.Conflicts == nil {
		rec.Conflicts = []events.Conflict{}
	}
	if rec.Doc == nil {
		rec.Doc = events.Fields{}
	}
	return rec
}

func (g *Gateway) getDoc(w http.ResponseWriter, r *http.Request) {
	tenant, err := g.tenant(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	coll, id := r.PathValue("collection"), r.PathValue("id")
	if err := errors.Join(events.ValidateName("collection", coll, g.cfg.Limits.MaxNameBytes),
		events.ValidateName("doc", id, g.cfg.Limits.MaxDocIDBytes)); err != nil {
		g.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.Timeout)
	defer cancel()
	st, err := g.cfg.JetStream.Stream(ctx, events.StreamChanges)
	if err != nil {
		g.fail(w, r, fmt.Errorf("get %s/%s: %w", coll, id, err))
		return
	}
	m, err := st.GetLastMsgForSubject(ctx, events.ChangeSubject(tenant, coll, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		g.fail(w, r, fmt.Errorf("document %s/%s: %w", coll, id, errNotFound))
		return
	}
	if err != nil {
		g.fail(w, r, fmt.Errorf("get %s/%s: %w", coll, id, err))
		return
	}
	c, err := readChange(m.Subject, m.Data)
	if err != nil {
		g.skipped(r.Context(), events.StreamChanges, m.Sequence, m.Subject, err)
		g.fail(w, r, fmt.Errorf("document %s/%s: its last message in CHANGES (sequence %d) is not a change of it: %w", coll, id, m.Sequence, errNotFound))
		return
	}
	if c.Deleted {
		g.fail(w, r, fmt.Errorf("document %s/%s: deleted at version %d: %w", coll, id, c.Version, errNotFound))
		return
	}
	writeJSON(w, http.StatusOK, recordOf(c))
}

func (g *Gateway) listDocs(w http.ResponseWriter, r *http.Request) {
	tenant, err := g.tenant(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	coll := r.PathValue("collection")
	if err := events.ValidateName("collection", coll, g.cfg.Limits.MaxNameBytes); err != nil {
		g.fail(w, r, err)
		return
	}
	withDeleted := r.URL.Query().Get("deleted") == "true"
	docs := []DocRecord{}
	err = g.lastPerSubject(r.Context(), events.CollectionChanges(tenant, coll), func(c *events.Change) {
		if !c.Deleted || withDeleted {
			docs = append(docs, recordOf(c))
		}
	})
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, docs)
}

func (g *Gateway) conflicts(w http.ResponseWriter, r *http.Request) {
	tenant, err := g.tenant(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	docs := []DocRecord{}
	err = g.lastPerSubject(r.Context(), events.TenantChanges(tenant), func(c *events.Change) {
		if len(c.Conflicts) > 0 {
			docs = append(docs, recordOf(c))
		}
	})
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, docs)
}

// lastPerSubject hands fn the current change of every document on filter;
// a document whose last message is not its change is skipped (counted and
// logged).
func (g *Gateway) lastPerSubject(ctx context.Context, filter string, fn func(*events.Change)) error {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	cons, err := g.cfg.JetStream.OrderedConsumer(ctx, events.StreamChanges, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{filter},
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		InactiveThreshold: 5 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("list %s: %w", filter, err)
	}
	for {
		batch, err := cons.FetchNoWait(g.cfg.MaxPage)
		if err != nil {
			return fmt.Errorf("list %s: %w", filter, err)
		}
		n, more := 0, false
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("list %s: message metadata: %w", filter, err)
			}
			more = md.NumPending > 0
			c, err := readChange(m.Subject(), m.Data())
			if err != nil {
				g.skipped(ctx, events.StreamChanges, md.Sequence.Stream, m.Subject(), err)
				continue
			}
			fn(c)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("list %s: %w", filter, err)
		}
		if n == 0 || !more {
			return nil
		}
	}
}
