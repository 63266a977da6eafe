package projection

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// marshalDocState is encodeDocState by encoding/json: the reference.
func marshalDocState(d *Doc) ([]byte, error) {
	s := storedDoc{Change: d.encoded(nil), Audience: d.Audience}
	if d.Kept != nil {
		s.Kept = &d.Kept
	}
	return json.Marshal(s)
}

// TestJSONEncoder_SameBytesAsMarshal: the hand-written encoder of changes,
// stored states, conflict records and receipts writes exactly what encoding/json
// writes, for every member of the types (a member added to them fails the
// count below until jsonenc.go encodes it), for strings that need escaping
// (HTML, control characters, invalid UTF-8, U+2028) and field values that
// need compacting or escaping, and for random bytes.
func TestJSONEncoder_SameBytesAsMarshal(t *testing.T) {
	for typ, n := range map[reflect.Type]int{
		reflect.TypeFor[events.Change]():     17,
		reflect.TypeFor[events.Conflict]():   6,
		reflect.TypeFor[events.Side]():       6,
		reflect.TypeFor[events.FieldClock](): 3,
		reflect.TypeFor[events.HLC]():        2,
		reflect.TypeFor[storedDoc]():         3,
		reflect.TypeFor[events.Receipt]():    13,
	} {
		if typ.NumField() != n {
			t.Errorf("%s has %d members, jsonenc.go encodes %d: encode the new ones and count them here", typ, typ.NumField(), n)
		}
	}
	odd := "a<b>&c\"\\\x00\x01\b\f\n\r\t\x7f é \u2028\u2029 \xff\xfe z"
	side := events.Side{Event: "e1", Client: odd, HLC: events.HLC{Wall: -5, Logical: 7}, Version: 3, Deleted: true,
		Fields: events.Fields{"x": json.RawMessage(`1`), odd: json.RawMessage(` { "a" : [1, 2] , "h":"<&>" } `)}}
	conf := events.Conflict{ID: "c1", Policy: events.PolicyLWW, Status: "overwritten", Sides: []events.Side{side, {}},
		Lost: []string{"x", odd}, Resolution: "r1"}
	full := Doc{
		Tenant: "t" + odd, Collection: "c", ID: "d", Version: 9, Deleted: true,
		Fields: events.Fields{"b": json.RawMessage(`"v"`), "a": json.RawMessage(`{"n":null}`), "nil": nil, "ws": json.RawMessage("[1,\n2]"), "u": json.RawMessage("\"\u2028\"")},
		HLC:    events.HLC{Wall: 1 << 50, Logical: 1 << 31},
		Clocks: map[string]events.FieldClock{"b": {Version: 2, HLC: events.HLC{Wall: 3}, Client: odd}, "a": {Version: 1}},
		Event:  "e", Client: "cl", Device: "dev", Seq: 1 << 60,
		Conflicts: []events.Conflict{conf, {ID: "c2"}},
		AsWritten: true,
		Audience:  []string{"g:red", "u:" + odd},
		Kept:      events.Fields{"owner": json.RawMessage(`"ann"`)},
	}
	docs := []Doc{full, {}, {Tenant: "t", Version: 1, Kept: events.Fields{}}, {Fields: events.Fields{}, Clocks: map[string]events.FieldClock{}, Conflicts: []events.Conflict{}}}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		v, _ := json.Marshal(string(b)) // a valid value holding those bytes
		docs = append(docs, Doc{Tenant: string(b), ID: string(b), Event: string(b), Fields: events.Fields{string(b): v},
			Clocks: map[string]events.FieldClock{string(b): {Client: string(b)}}})
	}
	for i := range docs {
		d := &docs[i]
		got, err := encodeDocState(d)
		want, werr := marshalDocState(d)
		if err != nil || werr != nil || !bytes.Equal(got, want) {
			t.Fatalf("doc %d: stored state\n got %s (%v)\nwant %s (%v)", i, got, err, want, werr)
		}
		for _, settled := range []*events.Conflict{nil, &conf} {
			got, err := encodeChange(d.encoded(settled))
			want, werr := events.EncodeChange(d.Change(settled))
			if err != nil || werr != nil || !bytes.Equal(got, want) {
				t.Fatalf("doc %d: change\n got %s (%v)\nwant %s (%v)", i, got, err, want, werr)
			}
		}
		back, err := decodeDocState(got)
		if err != nil || len(back.Audience) != len(d.Audience) || (back.Kept == nil) != (d.Kept == nil) {
			t.Fatalf("doc %d: decoded back %+v, %v", i, back, err)
		}
	}
	for _, c := range []events.Conflict{conf, {}, {Sides: []events.Side{}}} {
		got, err := encodeConflict(&c)
		want, werr := json.Marshal(c)
		if err != nil || werr != nil || !bytes.Equal(got, want) {
			t.Fatalf("conflict\n got %s (%v)\nwant %s (%v)", got, err, want, werr)
		}
	}
	for _, r := range []events.Receipt{
		{},
		{Schema: 1, Event: "e", Tenant: odd, Client: "c", Device: "d", Seq: 3, Collection: "l", Doc: odd, Outcome: events.OutcomeRejected,
			Reason: odd, Version: 4, Conflict: "k", Stream: 1 << 62},
	} {
		got := encodeReceipt(&r)
		want, err := events.EncodeReceipt(&r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("receipt\n got %s\nwant %s (%v)", got, want, err)
		}
	}
	if _, err := encodeChange(&events.Change{Fields: events.Fields{"bad": json.RawMessage(`{not json`)}}); err == nil {
		t.Error("a field value that is no JSON encoded without an error")
	}
}
