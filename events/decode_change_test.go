package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func validChange() Change {
	return Change{
		Schema: SchemaVersion, Tenant: "acme", Collection: "todos", Doc: "t.1", Version: 3,
		Fields: Fields{"title": json.RawMessage(`"milk"`), "done": json.RawMessage(`false`)},
		HLC:    HLC{Wall: 1_732_550_000_000, Logical: 1}, Event: testID, Client: "c1",
		Device: "01JDQ8V7N5Y8Z6X4W3V2T1S0RN", Seq: 7, AsWritten: true,
	}
}

// canonicalChanges are changes as the projector publishes them and the
// shapes the fast path must take: tombstones, left notices, field clocks,
// unicode and escapes, nested values, the extremes of every integer.
func canonicalChanges() map[string]*Change {
	lww := validChange()
	legacy := validChange()
	legacy.Device, legacy.AsWritten = "", false
	tomb := validChange()
	tomb.Deleted, tomb.Fields = true, nil
	left := Change{Schema: SchemaVersion, Tenant: "acme", Collection: "todos", Doc: "t.1", Version: 9, Event: testID, Left: true}
	merge := validChange()
	merge.AsWritten = false
	merge.Clocks = map[string]FieldClock{
		"title": {Version: 2, HLC: HLC{Wall: 1_732_550_000_000, Logical: 1}, Client: "c1"},
		"done":  {Version: 3, HLC: HLC{Wall: 1_732_550_000_001}, Client: "c\"2 ü"},
		"gone":  {Version: 1, HLC: HLC{Wall: 5}}, // a removed field keeps its clock; no client
	}
	unicode := validChange()
	unicode.Tenant, unicode.Collection, unicode.Doc, unicode.Client = "Zürich", "заметки", "日本語 doc 🎉", "clïent"
	unicode.Fields = Fields{"tïtle": json.RawMessage(`"crème brûlée 🍮"`), "ключ": json.RawMessage(`"значение"`)}
	escapes := validChange()
	escapes.Doc = "a\"b\\c/d<e>f&g\u2028h\u2029i\u007f\x01"
	escapes.Device = "dev <1> & \"2\""
	escapes.Fields = Fields{
		"quote\"key": json.RawMessage(`"va\"lue\\ \u0000 \ud83d\ude00 \n\t"`),
		"<html>":     json.RawMessage(`"<b>&amp;</b>"`),
		"line\u2028": json.RawMessage(`"\u2028\u2029"`),
	}
	nested := validChange()
	nested.Fields = Fields{
		"obj":   json.RawMessage(`{"a":[1,2,{"b":null,"c":[true,false]}],"d":{"e":{"f":"g"}}}`),
		"nums":  json.RawMessage(`[0,-0,1.5,-2.25e10,1E+2,3e-7,123456789012345678901234567890]`),
		"empty": json.RawMessage(`[]`),
		"eobj":  json.RawMessage(`{}`),
		"str":   json.RawMessage(`""`),
		"null":  json.RawMessage(`null`),
	}
	big := validChange()
	big.Version, big.Seq = math.MaxUint64, math.MaxUint64
	big.HLC = HLC{Wall: math.MaxInt64, Logical: math.MaxUint32}
	big.Clocks = map[string]FieldClock{"title": {Version: math.MaxUint64, HLC: big.HLC}}
	zero := &Change{} // every value at its zero: only schema, names, numbers and the clock travel
	many := validChange()
	for i := range 40 {
		many.Fields[strings.Repeat("f", i+1)] = json.RawMessage(`{"n":` + strings.Repeat("9", i+1) + `}`)
	}
	return map[string]*Change{
		"lww": &lww, "legacy log": &legacy, "tombstone": &tomb, "left notice": &left, "merge clocks": &merge,
		"unicode": &unicode, "escapes": &escapes, "nested": &nested, "big numbers": &big, "zero": zero,
		"many fields": &many,
	}
}

// canonicalChangeBytes are the wire forms the fast path must take: what
// EncodeChange writes for canonicalChanges, and an empty fields object
// (EncodeChange omits one, but it is the canonical form of an empty map).
func canonicalChangeBytes(tb testing.TB) map[string][]byte {
	tb.Helper()
	out := map[string][]byte{}
	for name, c := range canonicalChanges() {
		b, err := EncodeChange(c)
		if err != nil {
			tb.Fatal(err)
		}
		out[name] = b
	}
	c := validChange()
	b, _ := EncodeChange(&c)
	out["empty fields"] = []byte(strings.Replace(string(b), `"fields":{"done":false,"title":"milk"}`, `"fields":{}`, 1))
	out["empty clocks"] = []byte(strings.Replace(string(b), `"hlc":`, `"clocks":{},"hlc":`, 1))
	out["false bools"] = []byte(strings.Replace(string(b), `"as_written":true`, `"deleted":false,"as_written":false,"left":false`, 1))
	return out
}

// TestDecodeChangeFast_TakesCanonicalChanges checks that the fast path, not
// the strict decoder, decides what the projector publishes, so the speed-up
// cannot silently vanish, and that what it returns equals the strict
// decoder's and owns its memory.
func TestDecodeChangeFast_TakesCanonicalChanges(t *testing.T) {
	for name, b := range canonicalChangeBytes(t) {
		t.Run(name, func(t *testing.T) {
			in := bytes.Clone(b)
			got, ok := decodeChangeFast(in)
			if !ok {
				t.Fatalf("fast path declined %s", b)
			}
			want, err := decodeChangeStrict(b)
			if err != nil {
				t.Fatalf("strict decoder refused %s: %v", b, err)
			}
			for i := range in {
				in[i] = 'X' // the caller may reuse its buffer (a NATS message's)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("fast path decoded %s\nas   %#v\nwant %#v", b, got, want)
			}
			for k, v := range got.Fields {
				if cap(v) != len(v) {
					t.Fatalf("field %q has cap %d > len %d: appending to it would overwrite another field", k, cap(v), len(v))
				}
			}
		})
	}
}

// TestDecodeChangeFast_Declines lists inputs the fast path must leave to the
// strict decoder: the features it does not parse (conflicts, the settled
// record), and what encoding/json gives a meaning of its own
// (case-insensitive keys, last duplicate wins, null leaves the zero value)
// or refuses with its own error.
func TestDecodeChangeFast_Declines(t *testing.T) {
	c := validChange()
	c.Clocks = map[string]FieldClock{"done": {Version: 2, HLC: HLC{Wall: 4}, Client: "c1"}}
	good, _ := EncodeChange(&c)
	replace := func(old, new string) []byte {
		t.Helper()
		if !strings.Contains(string(good), old) {
			t.Fatalf("%s does not contain %s", good, old)
		}
		return []byte(strings.Replace(string(good), old, new, 1))
	}
	withConflicts := validChange()
	withConflicts.Conflicts = []Conflict{{ID: testID, Policy: PolicyManual, Status: ConflictOpen, Sides: []Side{{}, {Deleted: true}}}}
	conflicts, _ := EncodeChange(&withConflicts)
	withSettled := validChange()
	withSettled.Settled = &Conflict{ID: testID, Policy: PolicyLWW, Status: ConflictOverwritten, Sides: []Side{{HLC: HLC{Wall: 1}}}, Lost: []string{"*"}}
	settled, _ := EncodeChange(&withSettled)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"conflicts", conflicts},
		{"settled", settled},
		{"null settled", replace(`"seq":7`, `"seq":7,"settled":null`)},
		{"null conflicts", replace(`"seq":7`, `"seq":7,"conflicts":null`)},
		{"key in another case", replace(`"version":`, `"Version":`)},
		{"key folding to schema", replace(`"schema":`, `"ſchema":`)},
		{"escaped key", replace(`"seq":`, `"s\u0065q":`)},
		{"duplicate key", replace(`"seq":7`, `"seq":7,"seq":8`)},
		{"duplicate bool", replace(`"as_written":true`, `"as_written":true,"as_written":false`)},
		{"duplicate hlc key", replace(`"logical":1`, `"logical":1,"wall":3`)},
		{"duplicate field name", replace(`"done":false`, `"done":false,"done":true`)},
		{"duplicate clock name", replace(`"clocks":{"done":`, `"clocks":{"done":{"version":1,"hlc":{}},"done":`)},
		{"duplicate clock key", replace(`"version":2`, `"version":2,"version":3`)},
		{"unknown clock key", replace(`"version":2`, `"version":2,"x":3`)},
		{"clock key in another case", replace(`"version":2`, `"VERSION":2`)},
		{"null clock", replace(`"clocks":{"done":{"version":2,"hlc":{"wall":4,"logical":0},"client":"c1"}}`, `"clocks":{"done":null}`)},
		{"null clocks", replace(`"clocks":{"done":{"version":2,"hlc":{"wall":4,"logical":0},"client":"c1"}}`, `"clocks":null`)},
		{"null clock client", replace(`"client":"c1"}}`, `"client":null}}`)},
		{"null string", replace(`"tenant":"acme"`, `"tenant":null`)},
		{"null number", replace(`"seq":7`, `"seq":null`)},
		{"null bool", replace(`"as_written":true`, `"as_written":null`)},
		{"number for bool", replace(`"as_written":true`, `"as_written":1`)},
		{"string for bool", replace(`"as_written":true`, `"as_written":"true"`)},
		{"bad literal", replace(`"as_written":true`, `"as_written":tru`)},
		{"null fields", replace(`"fields":{"done":false,"title":"milk"}`, `"fields":null`)},
		{"null hlc", replace(`"hlc":{"wall":1732550000000,"logical":1}`, `"hlc":null`)},
		{"unknown key", replace(`"schema":1`, `"schema":1,"colour":"red"`)},
		{"leading space", append([]byte(" "), good...)},
		{"trailing space", append(bytes.Clone(good), ' ')},
		{"trailing data", append(bytes.Clone(good), []byte(`{}`)...)},
		{"space after colon", replace(`"seq":7`, `"seq": 7`)},
		{"fraction", replace(`"version":3`, `"version":3.0`)},
		{"exponent", replace(`"version":3`, `"version":3e0`)},
		{"negative", replace(`"version":3`, `"version":-3`)},
		{"leading zero", replace(`"version":3`, `"version":03`)},
		{"uint64 overflow", replace(`"version":3`, `"version":18446744073709551616`)},
		{"negative wall", replace(`"wall":1732550000000`, `"wall":-1`)},
		{"string for number", replace(`"seq":7`, `"seq":"7"`)},
		{"number for string", replace(`"tenant":"acme"`, `"tenant":1`)},
		{"array for fields", replace(`"fields":{"done":false,"title":"milk"}`, `"fields":[]`)},
		{"lone surrogate in name", replace(`"tenant":"acme"`, `"tenant":"a\ud800"`)},
		{"lone surrogate in clock client", replace(`"client":"c1"}}`, `"client":"\udc00"}}`)},
		{"control character in string", replace(`"tenant":"acme"`, "\"tenant\":\"a\x01\"")},
		{"invalid utf8", replace(`"milk"`, "\"mi\xffk\"")},
		{"truncated", good[:len(good)-1]},
		{"not an object", []byte(`[1]`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c, ok := decodeChangeFast(tc.data); ok {
				t.Fatalf("fast path accepted %s as %#v", tc.data, c)
			}
		})
	}
}

// TestDecodeChange_ChecksFastPathResults: what the fast path parses gets
// the same checks as what the strict decoder parses.
func TestDecodeChange_ChecksFastPathResults(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mutate    func(c *Change)
		wantErr   error
		wantField string
	}{
		{"version 0", func(c *Change) { c.Version = 0 }, ErrInvalid, "version"},
		{"future schema", func(c *Change) { c.Schema = 2 }, ErrUnknownSchema, "schema"},
		{"no tenant", func(c *Change) { c.Tenant = "" }, ErrInvalid, "tenant"},
		{"no collection", func(c *Change) { c.Collection = "" }, ErrInvalid, "collection"},
		{"no doc", func(c *Change) { c.Doc = "" }, ErrInvalid, "doc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validChange()
			tc.mutate(&c)
			b, _ := EncodeChange(&c)
			if _, ok := decodeChangeFast(b); !ok {
				t.Fatalf("fast path declined %s", b)
			}
			_, err := DecodeChange(b)
			var fe *FieldError
			if !errors.Is(err, tc.wantErr) || !errors.As(err, &fe) || fe.Field != tc.wantField {
				t.Fatalf("DecodeChange(%s): %v, want %v naming %q", b, err, tc.wantErr, tc.wantField)
			}
		})
	}
}

func changeFastPathSeeds(f *testing.F) {
	seedPayloads(f)
	for _, b := range canonicalChangeBytes(f) {
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(bytes.Replace(b, []byte(`":`), []byte(`": `), 2))
		f.Add(bytes.ToUpper(b))
	}
	c := validChange()
	c.Clocks = map[string]FieldClock{"done": {Version: 2, HLC: HLC{Wall: 4}, Client: "c1"}}
	good, _ := EncodeChange(&c)
	for _, r := range [][2]string{
		{`"seq":7`, `"seq":7,"seq":8`},
		{`"seq":7`, `"Seq":7`},
		{`"seq":7`, `"seq":-0`},
		{`"seq":7`, `"seq":1e3`},
		{`"seq":7`, `"seq":18446744073709551615`},
		{`"seq":7`, `"seq":18446744073709551616`},
		{`"seq":7`, `"seq":7,"settled":null`},
		{`"seq":7`, `"seq":7,"conflicts":[]`},
		{`"version":3`, `"version":0`},
		{`"version":3`, `"version":2,"version":3`},
		{`"version":2`, `"version":2,"version":9`},
		{`"version":2`, `"Version":2`},
		{`"logical":1`, `"logical":4294967295`},
		{`"logical":1`, `"logical":4294967296`},
		{`"wall":1732550000000`, `"wall":-1`},
		{`"wall":1732550000000`, `"wall":9223372036854775807`},
		{`"wall":1732550000000`, `"wall":9223372036854775808`},
		{`"schema":1`, `"schema":2`},
		{`"schema":1`, `"schema":1,"x":1`},
		{`"tenant":"acme"`, `"tenant":null`},
		{`"tenant":"acme"`, `"tenant":""`},
		{`"tenant":"acme"`, `"tenant":"\u0061\ud83d\ude00\ud800x\n"`},
		{`"tenant":"acme"`, `"t\u0065nant":"acme"`},
		{`"as_written":true`, `"as_written":null`},
		{`"as_written":true`, `"as_written":false,"deleted":true,"left":true`},
		{`"as_written":true`, `"As_Written":true`},
		{`"fields":{"done":false,"title":"milk"}`, `"fields":{}`},
		{`"fields":{"done":false,"title":"milk"}`, `"fields":null`},
		{`"fields":{"done":false,"title":"milk"}`, `"fields":{"a":1,"a":2}`},
		{`"fields":{"done":false,"title":"milk"}`, `"fields":{"\u0061":1,"b\"":[ 1 , {"c" : null} ]}`},
		{`"hlc":{"wall":1732550000000,"logical":1}`, `"hlc":{}`},
		{`"hlc":{"wall":1732550000000,"logical":1}`, `"hlc":{"wall":1,"wall":2}`},
		{`"clocks":{"done":`, `"clocks":{"done":{},"done":`},
		{`"clocks":{"done":`, `"clocks":{"d\u006fne":`},
		{`"client":"c1"}}`, `"client":null}}`},
		{`"client":"c1"}}`, `"client":"\ud83d\ude00"}}`},
	} {
		f.Add(bytes.Replace(good, []byte(r[0]), []byte(r[1]), 1))
	}
	f.Add(append(bytes.Clone(good), []byte(" \n")...))
	f.Add(append(bytes.Clone(good), []byte(`x`)...))
	f.Add(append([]byte("\t"), good...))
}

// FuzzDecodeChangeFastPath is the differential test of the fast path
// against the strict decoder: whatever the fast path accepts, the strict
// decoder accepts as a deep-equal change, and DecodeChange's answer (change
// or error) is the strict decoder's followed by its checks, on every input.
func FuzzDecodeChangeFastPath(f *testing.F) {
	changeFastPathSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		slow, slowErr := decodeChangeStrict(data)
		in := bytes.Clone(data)
		if fast, ok := decodeChangeFast(in); ok {
			for i := range in {
				in[i] = 0
			}
			if slowErr != nil {
				t.Fatalf("fast path accepted %q, the strict decoder refused it: %v", data, slowErr)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("fast path decoded %q\nas   %#v\nwant %#v", data, fast, slow)
			}
		}
		want := slowErr
		if slowErr == nil {
			want = slow.check()
		}
		got, gotErr := DecodeChange(data)
		switch {
		case want == nil && gotErr == nil:
			if !reflect.DeepEqual(got, slow) {
				t.Fatalf("DecodeChange(%q) = %#v, the strict decoder %#v", data, got, slow)
			}
		case want == nil || gotErr == nil || want.Error() != gotErr.Error():
			t.Fatalf("DecodeChange(%q) error %v, the strict decoder %v", data, gotErr, want)
		case got != nil:
			t.Fatalf("DecodeChange(%q) returned a change with error %v", data, gotErr)
		}
	})
}

// FuzzDecodeChangeFastPathCanonical builds changes from the fuzzer's values
// and checks that the fast path takes whatever EncodeChange writes for a
// change without conflicts or a settled record (with a non-negative clock:
// the fast path leaves a minus sign to the strict decoder) and decodes it as
// the strict decoder does.
func FuzzDecodeChangeFastPathCanonical(f *testing.F) {
	f.Add("acme", "t.1", "title", []byte(`"milk"`), uint64(1), uint64(1), int64(1_732_550_000_000), uint32(1), uint8(0))
	f.Add("Zürich", "a\"b\\<>&\u2028\x01\xff", "k\"\u2029", []byte(`{"a" : [1, 2, {"b": null}]}`),
		uint64(math.MaxUint64), uint64(MaxSafeInteger), int64(math.MaxInt64), uint32(math.MaxUint32), uint8(0xff))
	f.Add("", "", "", []byte(`null`), uint64(0), uint64(0), int64(0), uint32(0), uint8(0))
	f.Add("t", "d", "", []byte(nil), uint64(2), uint64(3), int64(4), uint32(5), uint8(0b1010))
	f.Fuzz(func(t *testing.T, tenant, doc, name string, raw []byte, version, seq uint64, wall int64, logical uint32, flags uint8) {
		if wall < 0 {
			wall = -wall
			if wall < 0 {
				wall = 0
			}
		}
		h := HLC{Wall: wall, Logical: logical}
		c := &Change{Schema: SchemaVersion, Tenant: tenant, Collection: name, Doc: doc, Version: version,
			Deleted: flags&1 != 0, HLC: h, Event: testID, Client: tenant + doc, Device: name, Seq: seq,
			AsWritten: flags&2 != 0, Left: flags&4 != 0}
		if len(raw) > 0 {
			c.Fields = Fields{name: raw, doc: json.RawMessage(`1`)}
		}
		if flags&8 != 0 {
			c.Clocks = map[string]FieldClock{name: {Version: seq, HLC: h, Client: doc}, tenant: {Version: version}}
		}
		b, err := EncodeChange(c)
		if err != nil {
			return // raw is not JSON
		}
		if jsonDepth(b) > maxFastDepth || !utf8.Valid(b) {
			return // too deep for the fast path; or raw held invalid UTF-8, which EncodeChange keeps and both decoders refuse
		}
		want, err := decodeChangeStrict(b)
		if err != nil {
			t.Fatalf("strict decoder refused EncodeChange output %q: %v", b, err)
		}
		if len(want.Fields) != len(c.Fields) || len(want.Clocks) != len(c.Clocks) {
			return // two names became one (invalid UTF-8 is written as U+FFFD): a duplicate key, which the fast path leaves alone
		}
		got, ok := decodeChangeFast(b)
		if !ok {
			t.Fatalf("fast path declined EncodeChange output %q", b)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("fast path decoded %q\nas   %#v\nwant %#v", b, got, want)
		}
	})
}

// benchChanges are typical changes of about 300 bytes as a catch-up page
// carries them: under lww (no clocks) and under merge (a clock per field).
func benchChanges(tb testing.TB) map[string][]byte {
	tb.Helper()
	c := &Change{
		Schema: SchemaVersion, Tenant: "acme", Collection: "todos", Doc: "t-1042", Version: 13,
		Fields: Fields{
			"title": json.RawMessage(`"Buy milk"`),
			"done":  json.RawMessage(`false`),
			"tags":  json.RawMessage(`["home"]`),
		},
		HLC: HLC{Wall: 1_732_550_000_000, Logical: 3}, Event: testID, Client: "user-42",
		Device: "01JDQ8V7N5Y8Z6X4W3V2T1S0RN", Seq: 1042, AsWritten: true,
	}
	lww, err := EncodeChange(c)
	if err != nil {
		tb.Fatal(err)
	}
	c.Clocks = map[string]FieldClock{}
	for name := range c.Fields {
		c.Clocks[name] = FieldClock{Version: 12, HLC: HLC{Wall: 1_732_549_999_000, Logical: 1}, Client: "user-7"}
	}
	merge, err := EncodeChange(c)
	if err != nil {
		tb.Fatal(err)
	}
	return map[string][]byte{"lww": lww, "merge": merge}
}

func BenchmarkDecodeChange(b *testing.B) {
	for _, name := range []string{"lww", "merge"} {
		data := benchChanges(b)[name]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeChange(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeChangeStrict is what DecodeChange cost before the fast
// path: the strict decoder, then the checks.
func BenchmarkDecodeChangeStrict(b *testing.B) {
	for _, name := range []string{"lww", "merge"} {
		data := benchChanges(b)[name]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				c, err := decodeChangeStrict(data)
				if err != nil {
					b.Fatal(err)
				}
				if err := c.check(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
