package producer

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/events"
)

func TestLog_AppendAssignsAndPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l, err := Open(path, LogConfig{Tenant: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	client := l.Client()
	if _, err := events.ParseID(client); err != nil {
		t.Fatalf("generated client %q is not a ULID: %v", client, err)
	}
	evs := mustAppend(t, l, put("c", "d1", 1), put("c", "d2", 2))
	e3, err := l.Append(t.Context(), put("c", "d1", 3))
	if err != nil {
		t.Fatal(err)
	}
	evs = append(evs, e3)
	for i, e := range evs {
		if e.Seq != uint64(i+1) || e.Tenant != "t1" || e.Client != client || e.Schema != events.SchemaVersion {
			t.Errorf("event %d: %+v", i, e)
		}
		if i > 0 && (e.ID <= evs[i-1].ID || e.HLC.Compare(evs[i-1].HLC) <= 0) {
			t.Errorf("event %d: id/hlc not increasing: %s %s after %s %s", i, e.ID, e.HLC, evs[i-1].ID, evs[i-1].HLC)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := l.Append(t.Context(), put("c", "d", 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v, want ErrClosed", err)
	}

	// Reopen: same client, sequence, ids and clock continue.
	l = mustOpen(t, path)
	if l.Client() != client {
		t.Fatalf("client after reopen %q, want %q", l.Client(), client)
	}
	e4, err := l.Append(t.Context(), put("c", "d1", 4))
	if err != nil {
		t.Fatal(err)
	}
	if e4.Seq != 4 || e4.ID <= e3.ID || e4.HLC.Compare(e3.HLC) <= 0 {
		t.Fatalf("after reopen: seq %d id %s hlc %s; last was %d %s %s", e4.Seq, e4.ID, e4.HLC, e3.Seq, e3.ID, e3.HLC)
	}
	es, err := l.Entries(t.Context(), StatePending)
	if err != nil || len(es) != 4 {
		t.Fatalf("pending entries: %d, %v", len(es), err)
	}
	if st := (&Publisher{log: l}).Status(); st.Pending != 4 || st.OldestPending.IsZero() {
		t.Fatalf("status %+v", st)
	}
}

func TestLog_OpenMismatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l, err := Open(path, LogConfig{Tenant: "t1", Client: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	tests := []struct {
		name    string
		cfg     LogConfig
		wantErr error
	}{
		{"other client", LogConfig{Tenant: "t1", Client: "c2"}, ErrLogMismatch},
		{"other tenant", LogConfig{Tenant: "t2"}, ErrLogMismatch},
		{"no tenant", LogConfig{}, ErrInvalidConfig},
		{"bad client", LogConfig{Tenant: "t1", Client: "a\x00b"}, ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Open(path, tt.cfg)
			if err == nil {
				_ = l.Close()
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
		})
	}
	l, err = Open(path, LogConfig{Tenant: "t1"})
	if err != nil {
		t.Fatalf("reopen without client: %v", err)
	}
	defer l.Close()
	if l.Client() != "c1" {
		t.Fatalf("client %q", l.Client())
	}
}

func TestLog_AppendBatchAllOrNothing(t *testing.T) {
	l := tempLog(t)
	_, err := l.AppendBatch(t.Context(), []Write{
		put("c", "d1", 1),
		{Collection: "c", Doc: "d2", Op: events.OpPatch}, // a patch without fields
	})
	if !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("err %v, want events.ErrInvalid", err)
	}
	es, err := l.Entries(t.Context())
	if err != nil || len(es) != 0 {
		t.Fatalf("entries after failed batch: %d %v", len(es), err)
	}
	e := mustAppend(t, l, put("c", "d1", 1))[0]
	if e.Seq != 1 {
		t.Fatalf("seq after failed batch %d, want 1", e.Seq)
	}
}

// TestLog_StoreSharedThroughTx: another package's buckets live in the
// log's file and change with the log in one transaction (a rollback undoes
// both), the log's own buckets cannot be reached, and a NoSync db is
// refused.
func TestLog_StoreSharedThroughTx(t *testing.T) {
	l := tempLog(t)
	evs := mustAppend(t, l, put("c", "d1", 1), put("c", "d2", 2))
	for _, name := range []string{"producer.events", "producer.unsettled", "producer.new"} {
		err := l.Update(t.Context(), func(tx *Tx) error {
			if tx.Bucket([]byte(name)) != nil {
				t.Errorf("Bucket(%s) reached the log's bucket", name)
			}
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); !errors.Is(err, ErrReservedBucket) {
				t.Errorf("CreateBucketIfNotExists(%s): %v, want ErrReservedBucket", name, err)
			}
			return tx.DeleteBucket([]byte(name))
		})
		if !errors.Is(err, ErrReservedBucket) {
			t.Errorf("DeleteBucket(%s): %v, want ErrReservedBucket", name, err)
		}
	}
	boom := errors.New("boom")
	write := func(fail bool) error {
		return l.Update(t.Context(), func(tx *Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("other.state"))
			if err != nil {
				return err
			}
			if err := b.Put([]byte("k"), []byte("v")); err != nil {
				return err
			}
			if err := tx.Settle(&events.Receipt{Event: evs[0].ID, Outcome: events.OutcomeApplied}); err != nil {
				return err
			}
			if fail {
				return boom
			}
			return nil
		})
	}
	if err := write(true); !errors.Is(err, boom) {
		t.Fatalf("rolled back update: %v", err)
	}
	read := func() (v string, n int) {
		t.Helper()
		if err := l.View(t.Context(), func(tx *Tx) error {
			if b := tx.Bucket([]byte("other.state")); b != nil {
				v = string(b.Get([]byte("k")))
			}
			return tx.EachUnsettled(func(Entry) (bool, error) { n++; return true, nil })
		}); err != nil {
			t.Fatal(err)
		}
		return v, n
	}
	if v, n := read(); v != "" || n != 2 || l.Counts().Unsettled != 2 {
		t.Fatalf("after a rollback: value %q, %d unsettled (count %d); want none and 2", v, n, l.Counts().Unsettled)
	}
	if err := write(false); err != nil {
		t.Fatal(err)
	}
	if v, n := read(); v != "v" || n != 1 || l.Counts().Unsettled != 1 {
		t.Fatalf("after a commit: value %q, %d unsettled (count %d); want v and 1", v, n, l.Counts().Unsettled)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.View(t.Context(), func(*Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("View after Close: %v, want ErrClosed", err)
	}
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "nosync.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.NoSync = true
	if _, err := openDB(db, LogConfig{Tenant: "t1"}); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("NoSync db: %v, want ErrNotDurable", err)
	}
}

func TestLog_Settle(t *testing.T) {
	l := tempLog(t)
	evs := mustAppend(t, l, put("c", "d1", 1), put("c", "d2", 2), put("c", "d3", 3))
	r := &events.Receipt{Schema: 1, Event: evs[1].ID, Tenant: "t1", Client: l.Client(), Seq: 2,
		Outcome: events.OutcomeRejected, Reason: "stale", Version: 7, Stream: 42}
	settle := func(r *events.Receipt) {
		t.Helper()
		if err := l.Update(t.Context(), func(tx *Tx) error { return tx.Settle(r) }); err != nil {
			t.Fatalf("settle: %v", err)
		}
	}
	settle(r)
	settle(r)                                                                                    // idempotent
	settle(&events.Receipt{Event: "01HZZZZZZZZZZZZZZZZZZZZZZZ", Outcome: events.OutcomeApplied}) // unknown: ignored
	e := entryByID(t, l, evs[1].ID)
	if e.State != StateSettled || e.Outcome != events.OutcomeRejected || e.Reason != "stale" || e.Version != 7 || e.StreamSeq != 42 {
		t.Fatalf("settled entry %+v", e)
	}
	var us []Entry
	if err := l.View(t.Context(), func(tx *Tx) error {
		return tx.EachUnsettled(func(e Entry) (bool, error) { us = append(us, e); return true, nil })
	}); err != nil {
		t.Fatal(err)
	}
	if len(us) != 2 || us[0].Event.ID != evs[0].ID || us[1].Event.ID != evs[2].ID {
		t.Fatalf("unsettled %s", fmtStates(us))
	}
	// A settle in a transaction that rolls back changes nothing.
	errRollback := errors.New("rollback")
	err := l.Update(t.Context(), func(tx *Tx) error {
		if err := tx.Settle(&events.Receipt{Event: evs[0].ID, Outcome: events.OutcomeApplied}); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) || stateOf(t, l, evs[0].ID) != StatePending {
		t.Fatalf("rolled back settle: %v, state %s", err, stateOf(t, l, evs[0].ID))
	}
	if p, _ := l.counts(); p != 2 {
		t.Fatalf("pending count %d, want 2", p)
	}
	raw, _ := json.Marshal(e.Event)
	if len(raw) == 0 {
		t.Fatal("event not encodable")
	}
}
