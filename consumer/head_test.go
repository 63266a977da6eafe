package consumer

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// headSeeds are payloads that exercise both paths of decodeHead.
func headSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	ch := testChange("t1", "c", "doc-1", 3, 7)
	ch.Event, ch.Client, ch.Seq = "01HXEVENT", "alice", 9
	ch.Clocks = map[string]events.FieldClock{"n": {Version: 3, HLC: ch.HLC, Client: "alice"}}
	plain, err := events.EncodeChange(ch)
	if err != nil {
		tb.Fatal(err)
	}
	ch.Fields["s"] = json.RawMessage(`"quote \" tab \t unicode \u00e9 é"`)
	ch.Conflicts = []events.Conflict{{ID: "x", Status: events.ConflictOpen}}
	ch.Settled = &events.Conflict{ID: "x", Status: events.ConflictOpen, Policy: events.PolicyManual}
	rich, err := events.EncodeChange(ch)
	if err != nil {
		tb.Fatal(err)
	}
	return [][]byte{
		plain, rich,
		[]byte(` {"schema":1,"tenant":"t","collection":"c","doc":"d","version":1,"hlc":{"wall":-5,"logical":4294967295}} `),
		[]byte(`{"schema":1,"tenant":"t","collection":"c","doc":"d","version":1,"Version":2}`),
		[]byte(`{"schema":1,"tenant":"t","collection":"c","doc":"d","version":1,"version":2}`),
		[]byte(`{"schema":1,"tenant":"t\u0031","collection":"c","doc":"d","version":1}`),
		[]byte(`{"schema":1,"tenant":"t","collection":"c","doc":"d","version":-0}`),
		[]byte(`{"schema":1,"tenant":"t","collection":"c","doc":"d","version":18446744073709551616}`),
		[]byte(`{"schema":1,"tenant":"t","collection":"c","doc":"d","version":1.0}`),
		[]byte(`{"schema":1,"tenant":"t","collection":"c","doc":"d","version":1,"hlc":{"logical":4294967296}}`),
		[]byte(`{"schema":1,"tenant":"t","collection":"c","doc":"d","version":1,"fields":{"a":[1,2,{"b":null}],}}`),
		[]byte(`{"schema":1,"tenant":"t","collection":"c","doc":"d","version":1,"fields":{"a":01}}`),
		[]byte(`{"schema":1,"tenant":"t","collection":"c","doc":"d","version":1,"ſeq":5}`),
		[]byte(`{"schema":1,"tenant":"t","collection":"c","doc":"d","version":1}x`),
		[]byte(`{"schema":1,"tenant":null,"collection":"c","doc":"d","version":1,"settled":null,"conflicts":[{"status":7}]}`),
		[]byte(`null`),
		[]byte(`{}`),
		[]byte(`{"schema":1`),
	}
}

// referenceHead is what decodeHead must agree with: encoding/json alone.
func referenceHead(data []byte) (changeHead, error) {
	var h changeHead
	err := json.Unmarshal(data, &h)
	return h, err
}

func checkHeadAgrees(t *testing.T, data []byte) {
	t.Helper()
	want, werr := referenceHead(data)
	var got changeHead
	gerr := decodeHead(data, &got)
	if werr != nil {
		if gerr == nil {
			t.Fatalf("%q: decodeHead accepted what encoding/json refuses (%v): %+v", data, werr, got)
		}
		return
	}
	if gerr != nil {
		// The only errors left are the checks after decoding.
		if !errors.Is(gerr, events.ErrInvalid) && !errors.Is(gerr, events.ErrUnknownSchema) {
			t.Fatalf("%q: decodeHead error %v, encoding/json none", data, gerr)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %+v\nwant %+v", data, got, want)
	}
}

// TestDecodeHead_AgreesWithEncodingJSON: the fast path and encoding/json
// give the same head, or both refuse.
func TestDecodeHead_AgreesWithEncodingJSON(t *testing.T) {
	for _, data := range headSeeds(t) {
		checkHeadAgrees(t, data)
	}
	var h changeHead
	if !scanHead(headSeeds(t)[0], &h, nil) {
		t.Error("the payload events.EncodeChange writes missed the fast path")
	}
	if !scanHead(headSeeds(t)[1], &h, nil) {
		t.Error("a payload with escapes in its fields and conflicts missed the fast path")
	}
}

func FuzzDecodeHead(f *testing.F) {
	for _, data := range headSeeds(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkHeadAgrees(t, data) })
}

func BenchmarkDecodeHead(b *testing.B) {
	data := headSeeds(b)[0]
	var h changeHead
	b.ReportAllocs()
	for b.Loop() {
		if err := decodeHead(data, &h); err != nil {
			b.Fatal(err)
		}
	}
}
