package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/ebbsync/ebb/events"
)

// History is what the history route reads: a document's conflict records
// in the server view (projection.Store has it).
type History interface {
	Conflicts(ctx context.Context, addr events.DocAddress) ([]events.Conflict, error)
}

// HistoryResponse is GET /v1/{tenant}/docs/{collection}/{id}/history.
type HistoryResponse struct {
	Collection string            `json:"collection"`
	ID         string            `json:"id"`
	Conflicts  []events.Conflict `json:"conflicts"` // by conflict id (the id of the event that raised it)
}

// errNoHistory answers 501: the server runs without a view to read.
var errNoHistory = errors.New("this server does not serve conflict history")

func (g *Gateway) history(w http.ResponseWriter, r *http.Request) {
	tenant, coll, id, ok := g.docPath(w, r)
	if !ok {
		return
	}
	if g.cfg.History == nil {
		writeError(w, http.StatusNotImplemented, errNoHistory)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.Timeout)
	defer cancel()
	if _, filtered := g.principals(ctx); filtered {
		// Under sync rules, a document the user may not read has no
		// history it may see: 404, as if it did not exist.
		c, err := g.lastChange(ctx, tenant, coll, id)
		if err == nil {
			err = g.mayRead(ctx, c)
		}
		if err != nil {
			g.fail(w, r, err)
			return
		}
	}
	cs, err := g.cfg.History.Conflicts(ctx, events.DocAddress{Tenant: tenant, Collection: coll, Doc: id})
	if err != nil {
		g.fail(w, r, fmt.Errorf("conflict history of %s/%s: %w", coll, id, err))
		return
	}
	if cs == nil {
		cs = []events.Conflict{}
	}
	writeJSON(w, http.StatusOK, HistoryResponse{Collection: coll, ID: id, Conflicts: cs})
}
