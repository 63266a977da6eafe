package projection

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
)

func commitTestStore(t *testing.T, seal *keys.Cipher) *BoltStore {
	t.Helper()
	s, err := OpenBolt(filepath.Join(t.TempDir(), "view.db"), BoltOptions{Cipher: seal})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testDoc(id string, version uint64, body string) Doc {
	b, _ := json.Marshal(body)
	return Doc{Tenant: "t", Collection: "c", ID: id, Version: version, Event: fmt.Sprintf("e-%s-%d", id, version), Client: "cl", Seq: version,
		Fields: events.Fields{"body": b, "n": json.RawMessage(fmt.Sprint(version))},
		Clocks: map[string]events.FieldClock{"body": {Version: version}}}
}

// TestBoltCommit_StoresWhatTheEncodersWrite: Commit, which builds keys and
// values in shared buffers and puts them in key order, stores for every
// document, conflict record, outbox entry and remembered event id the
// bytes of its encoder (the format stores written before hold), keeps the
// last state of an address given twice, and deletes the published keys
// however they are ordered.
func TestBoltCommit_StoresWhatTheEncodersWrite(t *testing.T) {
	ctx := context.Background()
	s := commitTestStore(t, nil)
	w1, w2 := ClientKey{Tenant: "t", Client: "a"}, ClientKey{Tenant: "t", Client: "b", Device: "d"}
	first := &Batch{Checkpoint: 1, Outbox: []OutboxEntry{{Subject: "s.1", MsgID: "m1", Data: []byte("x")}, {Subject: "s.2", MsgID: "m2", Data: []byte("y")}, {Subject: "s.3", MsgID: "m3", Data: []byte("z")}}}
	if err := s.Commit(ctx, first); err != nil {
		t.Fatal(err)
	}
	conflict := func(id string) events.Conflict {
		return events.Conflict{ID: id, Policy: events.PolicyLWW, Status: "overwritten", Sides: []events.Side{{Event: id, Fields: events.Fields{"body": json.RawMessage(`"old <b>"`)}}}}
	}
	b := &Batch{
		Checkpoint: 9,
		Docs:       []Doc{testDoc("z", 1, "zz"), testDoc("a", 1, "first"), testDoc("m", 2, "mm \u2028"), testDoc("a", 2, "second"), testDoc("b", 1, "bb")},
		Conflicts: []ConflictRecord{
			{Address: events.DocAddress{Tenant: "t", Collection: "c", Doc: "z"}, Conflict: conflict("c2")},
			{Address: events.DocAddress{Tenant: "t", Collection: "c", Doc: "a"}, Conflict: conflict("c9")},
			{Address: events.DocAddress{Tenant: "t", Collection: "c", Doc: "a"}, Conflict: conflict("c1")},
		},
		HighWater: map[ClientKey]HighWater{w1: {Seq: 3}, w2: {Seq: 7, Holes: []SeqRange{{From: 2, To: 4}}}},
		SeqEvents: []SeqEvent{{Writer: w1, Seq: 1, Event: "e1"}, {Writer: w2, Seq: 7, Event: "e7"}, {Writer: w1, Seq: 3, Event: "e3"}},
		Outbox:    []OutboxEntry{{Subject: "s.4", MsgID: "m4", Header: map[string][]string{"traceparent": {"00-ab"}}, Data: []byte(`{"k":1}`)}, {Subject: "s.5", MsgID: "m5", Data: []byte("r")}},
		Published: []uint64{3, 1},
	}
	if err := s.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	if b.Outbox[0].Key != 4 || b.Outbox[1].Key != 5 {
		t.Fatalf("outbox keys %d, %d, want 4, 5", b.Outbox[0].Key, b.Outbox[1].Key)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		docs := tx.Bucket(bucketDocs)
		for _, i := range []int{0, 2, 3, 4} { // not b.Docs[1]: b.Docs[3] replaces it
			d := &b.Docs[i]
			want, err := encodeDocState(d)
			if err != nil {
				return err
			}
			if got := docs.Get(addrKey(d.Address())); !bytes.Equal(got, want) {
				t.Errorf("document %s: stored\n%s\nwant\n%s", d.ID, got, want)
			}
		}
		if n := docs.Stats().KeyN; n != 4 {
			t.Errorf("%d documents stored, want 4", n)
		}
		confs := tx.Bucket(bucketConflicts)
		for _, r := range b.Conflicts {
			want, err := encodeConflict(&r.Conflict)
			if err != nil {
				return err
			}
			if got := confs.Get(append(append(addrKey(r.Address), 0), r.Conflict.ID...)); !bytes.Equal(got, want) {
				t.Errorf("conflict %s: stored %s, want %s", r.Conflict.ID, got, want)
			}
		}
		for w, h := range b.HighWater {
			if got := tx.Bucket(bucketHWM).Get(writerKey(w)); !bytes.Equal(got, encodeHighWater(h)) {
				t.Errorf("high-water mark of %s: stored %x, want %x", w, got, encodeHighWater(h))
			}
		}
		for _, e := range b.SeqEvents {
			if got := tx.Bucket(bucketSeqEvents).Bucket(writerKey(e.Writer)).Get(u64(e.Seq)); string(got) != e.Event {
				t.Errorf("event id at %d of %s: stored %q, want %q", e.Seq, e.Writer, got, e.Event)
			}
		}
		out := tx.Bucket(bucketOutbox)
		for k, want := range map[uint64][]byte{2: encodeOutboxEntry(&first.Outbox[1]), 4: encodeOutboxEntry(&b.Outbox[0]), 5: encodeOutboxEntry(&b.Outbox[1])} {
			if got := out.Get(u64(k)); !bytes.Equal(got, want) {
				t.Errorf("outbox entry %d: stored %q, want %q", k, got, want)
			}
		}
		if n := out.Stats().KeyN; n != 3 {
			t.Errorf("%d outbox entries stored, want 3 (2, 4 and 5)", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, events.DocAddress{Tenant: "t", Collection: "c", Doc: "a"})
	if err != nil || got.Version != 2 || string(got.Fields["body"]) != `"second"` {
		t.Fatalf("document a: v%d %s (%v), want the batch's later state, v2", got.Version, got.Fields["body"], err)
	}
}

// TestBoltCommit_ValuesAcrossChunks: values of every size, small ones
// sharing a chunk, ones around a chunk's low mark and ones larger than a
// chunk, all read back as committed, in plaintext and encrypted; a later
// commit does not change what an earlier one stored.
func TestBoltCommit_ValuesAcrossChunks(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		seal *keys.Cipher
	}{{"plaintext", nil}, {"encrypted", mustRandomCipher(t)}} {
		t.Run(tc.name, func(t *testing.T) {
			s := commitTestStore(t, tc.seal)
			sizes := []int{0, 1, 10, 300, chunkLow - 200, chunkLow, chunkLow + 1, 5000, chunkSize - 500, chunkSize, chunkSize + 1, 3 * chunkSize}
			var want []Doc
			for round := range 3 {
				var b Batch
				b.Checkpoint = uint64(round + 1)
				for i := range 200 {
					d := testDoc(fmt.Sprintf("d%03d", i), uint64(round+1), strings.Repeat(string(rune('a'+round)), sizes[(i+round)%len(sizes)]))
					b.Docs = append(b.Docs, d)
					b.Outbox = append(b.Outbox, OutboxEntry{Subject: "s." + d.ID, MsgID: d.Event, Data: d.Fields["body"]})
				}
				if round > 0 {
					b.Docs = b.Docs[:150] // the rest keep the round before's state
				}
				if err := s.Commit(ctx, &b); err != nil {
					t.Fatal(err)
				}
				if round == 0 {
					want = b.Docs
				} else {
					copy(want, b.Docs)
				}
			}
			for _, d := range want {
				got, err := s.Get(ctx, d.Address())
				if err != nil {
					t.Fatal(err)
				}
				if got.Version != d.Version || !bytes.Equal(got.Fields["body"], d.Fields["body"]) || got.Event != d.Event {
					t.Fatalf("document %s: v%d with %d bytes of body, want v%d with %d", d.ID, got.Version, len(got.Fields["body"]), d.Version, len(d.Fields["body"]))
				}
			}
			out, err := s.Outbox(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != 600 {
				t.Fatalf("%d outbox entries, want 600", len(out))
			}
			for i, e := range out {
				if e.Key != uint64(i+1) || !strings.HasPrefix(e.Subject, "s.d") || !strings.HasPrefix(string(e.Data), `"`) {
					t.Fatalf("outbox entry %d: key %d subject %q data %.20q", i, e.Key, e.Subject, e.Data)
				}
			}
		})
	}
}

func mustRandomCipher(t *testing.T) *keys.Cipher {
	t.Helper()
	c, err := keys.RandomCipher()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
