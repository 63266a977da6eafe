package consumer

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestSynced_CompactRoundTrip: the compact record of a change reads back as
// the same projection.Doc as the change payload itself, and is less than
// half its size for a small document.
func TestSynced_CompactRoundTrip(t *testing.T) {
	hlc := events.HLC{Wall: 1_796_135_546_096, Logical: 3}
	other := events.HLC{Wall: 1_796_135_540_000}
	for _, tc := range []struct {
		name string
		ch   events.Change
	}{
		{"put", events.Change{Version: 1, HLC: hlc, Event: "01M8S0AV7G320JBCY70HTJFAME", Client: "01M8S0AV734355QF2VYH21884B",
			Device: "01M8S0AV734355QF2VYKVBPCRS", Seq: 7, AsWritten: true,
			Fields: events.Fields{"n": json.RawMessage(`0`), "v": json.RawMessage(`"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"`)},
			Clocks: map[string]events.FieldClock{"n": {Version: 1, HLC: hlc, Client: "01M8S0AV734355QF2VYH21884B"}, "v": {Version: 1, HLC: hlc, Client: "01M8S0AV734355QF2VYH21884B"}}}},
		{"merged, other clocks, names", events.Change{Version: 9, HLC: hlc, Event: "01M8S0AV7G320JBCY70HTJFAME", Client: "alice", Seq: 2,
			Fields: events.Fields{"a": json.RawMessage(`{"x":[1,2]}`), "ü b": json.RawMessage(`null`)},
			Clocks: map[string]events.FieldClock{"a": {Version: 4, HLC: other, Client: "bob"}, "ü b": {Version: 9, HLC: hlc, Client: "alice"}, "gone": {Version: 3, HLC: other}}}},
		{"tombstone with conflicts", events.Change{Version: 3, Deleted: true, HLC: hlc, Event: "01m8s0av7g320jbcy70htjfame", Client: "c", Seq: 1,
			Conflicts: []events.Conflict{{ID: "k1", Status: events.ConflictOpen}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := tc.ch
			ch.Schema, ch.Tenant, ch.Collection, ch.Doc = events.SchemaVersion, "t1", "col", "d 1"
			if tc.name == "tombstone with conflicts" {
				ch.Settled = &events.Conflict{ID: "s"}
			}
			data, err := events.EncodeChange(&ch)
			if err != nil {
				t.Fatal(err)
			}
			rec, ok := compactSynced(nil, data)
			if !ok {
				t.Fatal("a valid change did not compact")
			}
			// The one-pass reader and the decoder agree byte for byte.
			var c compactChange
			if fast := scanCompact(data, &c); fast != (tc.name == "put") {
				t.Errorf("scanCompact = %v on %s", fast, data)
			}
			dec, err := events.DecodeChange(data)
			if err != nil {
				t.Fatal(err)
			}
			var cs []byte
			if len(dec.Conflicts) > 0 {
				cs, _ = json.Marshal(dec.Conflicts)
			}
			slow := compactOf(dec, cs)
			if want := appendCompact(nil, &slow); !bytes.Equal(rec, want) {
				t.Errorf("compact record %x, the decoder's %x", rec, want)
			}
			key := docKey("col", "d 1")
			v := make([]byte, 8+len(rec))
			putSyncedValue(v, ch.Version, rec)
			got, err := decodeSynced(nil, "t1", key, v)
			if err != nil {
				t.Fatal(err)
			}
			raw := make([]byte, 8+len(data))
			putSyncedValue(raw, ch.Version, data)
			want, err := decodeSynced(nil, "t1", key, raw)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(want, projection.DocFromChange(&ch)) {
				t.Fatalf("compact record reads as\n%+v\nwant\n%+v", got, want)
			}
			for i := range rec { // a truncated record is an error, never a panic
				if _, err := decodeSynced(nil, "t1", key, v[:8+i]); err == nil && i > 0 {
					t.Fatalf("record cut at %d of %d read without error", i, len(rec))
				}
			}
			t.Logf("payload %d B, compact %d B", len(data), len(rec))
			if tc.name == "put" && 2*len(rec) > len(data) {
				t.Errorf("compact record %d B, payload %d B: want less than half", len(rec), len(data))
			}
		})
	}
	if _, ok := compactSynced(nil, []byte(`{"schema":1}`)); ok {
		t.Fatal("an invalid change compacted")
	}
}

// TestSynced_UnusualPayloads: payloads the one-pass reader leaves to the
// decoder (escapes, another case, unknown keys, duplicate keys, bad
// UTF-8) compact to what the decoder makes of them, or not at all when the
// decoder refuses them, as the view did before the compact record.
func TestSynced_UnusualPayloads(t *testing.T) {
	head := `"schema":1,"tenant":"t1","collection":"c","doc":"d","version":2,"hlc":{"wall":5,"logical":0},"event":"e","client":"k","seq":1`
	for _, tc := range []struct {
		name    string
		payload string
		valid   bool
	}{
		{"escaped field name", `{` + head + `,"fields":{"a\u0062":1}}`, true},
		{"non-ASCII field", `{` + head + `,"fields":{"ü":"é"}}`, true},
		{"key in another case", `{` + head + `,"Device":"x"}`, true},
		{"unknown key", `{` + head + `,"color":"red"}`, false},
		{"unknown clock key", `{` + head + `,"clocks":{"a":{"version":1,"when":2}}}`, false},
		{"unknown hlc key", `{` + head + `,"clocks":{"a":{"version":1,"hlc":{"wall":1,"x":0}}}}`, false},
		{"duplicate field", `{` + head + `,"fields":{"a":1,"a":2}}`, true},
		{"bad UTF-8", "{" + head + `,"fields":{"a":"` + "\xff" + `"}}`, false},
		{"trailing data", `{` + head + `} {}`, false},
		{"lower-case ULID", `{` + head + `,"device":"01m8s0av734355qf2vykvbpcrs"}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, ok := compactSynced(nil, []byte(tc.payload))
			if ok != tc.valid {
				t.Fatalf("compacted %v, want %v", ok, tc.valid)
			}
			if !ok {
				return
			}
			ch, err := events.DecodeChange([]byte(tc.payload))
			if err != nil {
				t.Fatal(err)
			}
			v := make([]byte, 8+len(rec))
			putSyncedValue(v, ch.Version, rec)
			got, err := decodeSynced(nil, "t1", docKey("c", "d"), v)
			if err != nil {
				t.Fatal(err)
			}
			if want := projection.DocFromChange(ch); !reflect.DeepEqual(got, want) {
				t.Fatalf("compact record reads as\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

// FuzzCompactSynced: whatever the payload, the compact record exists
// exactly when events.DecodeChange accepts it, and reads back as the Doc
// the decoder makes of it.
func FuzzCompactSynced(f *testing.F) {
	for _, data := range headSeeds(f) {
		f.Add(data)
	}
	f.Add([]byte(`{"schema":1,"tenant":"t1","collection":"c","doc":"d","version":2,"fields":{"a":[1,{"b":null}],"z":"\u00e9"},"hlc":{"wall":5,"logical":1},"clocks":{"a":{"version":2,"hlc":{"wall":5,"logical":1},"client":"k"},"z":{"version":1,"hlc":{"wall":3,"logical":0}}},"event":"01M8S0AV7G320JBCY70HTJFAME","client":"k","device":"01M8S0AV734355QF2VYKVBPCRS","seq":1,"as_written":true}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, ok := compactSynced(nil, data)
		ch, err := events.DecodeChange(data)
		if ok != (err == nil) {
			t.Fatalf("compacted %v, DecodeChange: %v", ok, err)
		}
		if !ok {
			return
		}
		key := docKey(ch.Collection, ch.Doc)
		v := make([]byte, 8+len(rec))
		putSyncedValue(v, ch.Version, rec)
		got, err := decodeSynced(nil, ch.Tenant, key, v)
		if err != nil {
			t.Fatal(err)
		}
		want := projection.DocFromChange(ch)
		if len(want.Fields) == 0 {
			want.Fields = nil // an empty object and none read the same
		}
		if len(want.Clocks) == 0 {
			want.Clocks = nil
		}
		if len(want.Conflicts) == 0 {
			want.Conflicts = nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("compact record reads as\n%+v\nwant\n%+v", got, want)
		}
	})
}
