package consumer

import (
	"context"
	"fmt"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// basis is what a new write of a document builds on: the version the
// replica last had from the server, and its own latest pending write of the
// document, if any (events.Event.After). A failed write never reaches the
// server, so nothing builds on it.
func (r *Replica) basis(tx *producer.Tx, collection, id string) (base uint64, after string, err error) {
	key := docKey(collection, id)
	synced, err := syncedDoc(tx, r.seal, r.tenant, key)
	if err != nil {
		return 0, "", err
	}
	pend, err := tx.UnsettledFor(collection, id)
	if err != nil {
		return 0, "", err
	}
	for _, e := range pend {
		if e.State != producer.StateFailed {
			after = e.Event.ID
		}
	}
	return synced.Version, after, nil
}

// prepare is the producer.Prepare of the replica's writes: it sets a
// write's base version and After from what tx holds (basis).
func (r *Replica) prepare(tx *producer.Tx, w *producer.Write) error {
	var err error
	w.BaseVersion, w.After, err = r.basis(tx, w.Collection, w.Doc)
	return err
}

// write appends one write to the log with the version the app currently
// sees as its base, and returns the new local view of the document.
func (r *Replica) write(ctx context.Context, w producer.Write) (Doc, error) {
	if !r.inScope(w.Collection) {
		return Doc{}, fmt.Errorf("%s %s/%s: %w", w.Op, w.Collection, w.Doc, ErrOutOfScope)
	}
	if err := r.checkOpen(); err != nil {
		return Doc{}, fmt.Errorf("%s %s/%s: %w", w.Op, w.Collection, w.Doc, err)
	}
	// The base is read inside the log's transaction (prepare), so
	// concurrent writes are group-committed and still each build on the
	// one stored before it.
	if _, err := r.log.AppendWith(ctx, []producer.Write{w}, r.prepare); err != nil {
		return Doc{}, fmt.Errorf("%s %s/%s: %w", w.Op, w.Collection, w.Doc, err)
	}
	// Committed: the write will be published whatever ctx does now, so
	// reading it back must not fail because the caller gave up.
	var d Doc
	err := r.log.View(context.WithoutCancel(ctx), func(tx *producer.Tx) (err error) {
		d, err = r.localDoc(tx, w.Collection, w.Doc)
		return err
	})
	if err != nil {
		return Doc{}, fmt.Errorf("%s %s/%s: %w", w.Op, w.Collection, w.Doc, err)
	}
	r.committed([][]byte{docKey(w.Collection, w.Doc)})
	return d, nil
}

// Put replaces (or creates) a document. The write is durable when Put
// returns and shows in the view at once; it reaches the server when the
// replica is attached.
func (r *Replica) Put(ctx context.Context, collection, id string, fields events.Fields) (Doc, error) {
	return r.write(ctx, producer.Write{Collection: collection, Doc: id, Op: events.OpPut, Fields: fields})
}

// Patch sets the given fields of an existing document; a JSON null removes
// a field.
func (r *Replica) Patch(ctx context.Context, collection, id string, fields events.Fields) (Doc, error) {
	return r.write(ctx, producer.Write{Collection: collection, Doc: id, Op: events.OpPatch, Fields: fields})
}

// Delete deletes a document (a tombstone remains).
func (r *Replica) Delete(ctx context.Context, collection, id string) (Doc, error) {
	return r.write(ctx, producer.Write{Collection: collection, Doc: id, Op: events.OpDelete})
}

// Resolve settles the open conflict conflictID on a document with fields as
// its new state.
func (r *Replica) Resolve(ctx context.Context, collection, id, conflictID string, fields events.Fields) (Doc, error) {
	return r.write(ctx, producer.Write{Collection: collection, Doc: id, Op: events.OpResolve, Fields: fields, Resolves: conflictID})
}
