package consumer

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// Quarantine.
//
// A message on a subject the replica reads is used only if its payload is
// what the subject says it is: a change names the tenant, collection and
// document of its subject; a receipt names the replica's tenant and
// client. A message that is not (another tenant's or document's payload
// written onto the subject, say by a reply subject a client chose) or that
// cannot be decoded (garbage, a schema newer than this client's) is
// quarantined: recorded in consumer.quarantine by stream sequence with the
// reason, counted and logged, and stepped over. It never changes the view,
// so it cannot move a document backwards or shadow a later change of it,
// which applies as usual; and it never stops the follower, so every other
// document keeps syncing.
//
// A message in a stream never changes, so only one written in a schema
// newer than this client's can become usable (once the client is
// upgraded). Those are kept in consumer.quarantine by stream sequence, and
// each time a follower starts it reads up to maxRetries of them again: one
// the stream still holds that the replica can now read is applied as it
// would have been (a change only if newer than the view's version); one
// the stream no longer holds (CHANGES replaced it with the document's next
// change, RECEIPTS' age removed it) is forgotten. Garbage and foreign
// payloads are only counted and logged: keeping them would let whoever
// writes them grow the store and every start.

// maxRetries bounds the quarantined messages a follower start reads again.
const maxRetries = 256

// bucketQuarantine: stream + 0x00 + 8-byte big-endian sequence -> quarantined JSON.
var bucketQuarantine = []byte("consumer.quarantine")

// quarantined is a message set aside.
type quarantined struct {
	Subject string    `json:"subject"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

func quarantineKey(stream string, seq uint64) []byte {
	k := make([]byte, len(stream)+1+8)
	copy(k, stream)
	binary.BigEndian.PutUint64(k[len(stream)+1:], seq)
	return k
}

// changeSubjectMatches reports whether subject is the change subject of
// tenant/collection/doc, without allocating for plain names.
func changeSubjectMatches(subject, tenant, collection, doc string) bool {
	rest, ok := strings.CutPrefix(subject, events.ChangesPrefix+".")
	if !ok {
		return false
	}
	for i, name := range [3]string{tenant, collection, doc} {
		tok, after, more := strings.Cut(rest, ".")
		if tok != events.EncodeToken(name) || more != (i < 2) {
			return false
		}
		rest = after
	}
	return true
}

// mismatch is the error of a change payload that is not its subject's.
func mismatch(subject, tenant, collection, doc string) error {
	return fmt.Errorf("%w: change of %q/%q/%q on %s", ErrSubjectMismatch, tenant, collection, doc, subject)
}

// checkReceipt returns why rc cannot be used by the replica reading
// subject, or nil: it must be a receipt of the replica's tenant and client
// on its device's subject (events.DeviceReceiptSubject).
func (r *Replica) checkReceipt(subject string, rc *events.Receipt) error {
	if rc.Tenant != r.tenant || rc.Client != r.client || subject != rc.Subject() {
		return fmt.Errorf("%w: receipt of %q/%q device %q on %s", ErrSubjectMismatch, rc.Tenant, rc.Client, rc.Device, subject)
	}
	return nil
}

// newerSchema reports whether data, a payload that did not decode, names a
// schema newer than this client's: the one kind of quarantined message an
// upgrade can make usable.
func newerSchema(data []byte) bool {
	var v struct {
		Schema int `json:"schema"`
	}
	return json.Unmarshal(data, &v) == nil && v.Schema > events.SchemaVersion
}

// quarantine sets aside the message seq of stream, on subject, for why,
// keeping it (inside the follower's transaction tx) to be read again at the
// next start if retry (see newerSchema), and returns the error Status
// reports for it. The caller counts it with noteQuarantine once tx has
// committed.
func (r *Replica) quarantine(tx *producer.Tx, stream, subject string, seq uint64, why error, retry bool) (error, error) {
	qerr := fmt.Errorf("%w: %s message %d on %s: %w", ErrQuarantined, stream, seq, subject, why)
	if !retry {
		return qerr, nil
	}
	if err := putJSON(tx, r.seal, bucketQuarantine, quarantineKey(stream, seq), quarantined{Subject: subject, Reason: why.Error(), At: time.Now().UTC()}); err != nil {
		return nil, fmt.Errorf("quarantine %s %d: %w", stream, seq, err)
	}
	return qerr, nil
}

// noteQuarantine counts and logs messages quarantined by a committed
// transaction.
func (r *Replica) noteQuarantine(errs []error) {
	if len(errs) == 0 {
		return
	}
	for _, err := range errs {
		r.logger.Warn("message quarantined", logReason, err)
	}
	r.mu.Lock()
	r.quarantined += len(errs)
	r.lastQuarantine = errs[len(errs)-1]
	r.mu.Unlock()
}

// msgGetter reads one message of a stream by sequence.
type msgGetter interface {
	GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error)
}

// retryQuarantined reads the kept quarantined messages of stream again (at
// most maxRetries, oldest first) with s, and hands each one the stream
// still holds to use, in one transaction; use returns still == nil if it
// could use the message now (its entry is dropped) or why not, and err
// (the store failed) undoes the transaction. Entries whose message is gone
// are dropped. A failure to read is logged and leaves the entries for the
// next start: the follower must start even where it may not read messages
// by sequence.
func (r *Replica) retryQuarantined(ctx context.Context, s msgGetter, stream string, use func(tx *producer.Tx, m *jetstream.RawStreamMsg) (still, err error)) {
	prefix := append([]byte(stream), 0)
	var seqs []uint64
	_ = r.log.View(ctx, func(tx *producer.Tx) error {
		c := tx.Bucket(bucketQuarantine).Cursor()
		for k, _ := c.Seek(prefix); k != nil && len(seqs) < maxRetries && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
			seqs = append(seqs, binary.BigEndian.Uint64(k[len(prefix):]))
		}
		return nil
	})
	if len(seqs) == 0 {
		return
	}
	msgs := make([]*jetstream.RawStreamMsg, len(seqs)) // nil: gone
	for i, seq := range seqs {
		m, err := s.GetMsg(ctx, seq)
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			r.logger.Warn("re-read quarantined message", logStream, stream, logSeq, seq, logErr, err)
			return
		}
		msgs[i] = m
	}
	released := 0
	err := r.log.Update(ctx, func(tx *producer.Tx) error {
		released = 0
		for i, seq := range seqs {
			if m := msgs[i]; m != nil {
				still, err := use(tx, m)
				if err != nil {
					return err
				}
				if still != nil {
					continue
				}
			}
			if err := tx.Bucket(bucketQuarantine).Delete(quarantineKey(stream, seq)); err != nil {
				return fmt.Errorf("release quarantined %s %d: %w", stream, seq, err)
			}
			released++
		}
		return nil
	})
	if err != nil {
		r.logger.Warn("re-read quarantined messages", logStream, stream, logErr, err)
		return
	}
	r.logger.Info("quarantined messages read again", logStream, stream, "count", len(seqs), "released", released)
}

// clearQuarantine forgets the quarantined messages of stream (a full
// resync of it reads them again).
func clearQuarantine(tx *producer.Tx, stream string) error {
	prefix := append([]byte(stream), 0)
	c := tx.Bucket(bucketQuarantine).Cursor()
	for k, _ := c.Seek(prefix); k != nil && len(k) > len(prefix) && string(k[:len(prefix)]) == string(prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return fmt.Errorf("clear quarantine of %s: %w", stream, err)
		}
	}
	return nil
}

// decodeReceipt is events.DecodeReceipt with its errors marked
// ErrUnreadable.
func decodeReceipt(data []byte) (*events.Receipt, error) {
	rc, err := events.DecodeReceipt(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	return rc, nil
}

// retryQuarantinedChanges applies the quarantined changes that CHANGES
// still holds and the replica can now read, where newer than the view.
func (r *Replica) retryQuarantinedChanges(ctx context.Context, s msgGetter) {
	var touched [][]byte
	r.retryQuarantined(ctx, s, events.StreamChanges, func(tx *producer.Tx, m *jetstream.RawStreamMsg) (error, error) {
		var c change
		var a arena
		newChangePreparer().data(m.Subject, m.Data, m.Header, &c, &a)
		if c.err != nil {
			return c.err, nil
		}
		if c.head.Tenant != r.tenant || !r.inScope(c.head.Collection) {
			return nil, nil // not the replica's: nothing to apply
		}
		v := openView(tx, r.seal)
		defer v.close()
		if c.head.Version <= v.version(c.key) {
			return nil, nil
		}
		touched = append(touched, c.key)
		return nil, r.putChange(v, c.key, &c.head, c.value)
	})
	r.committed(touched)
}

// retryQuarantinedReceipts applies the quarantined receipts that RECEIPTS
// still holds and the replica can now read.
func (r *Replica) retryQuarantinedReceipts(ctx context.Context, s msgGetter) {
	var touched [][]byte
	rejected := 0
	device := r.log.Device() // before the transaction, as in applyReceipts
	var b *receiptBatch      // read once per transaction, on first use
	var btx *producer.Tx
	r.retryQuarantined(ctx, s, events.StreamReceipts, func(tx *producer.Tx, m *jetstream.RawStreamMsg) (error, error) {
		rc, err := decodeReceipt(m.Data)
		if err != nil {
			return err, nil
		}
		if err := r.checkReceipt(m.Subject, rc); err != nil {
			return err, nil
		}
		if b == nil || btx != tx {
			if b, err = r.newReceiptBatch(tx, device); err != nil {
				return nil, err
			}
			btx = tx
		}
		n, key, err := r.applyReceipt(tx, b, m.Sequence, rc)
		if err != nil {
			return nil, err
		}
		rejected += n
		if key != nil {
			touched = append(touched, key)
		}
		return nil, nil
	})
	r.mu.Lock()
	r.rejected += rejected
	r.mu.Unlock()
	r.committed(touched)
}
