package feed

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// TestEncodePage_CutToMaxPayload: a page over the connection's max payload
// loses changes from its end, its cursor moved back before them and More
// set, so the reader asks for them next.
func TestEncodePage_CutToMaxPayload(t *testing.T) {
	big := events.Fields{"s": json.RawMessage(`"` + strings.Repeat("x", 400) + `"`)}
	p := Page{LastSeq: 9}
	for _, seq := range []uint64{3, 5, 8} {
		p.Changes = append(p.Changes, Entry{Seq: seq, Change: &events.Change{Schema: 1, Tenant: "t", Collection: "c", Doc: "d", Version: 1, Fields: big}})
	}
	data, err := encodePage(&p, 1400, jsonPage)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 1400 || len(p.Changes) != 2 || p.LastSeq != 7 || !p.More {
		t.Fatalf("%d bytes, %d changes, last_seq %d, more %v; want <= 1400, 2, 7, true", len(data), len(p.Changes), p.LastSeq, p.More)
	}
	if _, err := encodePage(&p, 100, jsonPage); err == nil {
		t.Fatal("a single change over the max payload encoded")
	}
}

func jsonPage(p *Page) ([]byte, error) { return json.Marshal(p) }
