// Package storetest is the shared test suite every projection.Store
// implementation must pass (BoltStore and PostgresStore): call
// RunStoreSuite from the implementation's tests.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// RunStoreSuite runs every case against fresh stores from newStore, which
// must return an empty store and arrange its cleanup with t.Cleanup.
func RunStoreSuite(t *testing.T, newStore func(t *testing.T) projection.Store) {
	cases := []struct {
		name string
		fn   func(t *testing.T, s projection.Store)
	}{
		{"Empty", testEmpty},
		{"CommitReadBack", testCommitReadBack},
		{"LaterStateWins", testLaterStateWins},
		{"HighWaterNeverLowered", testHighWater},
		{"HighWaterHoles", testHighWaterHoles},
		{"HighWaterManyHoles", testHighWaterManyHoles},
		{"DeviceWriters", testDeviceWriters},
		{"SeqEvents", testSeqEvents},
		{"CheckpointBackwardsIsAtomic", testCheckpointBackwards},
		{"StreamMarks", testStreamMarks},
		{"Reanchor", testReanchor},
		{"Outbox", testOutbox},
		{"ScanOrder", testScanOrder},
		{"ScanOrderBytewise", testScanOrderBytewise},
		{"FieldsExact", testFieldsExact},
		{"DocsWithField", testDocsWithField},
		{"DocsWithFieldAfterMoves", testDocsWithFieldAfterMoves},
		{"Audience", testAudience},
		{"Kept", testKept},
		{"ConcurrentCommitsOrderOutbox", testConcurrentCommits},
		{"Close", testClose},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newStore(t)) })
	}
}

var ctx = context.Background()

func addr(t, c, d string) events.DocAddress {
	return events.DocAddress{Tenant: t, Collection: c, Doc: d}
}

func doc(a events.DocAddress, v uint64, kv ...string) projection.Doc {
	d := projection.Doc{Tenant: a.Tenant, Collection: a.Collection, ID: a.Doc, Version: v,
		HLC: events.HLC{Wall: int64(1000 + v)}, Event: "01JTESTEVENT000000000000" + string(rune('A'+v%26)) + "Z", Client: "c1", Seq: v}
	for i := 0; i+1 < len(kv); i += 2 {
		if d.Fields == nil {
			d.Fields = events.Fields{}
			d.Clocks = map[string]events.FieldClock{}
		}
		d.Fields[kv[i]] = json.RawMessage(kv[i+1])
		d.Clocks[kv[i]] = events.FieldClock{Version: v, HLC: d.HLC}
	}
	return d
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testEmpty(t *testing.T, s projection.Store) {
	a := addr("t", "c", "d")
	d, err := s.Get(ctx, a)
	must(t, err)
	if d.Version != 0 || d.Address() != a {
		t.Fatalf("empty Get = %+v", d)
	}
	cp, err := s.Checkpoint(ctx)
	must(t, err)
	hw, err := s.HighWater(ctx, "t", "c1")
	must(t, err)
	out, err := s.Outbox(ctx, 0)
	must(t, err)
	if cp != 0 || hw.Seq != 0 || hw.Holes != nil || len(out) != 0 {
		t.Fatalf("empty store: checkpoint %d hwm %d outbox %d", cp, hw, len(out))
	}
}

func testCommitReadBack(t *testing.T, s projection.Store) {
	a := addr("t", "c", "weird id. with* spaces")
	d := doc(a, 3, "title", `"x"`, "n", `1`)
	d.Conflicts = []events.Conflict{{ID: "c-open", Policy: events.PolicyManual, Status: events.ConflictOpen,
		Sides: []events.Side{{Event: "e1", HLC: events.HLC{Wall: 5}, Fields: events.Fields{"a": json.RawMessage(`1`)}}, {Event: "e2"}}}}
	conf := events.Conflict{ID: "c-over", Policy: events.PolicyLWW, Status: events.ConflictOverwritten, Lost: []string{"*"}}
	b := &projection.Batch{
		Checkpoint: 42,
		Docs:       []projection.Doc{d},
		Conflicts:  []projection.ConflictRecord{{Address: a, Conflict: conf}},
		HighWater:  map[projection.ClientKey]projection.HighWater{{Tenant: "t", Client: "c1"}: {Seq: 7, Holes: []projection.SeqRange{{From: 3, To: 3}}}},
		Outbox:     []projection.OutboxEntry{{Subject: "s.1", MsgID: "m1", Data: []byte("one"), Header: map[string][]string{"traceparent": {"x"}}}, {Subject: "s.2", MsgID: "m2", Data: []byte("two")}},
	}
	must(t, s.Commit(ctx, b))
	if b.Outbox[0].Key == 0 || b.Outbox[1].Key <= b.Outbox[0].Key {
		t.Fatalf("outbox keys %d %d, want increasing from 1", b.Outbox[0].Key, b.Outbox[1].Key)
	}
	got, err := s.Get(ctx, a)
	must(t, err)
	if !reflect.DeepEqual(got, d) {
		t.Fatalf("Get\n got %+v\nwant %+v", got, d)
	}
	cs, err := s.Conflicts(ctx, a)
	must(t, err)
	if len(cs) != 1 || !reflect.DeepEqual(cs[0], conf) {
		t.Fatalf("Conflicts = %+v", cs)
	}
	cp, err := s.Checkpoint(ctx)
	must(t, err)
	hw, err := s.HighWater(ctx, "t", "c1")
	must(t, err)
	if want := (projection.HighWater{Seq: 7, Holes: []projection.SeqRange{{From: 3, To: 3}}}); cp != 42 || !reflect.DeepEqual(hw, want) {
		t.Fatalf("checkpoint %d hwm %+v, want 42 and %+v", cp, hw, want)
	}
	out, err := s.Outbox(ctx, 0)
	must(t, err)
	if len(out) != 2 || out[0].MsgID != "m1" || string(out[1].Data) != "two" || out[0].Header["traceparent"][0] != "x" || out[0].Key != b.Outbox[0].Key {
		t.Fatalf("Outbox = %+v", out)
	}
}

func testLaterStateWins(t *testing.T, s projection.Store) {
	a := addr("t", "c", "d")
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 1, Docs: []projection.Doc{doc(a, 1, "n", `1`), doc(a, 2, "n", `2`)},
		Conflicts: []projection.ConflictRecord{{Address: a, Conflict: events.Conflict{ID: "x", Status: events.ConflictOpen}}}}))
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 2,
		Conflicts: []projection.ConflictRecord{{Address: a, Conflict: events.Conflict{ID: "x", Status: events.ConflictResolved, Resolution: "r"}}}}))
	got, err := s.Get(ctx, a)
	must(t, err)
	if got.Version != 2 || string(got.Fields["n"]) != "2" {
		t.Fatalf("Get = %+v", got)
	}
	cs, err := s.Conflicts(ctx, a)
	must(t, err)
	if len(cs) != 1 || cs[0].Status != events.ConflictResolved {
		t.Fatalf("Conflicts = %+v", cs)
	}
}

func testHighWater(t *testing.T, s projection.Store) {
	k := projection.ClientKey{Tenant: "t", Client: "c"}
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 1, HighWater: map[projection.ClientKey]projection.HighWater{k: {Seq: 9}}}))
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 2, HighWater: map[projection.ClientKey]projection.HighWater{k: {Seq: 4}}}))
	hw, err := s.HighWater(ctx, "t", "c")
	must(t, err)
	other, err := s.HighWater(ctx, "u", "c")
	must(t, err)
	if hw.Seq != 9 || hw.Holes != nil || other.Seq != 0 {
		t.Fatalf("hwm %+v, other tenant %+v", hw, other)
	}
}

// testHighWaterHoles: holes are stored with the mark and replaced whole by
// a commit with the same or a higher mark (a late event filled a hole), never
// by a lower one.
func testHighWaterHoles(t *testing.T, s projection.Store) {
	k := projection.ClientKey{Tenant: "t", Client: "c"}
	commit := func(cp uint64, h projection.HighWater) {
		t.Helper()
		must(t, s.Commit(ctx, &projection.Batch{Checkpoint: cp, HighWater: map[projection.ClientKey]projection.HighWater{k: h}}))
	}
	check := func(want projection.HighWater) {
		t.Helper()
		got, err := s.HighWater(ctx, "t", "c")
		must(t, err)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("HighWater = %+v, want %+v", got, want)
		}
	}
	holes := projection.HighWater{Seq: 10, Holes: []projection.SeqRange{{From: 3, To: 3}, {From: 6, To: 8}}}
	commit(1, holes)
	check(holes)
	filled := projection.HighWater{Seq: 10, Holes: []projection.SeqRange{{From: 6, To: 8}}}
	commit(2, filled)
	check(filled)
	commit(3, projection.HighWater{Seq: 9}) // lower: ignored, holes kept
	check(filled)
	commit(4, projection.HighWater{Seq: 10}) // the last hole filled
	check(projection.HighWater{Seq: 10})
	commit(5, projection.HighWater{Seq: 12, Holes: []projection.SeqRange{{From: 11, To: 11}}})
	check(projection.HighWater{Seq: 12, Holes: []projection.SeqRange{{From: 11, To: 11}}})
	// Writers are independent.
	other, err := s.HighWater(ctx, "t", "c2")
	must(t, err)
	if other.Seq != 0 || other.Holes != nil {
		t.Fatalf("another writer: %+v", other)
	}
}

// testHighWaterManyHoles: a mark with as many ranges as the projector keeps
// by default reads back intact.
func testHighWaterManyHoles(t *testing.T, s projection.Store) {
	k := projection.ClientKey{Tenant: "t", Client: "c"}
	h := projection.HighWater{Seq: 2*projection.DefaultMaxHoleRanges + 1}
	for i := range uint64(projection.DefaultMaxHoleRanges) {
		h.Holes = append(h.Holes, projection.SeqRange{From: 2*i + 1, To: 2*i + 1})
	}
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 1, HighWater: map[projection.ClientKey]projection.HighWater{k: h}}))
	got, err := s.HighWater(ctx, "t", "c")
	must(t, err)
	if !reflect.DeepEqual(got, h) {
		t.Fatalf("HighWater with %d ranges read back with %d (seq %d)", len(h.Holes), len(got.Holes), got.Seq)
	}
}

func testCheckpointBackwards(t *testing.T, s projection.Store) {
	a := addr("t", "c", "d")
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 10}))
	err := s.Commit(ctx, &projection.Batch{Checkpoint: 5, Docs: []projection.Doc{doc(a, 1)},
		Outbox: []projection.OutboxEntry{{Subject: "s", MsgID: "m"}}})
	if !errors.Is(err, projection.ErrCheckpoint) {
		t.Fatalf("backwards commit: %v, want ErrCheckpoint", err)
	}
	got, err := s.Get(ctx, a)
	must(t, err)
	out, err := s.Outbox(ctx, 0)
	must(t, err)
	cp, err := s.Checkpoint(ctx)
	must(t, err)
	if got.Version != 0 || len(out) != 0 || cp != 10 {
		t.Fatalf("refused commit left doc v%d, %d outbox entries, checkpoint %d", got.Version, len(out), cp)
	}
}

func sameMarks(a, b projection.StreamMarks) bool {
	return a.Events.Created.Equal(b.Events.Created) && a.Changes.Created.Equal(b.Changes.Created) &&
		a.Events.FirstSeq == b.Events.FirstSeq && a.Events.LastSeq == b.Events.LastSeq &&
		a.Changes.FirstSeq == b.Changes.FirstSeq && a.Changes.LastSeq == b.Changes.LastSeq && a.Changes.Msgs == b.Changes.Msgs &&
		a.Events.Msgs == b.Events.Msgs && a.Reanchors == b.Reanchors
}

// testStreamMarks: stream marks are committed with the checkpoint, read
// back intact, and kept by a batch that does not set them.
func testStreamMarks(t *testing.T, s projection.Store) {
	m, err := s.Streams(ctx)
	must(t, err)
	if !sameMarks(m, projection.StreamMarks{}) {
		t.Fatalf("empty store: stream marks %+v", m)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 678901234, time.UTC)
	want := projection.StreamMarks{
		Events:  projection.StreamMark{Created: created, FirstSeq: 1},
		Changes: projection.StreamMark{Created: created.Add(time.Second), LastSeq: 77, Msgs: 12},
	}
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 3, Streams: &want}))
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 4}))
	got, err := s.Streams(ctx)
	must(t, err)
	if !sameMarks(got, want) {
		t.Fatalf("Streams = %+v, want %+v", got, want)
	}
	// A refused commit writes no marks either.
	other := projection.StreamMarks{Events: projection.StreamMark{Created: created.Add(time.Hour)}}
	if err := s.Commit(ctx, &projection.Batch{Checkpoint: 1, Streams: &other}); !errors.Is(err, projection.ErrCheckpoint) {
		t.Fatalf("backwards commit with marks: %v, want ErrCheckpoint", err)
	}
	got, err = s.Streams(ctx)
	must(t, err)
	if !sameMarks(got, want) {
		t.Fatalf("Streams after a refused commit = %+v, want %+v", got, want)
	}
}

// testReanchor: a re-anchoring batch moves the checkpoint back, with its
// marks, atomically; one without marks is refused whole.
func testReanchor(t *testing.T, s projection.Store) {
	a := addr("t", "c", "d")
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 10, Docs: []projection.Doc{doc(a, 1)}}))
	err := s.Commit(ctx, &projection.Batch{Checkpoint: 0, Reanchor: true, Docs: []projection.Doc{doc(a, 2)}})
	if !errors.Is(err, projection.ErrCheckpoint) {
		t.Fatalf("re-anchor without marks: %v, want ErrCheckpoint", err)
	}
	if cp, err := s.Checkpoint(ctx); err != nil || cp != 10 {
		t.Fatalf("refused re-anchor left checkpoint %d (%v), want 10", cp, err)
	}
	marks := projection.StreamMarks{Events: projection.StreamMark{Created: time.Unix(100, 0).UTC(), FirstSeq: 1}, Reanchors: 1}
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 0, Reanchor: true, Streams: &marks}))
	cp, err := s.Checkpoint(ctx)
	must(t, err)
	got, err := s.Streams(ctx)
	must(t, err)
	d, err := s.Get(ctx, a)
	must(t, err)
	if cp != 0 || !sameMarks(got, marks) || d.Version != 1 {
		t.Fatalf("after re-anchor: checkpoint %d, marks %+v, doc v%d; want 0, %+v, v1 (the view kept)", cp, got, d.Version, marks)
	}
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 2}))
	if cp, _ := s.Checkpoint(ctx); cp != 2 {
		t.Fatalf("checkpoint %d after the re-anchor, want 2", cp)
	}
}

func testOutbox(t *testing.T, s projection.Store) {
	b := &projection.Batch{Checkpoint: 1}
	for _, id := range []string{"a", "b", "c", "d"} {
		b.Outbox = append(b.Outbox, projection.OutboxEntry{Subject: "s", MsgID: id, Data: []byte(id)})
	}
	must(t, s.Commit(ctx, b))
	first2, err := s.Outbox(ctx, 2)
	must(t, err)
	if len(first2) != 2 || first2[0].MsgID != "a" || first2[1].MsgID != "b" {
		t.Fatalf("Outbox(2) = %+v", first2)
	}
	must(t, s.RemoveOutbox(ctx, []uint64{first2[0].Key, 999999}))
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 1, Published: []uint64{first2[1].Key},
		Outbox: []projection.OutboxEntry{{Subject: "s", MsgID: "e"}}}))
	rest, err := s.Outbox(ctx, 0)
	must(t, err)
	var ids []string
	for _, e := range rest {
		ids = append(ids, e.MsgID)
	}
	if !reflect.DeepEqual(ids, []string{"c", "d", "e"}) {
		t.Fatalf("outbox after removals = %v", ids)
	}
}

func testScanOrder(t *testing.T, s projection.Store) {
	addrs := []events.DocAddress{addr("t", "c", "b"), addr("t", "c", "a"), addr("t", "b", "z"), addr("s", "z", "z"), addr("t", "c", "a.b")}
	b := &projection.Batch{Checkpoint: 1}
	for _, a := range addrs {
		b.Docs = append(b.Docs, doc(a, 1))
		b.Conflicts = append(b.Conflicts, projection.ConflictRecord{Address: a, Conflict: events.Conflict{ID: "2"}}, projection.ConflictRecord{Address: a, Conflict: events.Conflict{ID: "1"}})
	}
	must(t, s.Commit(ctx, b))
	var got []string
	must(t, s.Scan(ctx, func(d projection.Doc) error {
		got = append(got, d.Tenant+"/"+d.Collection+"/"+d.ID)
		return nil
	}))
	want := []string{"s/z/z", "t/b/z", "t/c/a", "t/c/a.b", "t/c/b"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Scan order %v, want %v", got, want)
	}
	var confs []string
	must(t, s.ScanConflicts(ctx, func(r projection.ConflictRecord) error {
		confs = append(confs, r.Address.Doc+":"+r.Conflict.ID)
		return nil
	}))
	if len(confs) != 10 || confs[0] != "z:1" || confs[1] != "z:2" || confs[4] != "a:1" {
		t.Fatalf("ScanConflicts order %v", confs)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.Scan(ctx, func(projection.Doc) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Scan stop: %v after %d", err, n)
	}
}

func testClose(t *testing.T, s projection.Store) {
	must(t, s.Close())
	must(t, s.Close())
	if _, err := s.Checkpoint(ctx); !errors.Is(err, projection.ErrClosed) {
		t.Fatalf("Checkpoint after Close: %v, want ErrClosed", err)
	}
	if err := s.Commit(ctx, &projection.Batch{}); !errors.Is(err, projection.ErrClosed) {
		t.Fatalf("Commit after Close: %v, want ErrClosed", err)
	}
}

// testFieldsExact: field values read back byte for byte as committed,
// whatever a database would normalise (key order, spacing, number forms,
// escapes) or refuse (a NUL escape, an unpaired surrogate), so a rebuild
// into another store hashes the same and CHANGES carries what the writer
// wrote. Tombstones and documents without fields read back too.
func testFieldsExact(t *testing.T, s projection.Store) {
	values := map[string]string{
		"obj":       `{"b":1,"a":[1.0,2e3,-0.5E-2],"a2":{"z":null}}`,
		"num":       `100000000000000000000001`,
		"float":     `1.50`,
		"nul":       `"a\u0000b"`,
		"lone":      `"\ud800x"`,
		"pair":      `"\ud83d\ude00"`,
		"esc":       `"\\u0000 \" \n \u00e9"`,
		"unicode":   `"é 日本 😀"`,
		"emptyobj":  `{}`,
		"emptylist": `[]`,
	}
	var kv []string
	for k, v := range values {
		kv = append(kv, k, v)
	}
	a, tomb, bare := addr("t", "c", "exact"), addr("t", "c", "tomb"), addr("t", "c", "bare")
	d := doc(a, 1, kv...)
	dead := doc(tomb, 2)
	dead.Deleted = true
	empty := doc(bare, 1)
	must(t, s.Commit(ctx, &projection.Batch{Checkpoint: 1, Docs: []projection.Doc{d, dead, empty}}))
	got, err := s.Get(ctx, a)
	must(t, err)
	for k, v := range values {
		if string(got.Fields[k]) != v {
			t.Errorf("field %s read back as %s, want %s", k, got.Fields[k], v)
		}
	}
	if !reflect.DeepEqual(got, d) {
		t.Errorf("Get\n got %+v\nwant %+v", got, d)
	}
	for _, w := range []projection.Doc{dead, empty} {
		got, err := s.Get(ctx, w.Address())
		must(t, err)
		if !reflect.DeepEqual(got, w) {
			t.Errorf("Get %s\n got %+v\nwant %+v", w.ID, got, w)
		}
	}
	n := 0
	must(t, s.Scan(ctx, func(got projection.Doc) error {
		if got.ID == "exact" && !reflect.DeepEqual(got, d) {
			t.Errorf("Scan\n got %+v\nwant %+v", got, d)
		}
		n++
		return nil
	}))
	if n != 3 {
		t.Errorf("Scan saw %d documents, want 3", n)
	}
}

// testConcurrentCommits: commits racing from several goroutines (the
// projector commits while its publisher removes entries) each land whole,
// and the outbox reads back in commit order: every commit's entries
// together, in the order given, under keys that rise in that order.
func testConcurrentCommits(t *testing.T, s projection.Store) {
	const writers, commits, per = 4, 10, 3
	var wg sync.WaitGroup
	errs := make(chan error, writers*commits)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range commits {
				b := &projection.Batch{Checkpoint: 1}
				for i := range per {
					b.Outbox = append(b.Outbox, projection.OutboxEntry{Subject: "s", MsgID: fmt.Sprintf("w%d-c%d-%d", w, c, i)})
				}
				if err := s.Commit(ctx, b); err != nil {
					errs <- err
					return
				}
				for i := 1; i < per; i++ {
					if b.Outbox[i].Key <= b.Outbox[i-1].Key {
						errs <- fmt.Errorf("commit %s: keys %d then %d", b.Outbox[0].MsgID, b.Outbox[i-1].Key, b.Outbox[i].Key)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	out, err := s.Outbox(ctx, 0)
	must(t, err)
	if len(out) != writers*commits*per {
		t.Fatalf("outbox holds %d entries, want %d", len(out), writers*commits*per)
	}
	last := map[string]int{} // per writer: the last commit seen
	for i := 0; i < len(out); i += per {
		var w, c int
		if _, err := fmt.Sscanf(out[i].MsgID, "w%d-c%d-0", &w, &c); err != nil {
			t.Fatalf("entry %d is %s: a commit's entries are not together (%v)", i, out[i].MsgID, err)
		}
		for j := 1; j < per; j++ {
			if want := fmt.Sprintf("w%d-c%d-%d", w, c, j); out[i+j].MsgID != want || out[i+j].Key <= out[i+j-1].Key {
				t.Fatalf("entry %d is %s (key %d), want %s after key %d", i+j, out[i+j].MsgID, out[i+j].Key, want, out[i+j-1].Key)
			}
		}
		if prev, ok := last[fmt.Sprint(w)]; ok && prev >= c {
			t.Fatalf("writer %d: commit %d read back after commit %d", w, c, prev)
		}
		last[fmt.Sprint(w)] = c
	}
}

// testScanOrderBytewise: Scan, ScanConflicts and Conflicts order names by
// their bytes, not by a language's collation (which puts "a" before "B",
// ignores punctuation, or sorts "é" beside "e").
func testScanOrderBytewise(t *testing.T, s projection.Store) {
	ids := []string{"z", "é", "ab", "a-c", "a", "B", "e"}
	want := []string{"B", "a", "a-c", "ab", "e", "z", "é"}
	b := &projection.Batch{Checkpoint: 1}
	for _, id := range ids {
		a := addr("T", "c", id)
		b.Docs = append(b.Docs, doc(a, 1), doc(addr("a", "c", id), 1))
		b.Conflicts = append(b.Conflicts, projection.ConflictRecord{Address: addr("T", "c", "d"), Conflict: events.Conflict{ID: id}})
	}
	must(t, s.Commit(ctx, b))
	var got []string
	must(t, s.Scan(ctx, func(d projection.Doc) error {
		if d.Tenant == "T" {
			got = append(got, d.ID)
		} else if len(got) != len(ids) {
			return fmt.Errorf("tenant %q scanned before all of tenant %q", d.Tenant, "T")
		}
		return nil
	}))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Scan order %q, want %q", got, want)
	}
	var confs []string
	must(t, s.ScanConflicts(ctx, func(r projection.ConflictRecord) error {
		confs = append(confs, r.Conflict.ID)
		return nil
	}))
	if !reflect.DeepEqual(confs, want) {
		t.Fatalf("ScanConflicts order %q, want %q", confs, want)
	}
	cs, err := s.Conflicts(ctx, addr("T", "c", "d"))
	must(t, err)
	confs = confs[:0]
	for _, c := range cs {
		confs = append(confs, c.ID)
	}
	if !reflect.DeepEqual(confs, want) {
		t.Fatalf("Conflicts order %q, want %q", confs, want)
	}
}
