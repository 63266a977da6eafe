package producer

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/events"
)

// awaitingSeqs walks Tx.Awaiting from the start.
func awaitingSeqs(t *testing.T, l *Log) []uint64 {
	t.Helper()
	var out []uint64
	if err := l.View(t.Context(), func(tx *Tx) error {
		for from := uint64(1); ; {
			seq, e, ok, err := tx.Awaiting(from)
			if err != nil || !ok {
				return err
			}
			if e.State != StatePending && e.State != StatePublished {
				t.Errorf("Awaiting returned entry %d in state %s", seq, e.State)
			}
			out = append(out, seq)
			from = seq + 1
		}
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTx_Awaiting: the writes awaiting their fate are the pending and
// published ones, in log order; a failed or settled write leaves them, a
// write Reissue wrote again is listed as a copy, the counts agree, and a
// file whose index is missing (written before it, or by a version that did
// not keep it) is indexed again at open.
func TestTx_Awaiting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := mustOpen(t, path)
	evs := mustAppend(t, l, put("c", "a", 1), put("c", "b", 2), put("c", "c", 3), put("c", "d", 4), put("c", "e", 5))
	if _, _, err := l.markResults([]result{
		{seq: 2, err: errors.New("refused")},
		{seq: 3, ack: &jetstream.PubAck{Stream: events.StreamEvents, Sequence: 3}},
	}); err != nil {
		t.Fatal(err)
	}
	settle(t, l, evs[0])
	if got, want := awaitingSeqs(t, l), []uint64{3, 4, 5}; !equalSeqs(got, want) {
		t.Fatalf("awaiting %v, want %v", got, want)
	}
	if c := l.Counts(); c != (Counts{Unsettled: 4, Pending: 2, Failed: 1}) || c.Published() != 1 {
		t.Fatalf("counts %+v (published %d), want 4 unsettled, 2 pending, 1 failed, 1 published", c, c.Published())
	}
	// A reused receipt: the write is written again at sequence 6.
	ne, err := l.Reissue(t.Context(), &events.Receipt{Event: evs[3].ID, Tenant: "t1", Client: l.Client(), Device: evs[3].Device, Seq: evs[3].Seq, Outcome: events.OutcomeReused})
	if err != nil || ne == nil {
		t.Fatalf("reissue: %v, %v", ne, err)
	}
	if got, want := awaitingSeqs(t, l), []uint64{3, 5, 6}; !equalSeqs(got, want) {
		t.Fatalf("awaiting after a reissue %v, want %v", got, want)
	}
	var copies []Copy
	if err := l.View(t.Context(), func(tx *Tx) (err error) { copies, err = tx.CopiesAfter(5); return err }); err != nil {
		t.Fatal(err)
	}
	if len(copies) != 1 || copies[0] != (Copy{Seq: 6, Of: 4}) {
		t.Fatalf("copies after 5: %+v, want {6 4}", copies)
	}
	if err := l.View(t.Context(), func(tx *Tx) (err error) { copies, err = tx.CopiesAfter(6); return err }); err != nil || len(copies) != 0 {
		t.Fatalf("copies after 6: %+v, %v; want none", copies, err)
	}
	if c := l.Counts(); c.Unsettled != 4 || c.Pending != 2 {
		t.Fatalf("counts after a reissue %+v, want 4 unsettled, 2 pending", c)
	}
	var n int
	if err := l.View(t.Context(), func(tx *Tx) error { n = tx.UnsettledCount(); return nil }); err != nil || n != 4 {
		t.Fatalf("UnsettledCount after a reissue %d, %v; want 4", n, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, strip := range []func(tx *bbolt.Tx) error{
		func(tx *bbolt.Tx) error { // written before the index: no marker, no bucket
			if err := tx.Bucket(bucketMeta).Delete(metaAwaiting); err != nil {
				return err
			}
			return tx.DeleteBucket(bucketAwaiting)
		},
		func(tx *bbolt.Tx) error { // an older version appended without it
			return tx.Bucket(bucketAwaiting).Delete(seqKey(5))
		},
	} {
		db, err := bbolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(strip); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		l = mustOpen(t, path)
		if got, want := awaitingSeqs(t, l), []uint64{3, 5, 6}; !equalSeqs(got, want) {
			t.Fatalf("awaiting after reopening a file without the index: %v, want %v", got, want)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
