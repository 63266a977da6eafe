package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ebbsync/ebb/producer"
)

// Idempotency keys.
//
// A request with an Idempotency-Key is written at most once per writing
// identity (tenant, client): the key maps to the event written for it, in
// the identity's log file, so a retry (after a lost answer, a timeout, a
// crash of the server) answers from that event instead of writing again.
//
// The producer's Append commits in its own transaction, so the key is
// recorded in two steps around it, under writerLog.appendMu: first a
// reservation naming the log's last local sequence (Before), then Append,
// then the event id. A crash between the steps leaves a reservation; it is
// resolved from the log itself: if the log holds an entry after Before,
// that entry (local sequence Before+1, the only append that can follow a
// reservation) is the key's event, else the append never happened and the
// reservation is dropped (that request was never answered 2xx). Records
// are kept for the life of the log, like its entries. Keys are stored in
// the clear (a key is an opaque token, never document data); a record
// holds a hash of its request, never the request.

// idemRecord is what a key maps to.
type idemRecord struct {
	Fingerprint string `json:"fp"`              // hash of the request (method, path, preconditions, body)
	Event       string `json:"event,omitempty"` // the event written; empty while reserved
	Before      uint64 `json:"before"`          // the log's last local sequence when reserved
	Collection  string `json:"collection"`
	Doc         string `json:"doc"`
	Op          string `json:"op"`
	Conditional bool   `json:"conditional,omitempty"` // the request had If-Match / If-None-Match
}

// errKeyReused: an Idempotency-Key sent again with another request. 422.
var errKeyReused = errors.New("idempotency key reused with a different request")

// maxIdempotencyKey bounds an Idempotency-Key's length.
const maxIdempotencyKey = 255

func (l *writerLog) getRecord(key string) (rec idemRecord, ok bool, err error) {
	err = l.log.View(context.Background(), func(tx *producer.Tx) error {
		v := tx.Bucket(bucketIdempotency).Get([]byte(key))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &rec)
	})
	if err != nil {
		return idemRecord{}, false, fmt.Errorf("read idempotency key %q: %w", key, err)
	}
	return rec, ok, nil
}

func (l *writerLog) putRecord(key string, rec *idemRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	err = l.log.Update(context.Background(), func(tx *producer.Tx) error { return tx.Bucket(bucketIdempotency).Put([]byte(key), v) })
	if err != nil {
		return fmt.Errorf("store idempotency key %q: %w", key, err)
	}
	return nil
}

func (l *writerLog) dropRecord(key string) error {
	err := l.log.Update(context.Background(), func(tx *producer.Tx) error { return tx.Bucket(bucketIdempotency).Delete([]byte(key)) })
	if err != nil {
		return fmt.Errorf("drop idempotency key %q: %w", key, err)
	}
	return nil
}

// lookup returns the record of key with its reservation resolved: ok is
// false when no event was ever written for key. Call it under appendMu.
func (l *writerLog) lookup(ctx context.Context, key string) (idemRecord, bool, error) {
	rec, ok, err := l.getRecord(key)
	if err != nil || !ok || rec.Event != "" {
		return rec, ok, err
	}
	return l.resolve(ctx, key, rec)
}

// find is lookup under appendMu.
func (l *writerLog) find(ctx context.Context, key string) (idemRecord, bool, error) {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	return l.lookup(ctx, key)
}

// resolve settles a reservation left by a crash (or a failed store) from
// the log, as the comment at the top of this file explains.
func (l *writerLog) resolve(ctx context.Context, key string, rec idemRecord) (idemRecord, bool, error) {
	if l.log.LastSeq() <= rec.Before {
		return idemRecord{}, false, l.dropRecord(key)
	}
	entries, err := l.log.Entries(ctx)
	if err != nil {
		return idemRecord{}, false, fmt.Errorf("resolve idempotency key %q: %w", key, err)
	}
	if uint64(len(entries)) <= rec.Before {
		return idemRecord{}, false, fmt.Errorf("resolve idempotency key %q: the log holds %d entries, last sequence %d", key, len(entries), l.log.LastSeq())
	}
	e := entries[rec.Before].Event
	if e.Collection != rec.Collection || e.Doc != rec.Doc || string(e.Op) != rec.Op {
		return idemRecord{}, false, fmt.Errorf("resolve idempotency key %q: entry %d is %s of %s/%s, the key reserved %s of %s/%s",
			key, rec.Before+1, e.Op, e.Collection, e.Doc, rec.Op, rec.Collection, rec.Doc)
	}
	rec.Event = e.ID
	if err := l.putRecord(key, &rec); err != nil {
		return idemRecord{}, false, err
	}
	l.lg.Info("resolved an idempotency key left reserved by a crash", "key", key, "event", e.ID)
	return rec, true, nil
}

// recoverReservations resolves every reservation left by a crash. There
// is at most one per log.
func (l *writerLog) recoverReservations(ctx context.Context) error {
	var pending []string
	var recs []idemRecord
	err := l.log.View(ctx, func(tx *producer.Tx) error {
		return tx.Bucket(bucketIdempotency).ForEach(func(k, v []byte) error {
			var rec idemRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("idempotency key %q: %w", k, err)
			}
			if rec.Event == "" {
				pending, recs = append(pending, string(k)), append(recs, rec)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("recover idempotency keys: %w", err)
	}
	for i, k := range pending {
		if _, _, err := l.resolve(ctx, k, recs[i]); err != nil {
			return err
		}
	}
	return nil
}

// written is the outcome of writerLog.write.
type written struct {
	ID          string
	Replayed    bool // an earlier request with the same key wrote it
	Conditional bool // the writing request had a precondition
}

// write appends w to the log, once per key when key is set: a key that
// names an event already returns it (Replayed) when fingerprint matches,
// errKeyReused when not. conditional is remembered with the key.
func (l *writerLog) write(ctx context.Context, w producer.Write, key, fingerprint string, conditional bool) (written, error) {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	var rec idemRecord
	if key != "" {
		prev, ok, err := l.lookup(ctx, key)
		if err != nil {
			return written{}, err
		}
		if ok {
			if prev.Fingerprint != fingerprint {
				return written{}, fmt.Errorf("%w: key %q wrote event %s for %s of %s/%s", errKeyReused, key, prev.Event, prev.Op, prev.Collection, prev.Doc)
			}
			return written{ID: prev.Event, Replayed: true, Conditional: prev.Conditional}, nil
		}
		rec = idemRecord{Fingerprint: fingerprint, Before: l.log.LastSeq(), Collection: w.Collection, Doc: w.Doc,
			Op: string(w.Op), Conditional: conditional}
		if err := l.putRecord(key, &rec); err != nil {
			return written{}, err
		}
	}
	ev, err := l.log.Append(ctx, w)
	if err != nil {
		if key != "" {
			err = errors.Join(err, l.dropRecord(key))
		}
		return written{}, err
	}
	if key != "" {
		rec.Event = ev.ID
		if err := l.putRecord(key, &rec); err != nil {
			// The event is durable and will be published; the retry
			// resolves the reservation from the log.
			return written{}, fmt.Errorf("event %s written: %w", ev.ID, err)
		}
	}
	return written{ID: ev.ID, Conditional: conditional}, nil
}
