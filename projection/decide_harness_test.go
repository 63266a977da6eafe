package projection

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

// applierRun drives the applier, the one code path of the live projector
// and of Verify, over a real BoltStore without NATS: each add is followed
// by a Commit, as a projector batch of one would be.
type applierRun struct {
	t     *testing.T
	ap    applier
	store *BoltStore
	seq   uint64 // EVENTS stream sequence
	// what the outbox got, by event id (receipts) and stream seq (dead letters)
	receipts map[string][]*events.Receipt
	dead     map[uint64]*events.DeadLetter
	entries  []OutboxEntry
}

func newApplierRun(t *testing.T, cfg Config) *applierRun {
	t.Helper()
	s, err := OpenBolt(filepath.Join(t.TempDir(), "view.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	r := &applierRun{t: t, ap: cfg.applier(s, true), store: s,
		receipts: map[string][]*events.Receipt{}, dead: map[uint64]*events.DeadLetter{}}
	r.ap.reset(0)
	return r
}

// add applies one raw message (subject, data) and commits.
func (r *applierRun) add(subject string, data []byte) uint64 {
	r.t.Helper()
	r.ap.reset(r.seq)
	seq := r.put(subject, data)
	r.commit()
	return seq
}

// put applies one raw message to the open batch.
func (r *applierRun) put(subject string, data []byte) uint64 {
	r.t.Helper()
	r.seq++
	if err := r.ap.add(context.Background(), rawMsg{Subject: subject, Data: data, Seq: r.seq, Time: time.Now()}); err != nil {
		r.t.Fatalf("add stream seq %d: %v", r.seq, err)
	}
	return r.seq
}

// batch applies evs in batches of up to 256, as the projector does.
func (r *applierRun) batch(evs []*events.Event) {
	r.t.Helper()
	for len(evs) > 0 {
		n := min(len(evs), DefaultBatchSize)
		r.ap.reset(r.seq)
		for _, ev := range evs[:n] {
			data, err := events.EncodeEvent(ev)
			if err != nil {
				r.t.Fatalf("encode event: %v", err)
			}
			r.put(ev.Subject(), data)
		}
		r.commit()
		evs = evs[n:]
	}
}

// commit commits the open batch and collects its outbox.
func (r *applierRun) commit() {
	r.t.Helper()
	if err := r.store.Commit(context.Background(), &r.ap.batch); err != nil {
		r.t.Fatalf("commit stream seq %d: %v", r.seq, err)
	}
	for _, e := range r.ap.batch.Outbox {
		r.entries = append(r.entries, e)
		switch {
		case strings.HasPrefix(e.Subject, "ebb.rcpt."):
			rc, err := events.DecodeReceipt(e.Data)
			if err != nil {
				r.t.Fatalf("decode receipt: %v", err)
			}
			r.receipts[rc.Event] = append(r.receipts[rc.Event], rc)
		case strings.HasPrefix(e.Subject, "ebb.dead"):
			dl, err := events.DecodeDeadLetter(e.Data)
			if err != nil {
				r.t.Fatalf("decode dead letter of %d bytes: %v", len(e.Data), err)
			}
			r.dead[dl.Stream] = dl
		}
	}
}

// event encodes and adds ev.
func (r *applierRun) event(ev *events.Event) uint64 {
	r.t.Helper()
	data, err := events.EncodeEvent(ev)
	if err != nil {
		r.t.Fatalf("encode event: %v", err)
	}
	return r.add(ev.Subject(), data)
}

// outcome returns the first receipt's outcome of event id, "" for none.
func (r *applierRun) outcome(id string) events.Outcome {
	if rs := r.receipts[id]; len(rs) > 0 {
		return rs[0].Outcome
	}
	return ""
}

// seqEvent is a put by client c with client sequence seq on document doc.
func seqEvent(client string, seq uint64, doc string, kv ...string) *events.Event {
	ev := mkEvent(events.OpPut, 0, 0, client, kv...)
	ev.HLC = events.HLC{Wall: time.Now().UnixMilli(), Logical: uint32(seq)}
	ev.Seq, ev.Doc = seq, doc
	if ev.Fields == nil {
		ev.Fields = fields("n", strconv.FormatUint(seq, 10))
	}
	return ev
}
