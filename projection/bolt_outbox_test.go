package projection

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestOutboxEntry_RoundTripAndLegacyJSON(t *testing.T) {
	cases := []OutboxEntry{
		{Subject: "ebb.chg.acme.notes.d", MsgID: "chg:acme/notes/d:1", Data: []byte(`{"schema":1}`)},
		{Subject: "ebb.rcpt.acme.phone", MsgID: "rcpt:x", Header: map[string][]string{"traceparent": {"00-abc-def-01"}, "k": {"a", ""}}, Data: []byte{0, 1, '{'}},
		{Subject: "ebb.dead.~", MsgID: "dead:7", Header: map[string][]string{}, Data: nil},
	}
	for _, want := range cases {
		got, err := decodeOutboxEntry(encodeOutboxEntry(&want))
		if err != nil {
			t.Fatalf("decode %s: %v", want.MsgID, err)
		}
		if len(want.Header) == 0 {
			want.Header = nil
		}
		if len(want.Data) == 0 {
			want.Data = got.Data // nil or empty, both no payload
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip: got %+v, want %+v", got, want)
		}
		// A store written before the binary form holds JSON records.
		legacy, err := json.Marshal(outboxRecord{Subject: want.Subject, MsgID: want.MsgID, Header: want.Header, Data: want.Data})
		if err != nil {
			t.Fatal(err)
		}
		old, err := decodeOutboxEntry(legacy)
		if err != nil {
			t.Fatalf("decode legacy %s: %v", want.MsgID, err)
		}
		if old.Subject != want.Subject || old.MsgID != want.MsgID || string(old.Data) != string(want.Data) || len(old.Header) != len(want.Header) {
			t.Fatalf("legacy: got %+v, want %+v", old, want)
		}
	}
	full := encodeOutboxEntry(&cases[1])
	for _, bad := range [][]byte{nil, {0x02}, full[:3], {outboxBinary, 0xff}} {
		if _, err := decodeOutboxEntry(bad); !errors.Is(err, errOutboxRecord) {
			t.Errorf("decode %x: err %v, want errOutboxRecord", bad, err)
		}
	}
}

func FuzzDecodeOutboxEntry(f *testing.F) {
	f.Add(encodeOutboxEntry(&OutboxEntry{Subject: "s", MsgID: "m", Header: map[string][]string{"k": {"v"}}, Data: []byte("d")}))
	f.Add([]byte(`{"s":"a","m":"b","d":"eA=="}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeOutboxEntry(b)
		if err != nil || len(b) == 0 || b[0] != outboxBinary {
			return
		}
		again, err := decodeOutboxEntry(encodeOutboxEntry(&e))
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if again.Subject != e.Subject || again.MsgID != e.MsgID || string(again.Data) != string(e.Data) || len(again.Header) != len(e.Header) {
			t.Fatalf("re-encoded entry differs: %+v, want %+v", again, e)
		}
	})
}
