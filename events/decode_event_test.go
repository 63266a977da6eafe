package events

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// canonicalEvents are events as producers write them, one per op and the
// shapes the fast path must take: unicode, escapes in names and values,
// nested fields, the extremes of every integer.
func canonicalEvents() map[string]*Event {
	const other = "01JDQ8V7N5Y8Z6X4W3V2T1S0RP"
	put := validEvent()
	patch := validEvent()
	patch.Op, patch.Fields = OpPatch, Fields{"a": json.RawMessage(`null`), "b.c": json.RawMessage(`[{"x":1}]`)}
	del := validEvent()
	del.Op, del.Fields, del.BaseVersion = OpDelete, nil, 3
	resolve := validEvent()
	resolve.Op, resolve.Resolves, resolve.After = OpResolve, other, other
	unicode := validEvent()
	unicode.Tenant, unicode.Collection, unicode.Doc, unicode.Client = "Zürich", "заметки", "日本語 doc 🎉", "clïent"
	unicode.Fields = Fields{"tïtle": json.RawMessage(`"crème brûlée 🍮"`), "ключ": json.RawMessage(`"значение"`)}
	escapes := validEvent()
	escapes.Doc = "a\"b\\c/d<e>f&g\u2028h\u2029i\u007f"
	escapes.Device = "dev <1> & \"2\""
	escapes.Fields = Fields{
		"quote\"key": json.RawMessage(`"va\"lue\\ \u0000 \ud83d\ude00 \n\t"`),
		"<html>":     json.RawMessage(`"<b>&amp;</b>"`),
		"line\u2028": json.RawMessage(`"\u2028\u2029"`),
	}
	nested := validEvent()
	nested.Fields = Fields{
		"obj":   json.RawMessage(`{"a":[1,2,{"b":null,"c":[true,false]}],"d":{"e":{"f":"g"}}}`),
		"nums":  json.RawMessage(`[0,-0,1.5,-2.25e10,1E+2,3e-7,123456789012345678901234567890]`),
		"empty": json.RawMessage(`[]`),
		"eobj":  json.RawMessage(`{}`),
		"str":   json.RawMessage(`""`),
	}
	big := validEvent()
	big.Seq, big.BaseVersion = math.MaxUint64, math.MaxUint64
	big.HLC = HLC{Wall: math.MaxInt64, Logical: math.MaxUint32}
	safe := validEvent()
	safe.Seq, safe.BaseVersion = MaxSafeInteger, MaxSafeInteger
	safe.HLC = HLC{Wall: MaxSafeInteger, Logical: 0}
	safe.Device = "01JDQ8V7N5Y8Z6X4W3V2T1S0RN"
	zero := &Event{} // every value at its zero: only schema, ids and numbers travel
	many := validEvent()
	for i := range 40 {
		many.Fields[strings.Repeat("f", i+1)] = json.RawMessage(`{"n":` + strings.Repeat("9", i+1) + `}`)
	}
	return map[string]*Event{
		"put": &put, "patch": &patch, "delete": &del, "resolve": &resolve, "unicode": &unicode,
		"escapes": &escapes, "nested": &nested, "big numbers": &big, "max safe": &safe, "zero": zero,
		"many fields": &many,
	}
}

// TestDecodeEventFast_TakesCanonicalEvents checks that the fast path, not
// the strict decoder, decides what producers write, so the speed-up cannot
// silently vanish, and that what it returns equals the strict decoder's and
// owns its memory.
func TestDecodeEventFast_TakesCanonicalEvents(t *testing.T) {
	for name, ev := range canonicalEvents() {
		t.Run(name, func(t *testing.T) {
			b, err := EncodeEvent(ev)
			if err != nil {
				t.Fatal(err)
			}
			in := bytes.Clone(b)
			got, ok := decodeEventFast(in)
			if !ok {
				t.Fatalf("fast path declined EncodeEvent output %s", b)
			}
			want, err := decodeEventStrict(b)
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

// TestDecodeEventFast_Declines lists inputs the fast path must leave to the
// strict decoder, because encoding/json gives them a meaning of its own
// (case-insensitive keys, last duplicate wins, null leaves the zero value)
// or refuses them with its own error.
func TestDecodeEventFast_Declines(t *testing.T) {
	good, _ := EncodeEvent(ptr(validEvent()))
	replace := func(old, new string) []byte {
		t.Helper()
		if !strings.Contains(string(good), old) {
			t.Fatalf("%s does not contain %s", good, old)
		}
		return []byte(strings.Replace(string(good), old, new, 1))
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"key in another case", replace(`"seq":`, `"SEQ":`)},
		{"key folding to schema", replace(`"schema":`, `"ſchema":`)},
		{"escaped key", replace(`"seq":`, `"s\u0065q":`)},
		{"duplicate key", replace(`"seq":1`, `"seq":1,"seq":2`)},
		{"duplicate hlc key", replace(`"logical":1`, `"logical":1,"wall":3`)},
		{"duplicate field name", replace(`"done":false`, `"done":false,"done":true`)},
		{"null string", replace(`"tenant":"acme"`, `"tenant":null`)},
		{"null number", replace(`"seq":1`, `"seq":null`)},
		{"null fields", replace(`"fields":{"done":false,"title":"milk"}`, `"fields":null`)},
		{"null hlc", replace(`"hlc":{"wall":1732550000000,"logical":1}`, `"hlc":null`)},
		{"unknown key", replace(`"schema":1`, `"schema":1,"colour":"red"`)},
		{"leading space", append([]byte(" "), good...)},
		{"trailing space", append(bytes.Clone(good), ' ')},
		{"trailing data", append(bytes.Clone(good), []byte(`{}`)...)},
		{"space after colon", replace(`"seq":1`, `"seq": 1`)},
		{"fraction", replace(`"seq":1`, `"seq":1.0`)},
		{"exponent", replace(`"seq":1`, `"seq":1e0`)},
		{"negative zero", replace(`"seq":1`, `"seq":-0`)},
		{"leading zero", replace(`"seq":1`, `"seq":01`)},
		{"uint64 overflow", replace(`"seq":1`, `"seq":18446744073709551616`)},
		{"uint32 overflow", replace(`"logical":1`, `"logical":4294967296`)},
		{"int64 overflow", replace(`"wall":1732550000000`, `"wall":9223372036854775808`)},
		{"string for number", replace(`"seq":1`, `"seq":"1"`)},
		{"number for string", replace(`"tenant":"acme"`, `"tenant":1`)},
		{"array for fields", replace(`"fields":{"done":false,"title":"milk"}`, `"fields":[]`)},
		{"lone surrogate in name", replace(`"tenant":"acme"`, `"tenant":"a\ud800"`)},
		{"control character in string", replace(`"tenant":"acme"`, "\"tenant\":\"a\x01\"")},
		{"invalid utf8", replace(`"milk"`, "\"mi\xffk\"")},
		{"bad escape", replace(`"milk"`, `"mi\x"`)},
		{"truncated", good[:len(good)-1]},
		{"bad literal", replace(`false`, `fals`)},
		{"bad nested number", replace(`false`, `[01]`)},
		{"unclosed nested", replace(`false`, `[1,{"a":2}`)},
		{"trailing comma", replace(`false`, `[1,]`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if e, ok := decodeEventFast(tc.data); ok {
				t.Fatalf("fast path accepted %s as %#v", tc.data, e)
			}
		})
	}
}

// TestDecodeEventFast_InnerWhitespace: encoding/json keeps a field's raw
// bytes as written, inner whitespace included, and so does the fast path.
func TestDecodeEventFast_InnerWhitespace(t *testing.T) {
	good, _ := EncodeEvent(ptr(validEvent()))
	data := []byte(strings.Replace(string(good), `false`, "[1, 2 ,\t{\"a\" :\n\"b c\" }\r]", 1))
	got, ok := decodeEventFast(data)
	if !ok {
		t.Fatalf("fast path declined %s", data)
	}
	want, err := decodeEventStrict(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got.Fields["done"], want.Fields["done"])
	}
}

func fastPathSeeds(f *testing.F) {
	seedPayloads(f)
	for _, ev := range canonicalEvents() {
		b, err := EncodeEvent(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(bytes.Replace(b, []byte(`":`), []byte(`": `), 2))
		f.Add(bytes.ToUpper(b))
	}
	good, _ := EncodeEvent(ptr(validEvent()))
	for _, r := range [][2]string{
		{`"seq":1`, `"seq":1,"seq":2`},
		{`"seq":1`, `"Seq":1`},
		{`"seq":1`, `"seq":-0`},
		{`"seq":1`, `"seq":1e3`},
		{`"seq":1`, `"seq":18446744073709551615`},
		{`"seq":1`, `"seq":18446744073709551616`},
		{`"logical":1`, `"logical":4294967295`},
		{`"logical":1`, `"logical":4294967296`},
		{`"wall":1732550000000`, `"wall":-1`},
		{`"wall":1732550000000`, `"wall":9223372036854775807`},
		{`"wall":1732550000000`, `"wall":9223372036854775808`},
		{`"schema":1`, `"schema":2`},
		{`"schema":1`, `"schema":1,"x":1`},
		{`"tenant":"acme"`, `"tenant":null`},
		{`"tenant":"acme"`, `"tenant":"\u0061\ud83d\ude00\ud800x\n"`},
		{`"tenant":"acme"`, `"t\u0065nant":"acme"`},
		{`"fields":{"done":false,"title":"milk"}`, `"fields":{}`},
		{`"fields":{"done":false,"title":"milk"}`, `"fields":null`},
		{`"fields":{"done":false,"title":"milk"}`, `"fields":{"a":1,"a":2}`},
		{`"fields":{"done":false,"title":"milk"}`, `"fields":{"\u0061":1,"b\"":[ 1 , {"c" : null} ]}`},
		{`"hlc":{"wall":1732550000000,"logical":1}`, `"hlc":{}`},
		{`"hlc":{"wall":1732550000000,"logical":1}`, `"hlc":{"wall":1,"wall":2}`},
	} {
		f.Add(bytes.Replace(good, []byte(r[0]), []byte(r[1]), 1))
	}
	f.Add(append(bytes.Clone(good), []byte(" \n")...))
	f.Add(append(bytes.Clone(good), []byte(`x`)...))
	f.Add(append([]byte("\t"), good...))
}

// FuzzDecodeEventFastPath is the differential test of the fast path against
// the strict decoder: whatever the fast path accepts, the strict decoder
// accepts as a deep-equal event, and DecodeEvent's answer (event or error)
// is the strict decoder's on every input.
func FuzzDecodeEventFastPath(f *testing.F) {
	fastPathSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		slow, slowErr := decodeEventStrict(data)
		in := bytes.Clone(data)
		if fast, ok := decodeEventFast(in); ok {
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
		var want error
		if slowErr == nil {
			want = slow.Validate(Limits{})
		} else {
			want = slowErr
		}
		got, gotErr := DecodeEvent(data, Limits{})
		switch {
		case want == nil && gotErr == nil:
			if !reflect.DeepEqual(got, slow) {
				t.Fatalf("DecodeEvent(%q) = %#v, the strict decoder %#v", data, got, slow)
			}
		case want == nil || gotErr == nil || want.Error() != gotErr.Error():
			t.Fatalf("DecodeEvent(%q) error %v, the strict decoder %v", data, gotErr, want)
		case got != nil:
			t.Fatalf("DecodeEvent(%q) returned an event with error %v", data, gotErr)
		}
	})
}

// benchEvent is a typical event of about 256 bytes.
func benchEvent(tb testing.TB) []byte {
	tb.Helper()
	e := &Event{
		Schema: SchemaVersion, ID: "01JDQ8V7N5Y8Z6X4W3V2T1S0RQ", Tenant: "acme", Collection: "todos",
		Doc: "t-1042", Op: OpPatch, BaseVersion: 12,
		Fields: Fields{
			"title": json.RawMessage(`"Buy milk"`),
			"done":  json.RawMessage(`false`),
			"tags":  json.RawMessage(`["home"]`),
		},
		HLC: HLC{Wall: 1_732_550_000_000, Logical: 3}, Client: "user-42", Seq: 1042,
	}
	b, err := EncodeEvent(e)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func BenchmarkDecodeEvent(b *testing.B) {
	data := benchEvent(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeEvent(data, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEventStrict is what DecodeEvent cost before the fast path:
// the strict decoder, then Validate.
func BenchmarkDecodeEventStrict(b *testing.B) {
	data := benchEvent(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		e, err := decodeEventStrict(data)
		if err != nil {
			b.Fatal(err)
		}
		if err := e.Validate(Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecodeEventFastPathCanonical builds events from the fuzzer's values
// and checks that the fast path takes whatever EncodeEvent writes (a
// non-negative clock: the fast path leaves a minus sign to the strict
// decoder) and decodes it as the strict decoder does.
func FuzzDecodeEventFastPathCanonical(f *testing.F) {
	f.Add("acme", "t.1", "title", []byte(`"milk"`), "put", uint64(1), uint64(0), int64(1_732_550_000_000), uint32(1))
	f.Add("Zürich", "a\"b\\<>&\u2028\x01\xff", "k\"\u2029", []byte(`{"a" : [1, 2, {"b": null}]}`), "patch",
		uint64(math.MaxUint64), uint64(MaxSafeInteger), int64(math.MaxInt64), uint32(math.MaxUint32))
	f.Add("", "", "", []byte(`null`), "", uint64(0), uint64(0), int64(0), uint32(0))
	f.Fuzz(func(t *testing.T, tenant, doc, name string, raw []byte, op string, seq, base uint64, wall int64, logical uint32) {
		if wall < 0 {
			wall = -wall
			if wall < 0 {
				wall = 0
			}
		}
		e := &Event{Schema: SchemaVersion, ID: testID, Tenant: tenant, Collection: name, Doc: doc, Op: Op(op),
			BaseVersion: base, HLC: HLC{Wall: wall, Logical: logical}, Client: tenant + doc, Device: name,
			Seq: seq, Resolves: doc, After: op}
		if len(raw) > 0 {
			e.Fields = Fields{name: raw, doc: json.RawMessage(`1`)}
		}
		b, err := EncodeEvent(e)
		if err != nil {
			return // raw is not JSON
		}
		if jsonDepth(b) > maxFastDepth || !utf8.Valid(b) {
			return // too deep for the fast path; or raw held invalid UTF-8, which EncodeEvent keeps and both decoders refuse
		}
		want, err := decodeEventStrict(b)
		if err != nil {
			t.Fatalf("strict decoder refused EncodeEvent output %q: %v", b, err)
		}
		if len(want.Fields) != len(e.Fields) {
			return // two names became one (invalid UTF-8 is written as U+FFFD): a duplicate key, which the fast path leaves alone
		}
		got, ok := decodeEventFast(b)
		if !ok {
			t.Fatalf("fast path declined EncodeEvent output %q", b)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("fast path decoded %q\nas   %#v\nwant %#v", b, got, want)
		}
	})
}
