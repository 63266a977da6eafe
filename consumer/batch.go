package consumer

import (
	"context"
	"errors"
	"fmt"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// WriteBatch collects the writes of one Replica.Batch. Its methods only
// record a write (the view does not change until the batch commits); each
// write becomes its own event, based on the writes recorded before it.
// A WriteBatch must not be used after its fn returns.
type WriteBatch struct {
	r   *Replica
	ws  []producer.Write
	err error
}

func (b *WriteBatch) add(w producer.Write) error {
	if !b.r.inScope(w.Collection) {
		err := fmt.Errorf("%s %s/%s: %w", w.Op, w.Collection, w.Doc, ErrOutOfScope)
		b.err = errors.Join(b.err, err)
		return err
	}
	b.ws = append(b.ws, w)
	return nil
}

// Put records a put of a document (see Replica.Put). It fails only if the
// collection is out of the replica's scope; so does the batch then.
func (b *WriteBatch) Put(collection, id string, fields events.Fields) error {
	return b.add(producer.Write{Collection: collection, Doc: id, Op: events.OpPut, Fields: fields})
}

// Patch records a patch (see Replica.Patch).
func (b *WriteBatch) Patch(collection, id string, fields events.Fields) error {
	return b.add(producer.Write{Collection: collection, Doc: id, Op: events.OpPatch, Fields: fields})
}

// Delete records a delete (see Replica.Delete).
func (b *WriteBatch) Delete(collection, id string) error {
	return b.add(producer.Write{Collection: collection, Doc: id, Op: events.OpDelete})
}

// Resolve records a resolve (see Replica.Resolve).
func (b *WriteBatch) Resolve(collection, id, conflictID string, fields events.Fields) error {
	return b.add(producer.Write{Collection: collection, Doc: id, Op: events.OpResolve, Fields: fields, Resolves: conflictID})
}

// Len is how many writes the batch holds.
func (b *WriteBatch) Len() int { return len(b.ws) }

// Batch makes the writes fn records in one local transaction with one
// fsync: when Batch returns nil every write is durable, each its own event
// in the order fn recorded them, and shows in the view; when it returns an
// error none is stored. fn returning an error (or recording a write out of
// scope) stores nothing and Batch returns that error; an invalid write
// fails the batch with an error wrapping events.ErrInvalid that names the
// write's index. A batch shares its transaction with concurrent Puts and
// batches (group commit) but stays all-or-nothing. It returns the number of
// writes stored.
func (r *Replica) Batch(ctx context.Context, fn func(b *WriteBatch) error) (int, error) {
	if err := r.checkOpen(); err != nil {
		return 0, fmt.Errorf("batch: %w", err)
	}
	b := &WriteBatch{r: r}
	if err := fn(b); err != nil {
		return 0, fmt.Errorf("batch: %w", err)
	}
	if b.err != nil {
		return 0, fmt.Errorf("batch: %w", b.err)
	}
	if len(b.ws) == 0 {
		return 0, nil
	}
	if _, err := r.log.AppendWith(ctx, b.ws, r.prepare); err != nil {
		return 0, fmt.Errorf("batch of %d writes: %w", len(b.ws), err)
	}
	keys := make([][]byte, 0, len(b.ws))
	for _, w := range b.ws {
		keys = append(keys, docKey(w.Collection, w.Doc))
	}
	r.committed(keys)
	return len(b.ws), nil
}
