package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"

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
	tenant, coll, id, ok := g.docPath(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.Timeout)
	defer cancel()
	c, err := g.lastChange(ctx, tenant, coll, id)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if _, filtered := g.principals(ctx); c.Deleted && filtered {
		// Under sync rules a tombstone says nothing: not whose it was,
		// nor its version, worded as a document that never existed.
		g.fail(w, r, fmt.Errorf("document %s/%s: %w", coll, id, errNotFound))
		return
	}
	if c.Deleted {
		g.fail(w, r, fmt.Errorf("document %s/%s: deleted at version %d: %w", coll, id, c.Version, errNotFound))
		return
	}
	if err := g.mayRead(ctx, c); err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, recordOf(c))
}

// mayRead fails with errNotFound, worded as for a document that does not
// exist, when the request's user may not read c's document (sync rules).
func (g *Gateway) mayRead(ctx context.Context, c *events.Change) error {
	p, filtered := g.principals(ctx)
	ok, err := g.visible(ctx, p, filtered, c)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("document %s/%s: %w", c.Collection, c.Doc, errNotFound)
	}
	return nil
}

// lastChange reads the document's last change in CHANGES, a tombstone
// included. A document that never existed, or whose last message is not a
// readable change of it (skipped, as every reader does), is errNotFound.
func (g *Gateway) lastChange(ctx context.Context, tenant, coll, id string) (*events.Change, error) {
	st, err := g.cfg.JetStream.Stream(ctx, events.StreamChanges)
	if err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", coll, id, err)
	}
	m, err := st.GetLastMsgForSubject(ctx, events.ChangeSubject(tenant, coll, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("document %s/%s: %w", coll, id, errNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", coll, id, err)
	}
	c, err := readChange(m.Subject, m.Data)
	if err != nil {
		g.skipped(ctx, events.StreamChanges, m.Sequence, m.Subject, err)
		return nil, fmt.Errorf("document %s/%s: its last message in CHANGES (sequence %d) is not a change of it: %w", coll, id, m.Sequence, errNotFound)
	}
	return c, nil
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
	g.listPage(w, r, events.CollectionChanges(tenant, coll), func(c *events.Change) bool { return !c.Deleted || withDeleted })
}

func (g *Gateway) conflicts(w http.ResponseWriter, r *http.Request) {
	tenant, err := g.tenant(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	g.listPage(w, r, events.TenantChanges(tenant), func(c *events.Change) bool { return len(c.Conflicts) > 0 })
}

// listPage answers one page of the documents on filter that keep accepts.
// CHANGES holds one message per document, its current state, so a page is
// the changes feed's page (after, limit; no wait) with the documents keep
// refuses left out: a page may hold fewer than limit documents, even none,
// while more is true. A document written while a client pages through may
// come again on a later page, at its newer state; none is missed. Under
// sync rules a client user's page leaves out the documents it may not read
// (Visibility).
func (g *Gateway) listPage(w http.ResponseWriter, r *http.Request, filter string, keep func(*events.Change) bool) {
	q := r.URL.Query()
	if q.Has("wait") {
		g.fail(w, r, bad("query parameter wait: lists do not long-poll; use the changes feed"))
		return
	}
	resp := DocsResponse{Docs: []DocRecord{}}
	p, filtered := g.principals(r.Context())
	var verr error
	var err error
	resp.LastSeq, resp.More, err = pull(g, r, events.StreamChanges, []string{filter}, readChange, func(_ uint64, c *events.Change) {
		if !keep(c) || verr != nil {
			return
		}
		ok, err := g.visible(r.Context(), p, filtered, c)
		if err != nil {
			verr = err
			return
		}
		if ok {
			resp.Docs = append(resp.Docs, recordOf(c))
		}
	})
	if err == nil {
		err = verr
	}
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// DocsResponse answers a list of documents (GET /docs/{collection},
// /conflicts): one page of them. Pass LastSeq as the next request's after.
type DocsResponse struct {
	Docs    []DocRecord `json:"docs"`
	LastSeq uint64      `json:"last_seq"`
	More    bool        `json:"more"` // more documents may follow after LastSeq
}

// docPath reads and checks the tenant, collection and id of a
// /v1/{tenant}/docs/{collection}/{id} request; on a bad one it has answered
// the error and reports false.
func (g *Gateway) docPath(w http.ResponseWriter, r *http.Request) (tenant, coll, id string, ok bool) {
	tenant, err := g.tenant(r)
	if err != nil {
		g.fail(w, r, err)
		return "", "", "", false
	}
	coll, id = r.PathValue("collection"), r.PathValue("id")
	if err := errors.Join(events.ValidateName("collection", coll, g.cfg.Limits.MaxNameBytes),
		events.ValidateName("doc", id, g.cfg.Limits.MaxDocIDBytes)); err != nil {
		g.fail(w, r, err)
		return "", "", "", false
	}
	return tenant, coll, id, true
}
