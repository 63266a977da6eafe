package consumer

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
	"github.com/ebbsync/ebb/projection"
)

// Doc is a document as the app sees it: the synced state with the replica's
// pending writes applied on top.
type Doc struct {
	Collection string
	ID         string
	// Version is the version of this state: the server's, or the one the
	// pending writes will give it if the server applies them as predicted.
	Version uint64
	// Deleted: the document is a tombstone (Get reports ErrNotFound).
	Deleted bool
	Fields  events.Fields
	// Pending counts local writes included here that the server has not
	// settled yet.
	Pending int
	// Conflicts are the document's open (manual) conflicts; settle one with
	// Resolve.
	Conflicts []events.Conflict
}

// overlay applies the unsettled entries es (of one document, in log order)
// on top of the synced state cur with the replica's policies, exactly as the
// server will decide them if it sees the same state.
func (r *Replica) overlay(cur projection.Doc, es []producer.Entry) (projection.Doc, int, error) {
	n := 0
	for _, e := range es {
		if e.State == producer.StateFailed {
			continue // refused for good: it will never apply
		}
		d, err := projection.Decide(r.cfg.Policies, cur, e.Event)
		if err != nil {
			return cur, n, fmt.Errorf("apply pending event %s: %w", e.Event.ID, err)
		}
		if d.Doc != nil {
			cur = *d.Doc
		}
		n++
	}
	return cur, n, nil
}

func toDoc(collection, id string, d projection.Doc, pending int) Doc {
	var open []events.Conflict
	for _, c := range d.Conflicts {
		if c.Status == events.ConflictOpen {
			open = append(open, c)
		}
	}
	return Doc{Collection: collection, ID: id, Version: d.Version, Deleted: d.Deleted, Fields: d.Fields, Pending: pending, Conflicts: open}
}

// pendingIn groups the log's unsettled entries of collection by document
// key; it reads only that collection's (Log.UnsettledIn).
func (r *Replica) pendingIn(tx *producer.Tx, collection string) (map[string][]producer.Entry, error) {
	es, err := tx.UnsettledIn(collection)
	if err != nil {
		return nil, err
	}
	m := make(map[string][]producer.Entry)
	for _, e := range es {
		k := string(docKey(e.Event.Collection, e.Event.Doc))
		m[k] = append(m[k], e)
	}
	return m, nil
}

// localDoc returns the view of one document inside tx.
func (r *Replica) localDoc(tx *producer.Tx, collection, id string) (Doc, error) {
	key := docKey(collection, id)
	cur, err := syncedDoc(tx, r.seal, r.tenant, key)
	if err != nil {
		return Doc{}, err
	}
	pend, err := tx.UnsettledFor(collection, id)
	if err != nil {
		return Doc{}, err
	}
	d, n, err := r.overlay(cur, pend)
	if err != nil {
		return Doc{}, err
	}
	return toDoc(collection, id, d, n), nil
}

// Get returns the document as the app sees it: synced state plus pending
// local writes. A document that does not exist or is deleted is ErrNotFound.
func (r *Replica) Get(ctx context.Context, collection, id string) (Doc, error) {
	if err := ctx.Err(); err != nil {
		return Doc{}, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	if err := r.checkOpen(); err != nil {
		return Doc{}, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	var d Doc
	err := r.log.View(ctx, func(tx *producer.Tx) (err error) {
		d, err = r.localDoc(tx, collection, id)
		return err
	})
	if err != nil {
		return Doc{}, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	if d.Version == 0 || d.Deleted {
		return d, fmt.Errorf("get %s/%s: %w", collection, id, ErrNotFound)
	}
	return d, nil
}

// List returns the live documents of collection, ordered by id. With
// tombstones, deleted documents are included too.
func (r *Replica) List(ctx context.Context, collection string, tombstones bool) ([]Doc, error) {
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	var out []Doc
	err := r.log.View(ctx, func(tx *producer.Tx) error {
		pend, err := r.pendingIn(tx, collection)
		if err != nil {
			return err
		}
		prefix := collectionPrefix(collection)
		c := tx.Bucket(bucketDocs).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			cur, err := decodeSynced(r.seal, r.tenant, k, v)
			if err != nil {
				return err
			}
			d, n, err := r.overlay(cur, pend[string(k)])
			if err != nil {
				return err
			}
			delete(pend, string(k))
			_, id := splitDocKey(k)
			out = append(out, toDoc(collection, id, d, n))
		}
		for k, es := range pend { // documents only pending writes have made
			if col, id := splitDocKey([]byte(k)); col == collection {
				d, n, err := r.overlay(projection.Doc{}, es)
				if err != nil {
					return err
				}
				out = append(out, toDoc(collection, id, d, n))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	out = slices.DeleteFunc(out, func(d Doc) bool { return d.Version == 0 || (d.Deleted && !tombstones) })
	slices.SortFunc(out, func(a, b Doc) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Conflict is an open conflict on a document of the replica's view.
type Conflict struct {
	Collection, Doc string
	Conflict        events.Conflict
}

// Conflicts returns the open conflicts of the synced view, for the app to
// let its user choose and Resolve.
func (r *Replica) Conflicts(ctx context.Context) ([]Conflict, error) {
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("list conflicts: %w", err)
	}
	var out []Conflict
	err := r.log.View(ctx, func(tx *producer.Tx) error {
		return tx.Bucket(bucketConflicts).ForEach(func(k, _ []byte) error {
			d, err := syncedDoc(tx, r.seal, r.tenant, k)
			if err != nil {
				return err
			}
			col, id := splitDocKey(k)
			for _, c := range d.Conflicts {
				if c.Status == events.ConflictOpen {
					out = append(out, Conflict{Collection: col, Doc: id, Conflict: c})
				}
			}
			return ctx.Err()
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list conflicts: %w", err)
	}
	return out, nil
}

// Rejections returns the local writes the server rejected, not yet dismissed.
func (r *Replica) Rejections(ctx context.Context) ([]Rejection, error) {
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("list rejections: %w", err)
	}
	var out []Rejection
	err := r.log.View(ctx, func(tx *producer.Tx) error {
		return tx.Bucket(bucketRejections).ForEach(func(k, v []byte) error {
			var rej Rejection
			if err := getJSON(r.seal, bucketRejections, k, v, &rej); err != nil {
				return fmt.Errorf("read rejection %s: %w", k, err)
			}
			out = append(out, rej)
			return ctx.Err()
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list rejections: %w", err)
	}
	return out, nil
}

// DismissRejection forgets a rejection the app has dealt with.
func (r *Replica) DismissRejection(ctx context.Context, event string) error {
	if err := r.checkOpen(); err != nil {
		return fmt.Errorf("dismiss rejection %s: %w", event, err)
	}
	err := r.log.Update(ctx, func(tx *producer.Tx) error {
		return tx.Bucket(bucketRejections).Delete([]byte(event))
	})
	if err != nil {
		return fmt.Errorf("dismiss rejection %s: %w", event, err)
	}
	return nil
}
