package producer

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/propagation"

	"github.com/ebbsync/ebb/events"
)

// The Log's side of publishing: reading pending entries as messages and
// storing what JetStream answered. Both run once per published entry, so
// both skip encoding/json for the records as storeNew writes them (an
// outbound record without trace context, a state record that is pending
// and nothing else) and fall back to it for anything else; the bytes they
// write are the ones json.Marshal writes (TestPublishedState_AsJSON).

// pendingMsg is a pending entry ready to publish.
type pendingMsg struct {
	seq uint64
	id  string
	msg *nats.Msg
}

// pendingAfter returns up to n pending entries with a sequence above after
// and, unless below is 0, under below, in order, as messages: subject, event
// payload, Nats-Msg-Id and the trace context captured at Append.
func (l *Log) pendingAfter(after uint64, n int, below uint64) ([]pendingMsg, error) {
	release, err := l.use()
	if err != nil {
		return nil, err
	}
	defer release()
	var out []pendingMsg
	err = l.db.View(func(tx *bbolt.Tx) error {
		// Pending entries are a run of the events' keys (mostly all of
		// the newest): step a cursor over the events beside the pending
		// one instead of searching from the root for each.
		evc := tx.Bucket(bucketEvents).Cursor()
		var ek []byte
		c := tx.Bucket(bucketPending).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < n; k, v = c.Next() {
			seq := keySeqOf(k)
			if below != 0 && seq >= below {
				break
			}
			v, err := l.seal.OpenValue(bucketPending, k, v)
			if err != nil {
				return fmt.Errorf("read pending entry %d: %w", seq, err)
			}
			ob, err := decodeOutbound(v)
			if err != nil {
				return fmt.Errorf("read pending entry %d: %w", seq, err)
			}
			var data []byte
			if ek != nil {
				ek, data = evc.Next()
			}
			if !bytes.Equal(ek, k) {
				ek, data = evc.Seek(k)
			}
			if !bytes.Equal(ek, k) {
				return fmt.Errorf("read pending entry %d: event missing", seq)
			}
			if data, err = l.seal.OpenValue(bucketEvents, k, data); err != nil {
				return fmt.Errorf("read pending entry %d: %w", seq, err)
			}
			h := nats.Header{jetstream.MsgIDHeader: []string{ob.ID}}
			if len(ob.Trace) > 0 {
				tctx := l.prop.Extract(context.Background(), propagation.MapCarrier(ob.Trace))
				l.prop.Inject(tctx, events.HeaderCarrier(h))
			}
			out = append(out, pendingMsg{
				seq: seq,
				id:  ob.ID,
				msg: &nats.Msg{Subject: ob.Subject, Data: bytes.Clone(data), Header: h},
			})
		}
		return nil
	})
	return out, err
}

// markResults stores publish results in one transaction: acked entries
// become published, refused ones failed. Entries no longer pending (settled
// by a receipt meanwhile) keep their state. It returns the entries that
// failed and how many were published.
//
// The transaction is a Batch's: it shares the next group commit with the
// appends and bookkeeping queued beside it, and its fn may run more than
// once, so it starts from scratch each time. Every entry it marks was
// appended by a commit before it (the publisher read it from the log).
func (l *Log) markResults(rs []result) (failed []Entry, published int, err error) {
	now := l.now()
	// nLate counts acks of entries a receipt settled first: published all
	// the same, though no longer pending.
	nPub, nFail, nLate := 0, 0, 0
	err = l.batch(context.Background(), func(tx *bbolt.Tx) error {
		failed = failed[:0]
		nPub, nFail, nLate = 0, 0, 0
		pending, states := tx.Bucket(bucketPending), tx.Bucket(bucketState)
		var buf []byte
		for _, r := range rs {
			k := seqKey(r.seq)
			if r.ack != nil {
				// The common case: an entry pending as appended becomes
				// published without a round trip through encoding/json.
				v := states.Get(k)
				if v == nil {
					return fmt.Errorf("read state of entry %d: missing", r.seq)
				}
				v, err := l.seal.OpenValue(bucketState, k, v)
				if err != nil {
					return fmt.Errorf("read state of entry %d: %w", r.seq, err)
				}
				if next, ok := publishedState(buf[:0], v, r.ack.Sequence, r.ack.Duplicate, now); ok {
					buf = next
					if err := states.Put(k, l.seal.SealValue(bucketState, k, bytes.Clone(next))); err != nil {
						return fmt.Errorf("write state of entry %d: %w", r.seq, err)
					}
					if err := pending.Delete(k); err != nil {
						return fmt.Errorf("unmark pending entry %d: %w", r.seq, err)
					}
					nPub++
					continue
				}
			}
			st, err := l.getState(tx, r.seq)
			if err != nil {
				return err
			}
			if st.State != StatePending {
				if st.State == StateSettled && r.ack != nil && (st.StreamSeq == 0 || st.PublishedAt.IsZero()) {
					if st.PublishedAt.IsZero() {
						nLate++
						st.PublishedAt = now
					}
					if st.StreamSeq == 0 {
						st.StreamSeq = r.ack.Sequence
					}
					if err := l.putState(tx, r.seq, st); err != nil {
						return err
					}
				}
				continue
			}
			if r.ack != nil {
				st.State, st.StreamSeq, st.PublishedAt = StatePublished, r.ack.Sequence, now
				st.Duplicate = r.ack.Duplicate
				nPub++
			} else {
				st.State, st.Err = StateFailed, r.err.Error()
				nFail++
			}
			if err := l.putState(tx, r.seq, st); err != nil {
				return err
			}
			if err := pending.Delete(k); err != nil {
				return fmt.Errorf("unmark pending entry %d: %w", r.seq, err)
			}
			if st.State == StateFailed {
				e, err := l.readEntry(tx, r.seq)
				if err != nil {
					return err
				}
				failed = append(failed, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	l.countMu.Lock()
	l.pendingN -= nPub + nFail
	l.failedN += nFail
	l.countMu.Unlock()
	// The nLate entries were counted when their receipt settled them
	// (settledPending).
	return failed, nPub, nil
}

// The encodings storeNew writes, as json.Marshal writes them.
var (
	pendingStatePrefix = []byte(`{"state":"pending","appended_at":`)
	outboundIDPrefix   = []byte(`{"id":"`)
	outboundSubject    = []byte(`","subject":"`)
)

// publishedState appends to dst the state record v becomes when JetStream
// acknowledges it with stream sequence seq at now: the bytes json.Marshal
// writes for it. ok is false, and dst is returned unchanged, unless v is a
// pending record holding nothing but its append time, as storeNew writes
// it; the caller then decodes v.
func publishedState(dst, v []byte, seq uint64, dup bool, now time.Time) (_ []byte, ok bool) {
	rest, found := bytes.CutPrefix(v, pendingStatePrefix)
	// rest is the quoted append time and the closing brace. A time
	// marshals as plain RFC 3339 characters, never an escape or a quote.
	if !found || len(rest) < 3 || rest[0] != '"' || rest[len(rest)-2] != '"' || rest[len(rest)-1] != '}' ||
		bytes.IndexAny(rest[1:len(rest)-2], "\"\\") >= 0 || now.Year() < 0 || now.Year() > 9999 {
		return dst, false
	}
	out := append(dst, `{"state":"published"`...)
	if seq != 0 {
		out = append(out, `,"stream_seq":`...)
		out = strconv.AppendUint(out, seq, 10)
	}
	out = append(out, `,"appended_at":`...)
	out = append(out, rest[:len(rest)-1]...)
	out = append(out, `,"published_at":"`...)
	out = now.AppendFormat(out, time.RFC3339Nano)
	out = append(out, '"')
	if dup {
		out = append(out, `,"duplicate":true`...)
	}
	return append(out, '}'), true
}

// decodeOutbound decodes an outbound record, without encoding/json when it
// is an id and a subject with nothing to unescape and no trace context.
func decodeOutbound(v []byte) (outbound, error) {
	if rest, ok := bytes.CutPrefix(v, outboundIDPrefix); ok {
		if id, rest, ok := bytes.Cut(rest, outboundSubject); ok && bytes.IndexAny(id, "\"\\") < 0 {
			if subj, ok := bytes.CutSuffix(rest, []byte(`"}`)); ok && bytes.IndexAny(subj, "\"\\") < 0 {
				return outbound{ID: string(id), Subject: string(subj)}, nil
			}
		}
	}
	var ob outbound
	if err := jsonUnmarshal(v, &ob); err != nil {
		return outbound{}, err
	}
	return ob, nil
}
