package projection_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// catchUpBytes projects n documents of the given number of fields (a put
// each, written the way the producer writes: a device, the id as
// Nats-Msg-Id) into collection, then reads CHANGES as a fresh replica
// does and returns the bytes per document it pulled (subject, headers and
// payload, as `ebb bench` counts them) and the bytes per document of a
// full-state download: the documents as one JSON array of {collection,
// id, version, fields}.
func catchUpBytes(t *testing.T, collection string, n, fields int) (wire, full float64) {
	t.Helper()
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	w := newWriter("bench-catchup", "bench", 0)
	device := events.NewIDSource(nil).New().String()
	for i := range n {
		f := map[string]any{}
		for j := range fields {
			f[fmt.Sprintf("f%d", j)] = strings.Repeat("x", 40) // about 50 B a field
		}
		ev := w.event(collection, fmt.Sprintf("doc-%05d", i), events.OpPut, 0, f)
		ev.Device = device
		publish(t, e.js, eventMsg(t, ev), ev.ID)
	}
	p := startProjector(t, e.js, store, projection.Config{Policies: testPolicies()})
	waitCheckpoint(t, p, uint64(n))
	type fullDoc struct {
		Collection string        `json:"collection"`
		ID         string        `json:"id"`
		Version    uint64        `json:"version"`
		Fields     events.Fields `json:"fields"`
	}
	var all []fullDoc
	var b int
	msgs := readAll(t, e.js, events.StreamChanges)
	if len(msgs) != n {
		t.Fatalf("CHANGES holds %d messages, want %d", len(msgs), n)
	}
	for _, m := range msgs {
		b += len(m.Subject()) + len(m.Data())
		for k, vs := range m.Headers() {
			for _, v := range vs {
				b += len(k) + len(v) + 4
			}
		}
		c, err := events.DecodeChange(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, fullDoc{c.Collection, c.Doc, c.Version, c.Fields})
	}
	j, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	return float64(b) / float64(n), float64(len(j)) / float64(n)
}

// TestProjector_ChangeBytesPerField: what a field adds to a change on
// CHANGES is the field itself, not a per-field clock as well, under every
// policy but merge (which needs the clocks): from 1 to 8 fields, the bytes
// a fresh replica pulls grow by at most 1.2 times what a full-state
// download grows by. Under merge the clocks stay (and cost what they do).
func TestProjector_ChangeBytesPerField(t *testing.T) {
	const n = 50
	for _, coll := range []string{"notes", "orders", "contracts"} { // lww, reject, manual
		t.Run(coll, func(t *testing.T) {
			wire1, full1 := catchUpBytes(t, coll, n, 1)
			wire8, full8 := catchUpBytes(t, coll, n, 8)
			t.Logf("%s: 1 field %.0f B/doc pulled vs %.0f B/doc full state (%.2fx); 8 fields %.0f vs %.0f (%.2fx)",
				coll, wire1, full1, wire1/full1, wire8, full8, wire8/full8)
			if grow, want := wire8-wire1, full8-full1; grow > 1.2*want {
				t.Errorf("7 more fields cost %.0f B/doc on CHANGES, %.0f B/doc in a full-state download: %.2fx, want at most 1.2x",
					grow, want, grow/want)
			}
		})
	}
	t.Run("profiles", func(t *testing.T) { // merge: per-field clocks on the wire
		e := newEnv(t)
		store := mustOpenBolt(t, "")
		w := newWriter("acme", "phone", 0)
		ev := w.event("profiles", "p1", events.OpPut, 0, map[string]any{"a": 1, "b": 2})
		publish(t, e.js, eventMsg(t, ev), ev.ID)
		p := startProjector(t, e.js, store, projection.Config{Policies: testPolicies()})
		waitCheckpoint(t, p, 1)
		msgs := readAll(t, e.js, events.StreamChanges)
		c, err := events.DecodeChange(msgs[0].Data())
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Clocks) != 2 {
			t.Fatalf("a merge change carries clocks %v, want one per field", c.Clocks)
		}
	})
}
