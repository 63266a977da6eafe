package consumer

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// backlogReplica opens an offline replica holding a document "c"/"target"
// (one pending put) and, unless u is 0, u unsettled writes to other
// documents of collections "c" and "other".
func backlogReplica(t *testing.T, u int) *Replica {
	t.Helper()
	r, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	if _, err := r.Put(t.Context(), "c", "target", events.Fields{"v": json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	ws := make([]producer.Write, 0, u)
	for i := range u {
		col := "c"
		if i%2 == 1 {
			col = "other"
		}
		ws = append(ws, producer.Write{Collection: col, Doc: fmt.Sprintf("d%05d", i%500), Op: events.OpPut,
			Fields: events.Fields{"n": json.RawMessage(fmt.Sprint(i))}})
	}
	if u > 0 {
		if _, err := r.Log().AppendBatch(t.Context(), ws); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// TestReplica_ReadsIndependentOfBacklog: Get and basis reads cost the
// writes of their document, not every unsettled write. Allocations are the
// deterministic proxy: a scan allocates per unsettled entry it decodes.
func TestReplica_ReadsIndependentOfBacklog(t *testing.T) {
	none, loaded := backlogReplica(t, 0), backlogReplica(t, 2000)
	get := func(r *Replica) float64 {
		return testing.AllocsPerRun(20, func() {
			d, err := r.Get(t.Context(), "c", "target")
			if err != nil || d.Pending != 1 {
				t.Fatalf("get target: %+v, %v", d, err)
			}
		})
	}
	if a, b := get(none), get(loaded); b > a+8 {
		t.Errorf("Get allocates %.0f with 2000 unsettled writes elsewhere, %.0f with none: it reads the backlog", b, a)
	}
	list := func(r *Replica) float64 {
		return testing.AllocsPerRun(5, func() {
			ds, err := r.List(t.Context(), "c", false)
			if err != nil || len(ds) == 0 {
				t.Fatalf("list c: %d docs, %v", len(ds), err)
			}
		})
	}
	// List of "c" reads c's pending writes (half the backlog) but never
	// "other"'s: compare with a replica whose backlog is all in "other".
	onlyOther := backlogOther(t, 2000)
	if a, b := list(onlyOther), list(none); a > b+8 {
		t.Errorf("List of c allocates %.0f with 2000 unsettled writes in another collection, %.0f with none", a, b)
	}
}

// backlogOther is backlogReplica with every backlog write in "other".
func backlogOther(t *testing.T, u int) *Replica {
	t.Helper()
	r := backlogReplica(t, 0)
	ws := make([]producer.Write, 0, u)
	for i := range u {
		ws = append(ws, producer.Write{Collection: "other", Doc: fmt.Sprintf("d%05d", i%500), Op: events.OpPut,
			Fields: events.Fields{"n": json.RawMessage(fmt.Sprint(i))}})
	}
	if _, err := r.Log().AppendBatch(t.Context(), ws); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestReplica_PutIndependentOfBacklog: a Put's own reads (its base, the
// document it returns) do not grow with unrelated unsettled writes.
func TestReplica_PutIndependentOfBacklog(t *testing.T) {
	none, loaded := backlogReplica(t, 0), backlogReplica(t, 2000)
	put := func(r *Replica) float64 {
		i := 0
		return testing.AllocsPerRun(10, func() {
			i++
			if _, err := r.Put(t.Context(), "c", fmt.Sprintf("new%d", i), events.Fields{"v": json.RawMessage(`1`)}); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The commit itself touches bigger B+trees (a few more nodes), so
	// the bound is the 2x, not equality; a scan costs ~200x here.
	if a, b := put(none), put(loaded); b > 2*a {
		t.Errorf("Put allocates %.0f with 2000 unsettled writes elsewhere, %.0f with none", b, a)
	}
}

// TestReplica_ReceiptsIndependentOfBacklog: applying a batch of receipts
// looks each receipt's event up by id; it does not read every unsettled
// write (as building a map of them per batch did).
func TestReplica_ReceiptsIndependentOfBacklog(t *testing.T) {
	apply := func(r *Replica) float64 {
		seq := uint64(0)
		return testing.AllocsPerRun(10, func() {
			seq++
			// Another device's receipt of an event this log does not hold:
			// the lookup finds nothing and nothing changes but the cursor.
			rc := &events.Receipt{Schema: events.SchemaVersion, Event: "01JAAAAAAAAAAAAAAAAAAAAAAA", Tenant: r.tenant,
				Client: r.client, Device: "01JBBBBBBBBBBBBBBBBBBBBBBB", Seq: seq, Collection: "c", Doc: "x",
				Outcome: events.OutcomeApplied, Version: 1}
			ds := []delivery[receipt]{{subject: rc.Subject(), seq: seq, v: receipt{rc: rc}}}
			if err := r.applyReceipts(t.Context(), ds, 1); err != nil {
				t.Fatal(err)
			}
		})
	}
	none, loaded := backlogReplica(t, 0), backlogReplica(t, 2000)
	if a, b := apply(none), apply(loaded); b > 2*a {
		t.Errorf("a receipt allocates %.0f with 2000 unsettled writes, %.0f with none", b, a)
	}
}
