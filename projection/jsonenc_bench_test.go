package projection

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// benchState is a state like BenchmarkProjector's: two fields, their
// clocks, and the conflict record its last write made.
func benchState() (Doc, events.Conflict) {
	body, _ := json.Marshal(strings.Repeat("x", 120))
	d := Doc{Tenant: "acme", Collection: "notes", ID: "doc-4242", Version: 7,
		Fields: events.Fields{"title": json.RawMessage(`4242`), "body": body},
		HLC:    events.HLC{Wall: 1796152845764, Logical: 256},
		Clocks: map[string]events.FieldClock{"title": {Version: 7, HLC: events.HLC{Wall: 1796152845764, Logical: 256}, Client: "bench"},
			"body": {Version: 7, HLC: events.HLC{Wall: 1796152845764, Logical: 256}, Client: "bench"}},
		Event: "01M8SGTSE4PZDRGN8213745M74", Client: "bench", Seq: 4242, AsWritten: true}
	c := events.Conflict{ID: "01M8SGTSDZ91BDCTTTZV3TCSQ6", Policy: events.PolicyLWW, Status: "overwritten", Lost: []string{"body", "title"},
		Sides: []events.Side{{Event: "01M8SGTSDZ91BDCTTTZST71X64", Client: "bench", HLC: d.HLC, Version: 6, Fields: d.Fields},
			{Event: d.Event, Client: "bench", HLC: d.HLC, Fields: d.Fields}}}
	return d, c
}

// BenchmarkEncodeState: what a commit encodes for one event's state and
// conflict record, into a reused buffer.
func BenchmarkEncodeState(b *testing.B) {
	d, c := benchState()
	buf := make([]byte, 0, 4096)
	for b.Loop() {
		var err error
		if buf, err = appendDocState(buf[:0], &d); err != nil {
			b.Fatal(err)
		}
		if buf, err = appendConflict(buf, &c); err != nil {
			b.Fatal(err)
		}
	}
}
