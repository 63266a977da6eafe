package events

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const testID = "01JDQ8V7N5Y8Z6X4W3V2T1S0RQ"

func validEvent() Event {
	return Event{
		Schema: SchemaVersion, ID: testID, Tenant: "acme", Collection: "todos", Doc: "t.1",
		Op: OpPut, Fields: Fields{"title": json.RawMessage(`"milk"`), "done": json.RawMessage(`false`)},
		BaseVersion: 0, HLC: HLC{Wall: 1_732_550_000_000, Logical: 1}, Client: "c1", Seq: 1,
	}
}

func TestEventValidate(t *testing.T) {
	tests := []struct {
		name      string
		mutate    func(e *Event)
		wantErr   error
		wantField string
	}{
		{"valid put", func(e *Event) {}, nil, ""},
		{"valid put no fields", func(e *Event) { e.Fields = nil }, nil, ""},
		{"valid patch with null", func(e *Event) { e.Op = OpPatch; e.Fields = Fields{"x": json.RawMessage(`null`)} }, nil, ""},
		{"valid delete", func(e *Event) { e.Op = OpDelete; e.Fields = nil }, nil, ""},
		{"valid resolve", func(e *Event) { e.Op = OpResolve; e.Resolves = testID }, nil, ""},
		{"schema", func(e *Event) { e.Schema = 2 }, ErrUnknownSchema, "schema"},
		{"id empty", func(e *Event) { e.ID = "" }, ErrInvalid, "id"},
		{"id lower case", func(e *Event) { e.ID = strings.ToLower(testID) }, ErrInvalid, "id"},
		{"id garbage", func(e *Event) { e.ID = "not-a-ulid" }, ErrInvalid, "id"},
		{"tenant empty", func(e *Event) { e.Tenant = "" }, ErrInvalid, "tenant"},
		{"tenant too long", func(e *Event) { e.Tenant = strings.Repeat("t", 129) }, ErrInvalid, "tenant"},
		{"tenant control char", func(e *Event) { e.Tenant = "a\x01" }, ErrInvalid, "tenant"},
		{"tenant invalid utf8", func(e *Event) { e.Tenant = "a\xff" }, ErrInvalid, "tenant"},
		{"collection empty", func(e *Event) { e.Collection = "" }, ErrInvalid, "collection"},
		{"doc empty", func(e *Event) { e.Doc = "" }, ErrInvalid, "doc"},
		{"doc too long", func(e *Event) { e.Doc = strings.Repeat("d", 513) }, ErrInvalid, "doc"},
		{"client empty", func(e *Event) { e.Client = "" }, ErrInvalid, "client"},
		{"seq zero", func(e *Event) { e.Seq = 0 }, ErrInvalid, "seq"},
		{"hlc zero", func(e *Event) { e.HLC = HLC{} }, ErrInvalid, "hlc"},
		{"hlc negative", func(e *Event) { e.HLC = HLC{Wall: -5} }, ErrInvalid, "hlc"},
		{"op unknown", func(e *Event) { e.Op = "upsert" }, ErrInvalid, "op"},
		{"patch without fields", func(e *Event) { e.Op = OpPatch; e.Fields = nil }, ErrInvalid, "fields"},
		{"delete with fields", func(e *Event) { e.Op = OpDelete }, ErrInvalid, "fields"},
		{"resolve without conflict", func(e *Event) { e.Op = OpResolve }, ErrInvalid, "resolves"},
		{"resolves on a put", func(e *Event) { e.Resolves = testID }, ErrInvalid, "resolves"},
		{"valid after", func(e *Event) { e.After = "01JDQ8V7N5Y8Z6X4W3V2T1S0RP" }, nil, ""},
		{"after not a ULID", func(e *Event) { e.After = "previous" }, ErrInvalid, "after"},
		{"after itself", func(e *Event) { e.After = e.ID }, ErrInvalid, "after"},
		{"null in a put", func(e *Event) { e.Fields["x"] = json.RawMessage(`null`) }, ErrInvalid, "fields.x"},
		{"bad json value", func(e *Event) { e.Fields["x"] = json.RawMessage(`{`) }, ErrInvalid, "fields.x"},
		{"empty field name", func(e *Event) { e.Fields[""] = json.RawMessage(`1`) }, ErrInvalid, "fields"},
		{"too many fields", func(e *Event) {
			for i := range 1001 {
				e.Fields[strings.Repeat("f", i%200+1)+string(rune('a'+i%26))+strings.Repeat("g", i/200)] = json.RawMessage(`1`)
			}
		}, ErrInvalid, "fields"},
		{"fields too large", func(e *Event) { e.Fields["big"] = json.RawMessage(`"` + strings.Repeat("x", 300<<10) + `"`) }, ErrInvalid, "fields"},
		{"too deep", func(e *Event) {
			e.Fields["deep"] = json.RawMessage(strings.Repeat("[", 33) + strings.Repeat("]", 33))
		}, ErrInvalid, "fields.deep"},
		{"brackets in strings do not count", func(e *Event) {
			e.Fields["s"] = json.RawMessage(`"` + strings.Repeat("[", 100) + `\"["`)
		}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := validEvent()
			tt.mutate(&e)
			err := e.Validate(Limits{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil {
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err %v is not a *FieldError", err)
			}
			if fe.Field != tt.wantField {
				t.Fatalf("field = %q, want %q (%v)", fe.Field, tt.wantField, err)
			}
		})
	}
}

func TestLimits_Configurable(t *testing.T) {
	e := validEvent()
	if err := e.Validate(Limits{MaxFields: 1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("two fields with MaxFields 1: %v", err)
	}
	if err := e.Validate(Limits{MaxDocIDBytes: 2}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("doc of 3 bytes with MaxDocIDBytes 2: %v", err)
	}
}

func TestDecodeEvent_RoundTrip(t *testing.T) {
	e := validEvent()
	e.Fields["nested"] = json.RawMessage(`{ "a" : [1, 2, {"b": null}] }`)
	b, err := EncodeEvent(&e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEvent(b, Limits{})
	if err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	b2, _ := EncodeEvent(got)
	if string(b) != string(b2) {
		t.Fatalf("re-encoding differs:\n%s\n%s", b, b2)
	}
	if string(got.Fields["nested"]) != `{"a":[1,2,{"b":null}]}` {
		t.Fatalf("raw values must be compacted, got %s", got.Fields["nested"])
	}
}

func TestDecodeEvent_Errors(t *testing.T) {
	good, _ := EncodeEvent(ptr(validEvent()))
	replace := func(old, new string) []byte { return []byte(strings.Replace(string(good), old, new, 1)) }
	tests := []struct {
		name      string
		data      []byte
		wantErr   error
		wantField string
	}{
		{"empty", nil, ErrInvalid, "payload"},
		{"not json", []byte("hello"), ErrInvalid, "payload"},
		{"array", []byte("[1,2]"), ErrInvalid, "payload"},
		{"truncated", good[:len(good)-3], ErrInvalid, "payload"},
		{"trailing data", append(append([]byte{}, good...), []byte(` {}`)...), ErrInvalid, "payload"},
		{"invalid utf8", replace(`"milk"`, "\"mi\xffk\""), ErrInvalid, "payload"},
		{"unknown field", replace(`"schema":1`, `"schema":1,"colour":"red"`), ErrInvalid, "colour"},
		{"future schema with new field", replace(`"schema":1`, `"schema":2,"colour":"red"`), ErrUnknownSchema, "schema"},
		{"future schema", replace(`"schema":1`, `"schema":7`), ErrUnknownSchema, "schema"},
		{"wrong type seq", replace(`"seq":1`, `"seq":"one"`), ErrInvalid, "seq"},
		{"negative seq", replace(`"seq":1`, `"seq":-1`), ErrInvalid, "seq"},
		{"wrong type hlc", replace(`"hlc":{`, `"hlc":5,"x":{`), ErrInvalid, "x"},
		{"wrong type fields", replace(`"fields":{`, `"fields":[],"y":{`), ErrInvalid, "y"},
		{"missing doc", replace(`"doc":"t.1",`, ``), ErrInvalid, "doc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeEvent(tt.data, Limits{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.wantField {
				t.Fatalf("err %v: want field %q", err, tt.wantField)
			}
		})
	}
}

func TestDecodeChangeReceiptDead(t *testing.T) {
	c := &Change{Schema: 1, Tenant: "a", Collection: "c", Doc: "d", Version: 3, Fields: Fields{"x": json.RawMessage(`1`)},
		Clocks: map[string]FieldClock{"x": {Version: 2, HLC: HLC{Wall: 9}}}, Event: testID, Client: "c1", Seq: 4,
		Settled: &Conflict{ID: testID, Policy: PolicyLWW, Status: ConflictOverwritten, Sides: []Side{{HLC: HLC{Wall: 1}}}, Lost: []string{"*"}}}
	b, _ := EncodeChange(c)
	got, err := DecodeChange(b)
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := EncodeChange(got); string(b2) != string(b) {
		t.Fatalf("change round trip:\n%s\n%s", b, b2)
	}
	if _, err := DecodeChange([]byte(strings.Replace(string(b), `"version":3`, `"version":0`, 1))); !errors.Is(err, ErrInvalid) {
		t.Fatalf("version 0: %v", err)
	}

	r := &Receipt{Schema: 1, Event: testID, Tenant: "a", Client: "c1", Seq: 4, Outcome: OutcomeRejected, Reason: "stale", Stream: 9}
	b, _ = EncodeReceipt(r)
	if got, err := DecodeReceipt(b); err != nil || *got != *r {
		t.Fatalf("receipt round trip: %+v, %v", got, err)
	}
	if _, err := DecodeReceipt([]byte(strings.Replace(string(b), `"rejected"`, `"lost"`, 1))); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown outcome: %v", err)
	}

	d := &DeadLetter{Schema: 1, Reason: "malformed", Subject: "ebb.evt.a.b.c", Stream: 5, Data: []byte{0, 1, 0xff}}
	b, _ = EncodeDeadLetter(d)
	gotD, err := DecodeDeadLetter(b)
	if err != nil || string(gotD.Data) != string(d.Data) || gotD.Reason != d.Reason {
		t.Fatalf("dead letter round trip: %+v, %v", gotD, err)
	}
}

func ptr[T any](v T) *T { return &v }

func seedPayloads(f *testing.F) {
	e := validEvent()
	b, _ := EncodeEvent(&e)
	f.Add(b)
	e.Op, e.Fields = OpPatch, Fields{"a": json.RawMessage(`null`), "b.c": json.RawMessage(`[{"x":1}]`)}
	b, _ = EncodeEvent(&e)
	f.Add(b)
	c := &Change{Schema: 1, Tenant: "a", Collection: "c", Doc: "d", Version: 1, Event: testID, Client: "x",
		Conflicts: []Conflict{{ID: testID, Policy: PolicyManual, Status: ConflictOpen, Sides: []Side{{}, {Deleted: true}}}}}
	b, _ = EncodeChange(c)
	f.Add(b)
	r := &Receipt{Schema: 1, Event: testID, Tenant: "a", Client: "c1", Outcome: OutcomeApplied}
	b, _ = EncodeReceipt(r)
	f.Add(b)
	f.Add([]byte(`{"schema":2}`))
	f.Add([]byte(`{"schema":1,"fields":{"x":[[[[[[]]]]]]}}`))
	f.Add([]byte("\xff"))
}

func FuzzDecodeEvent(f *testing.F) {
	seedPayloads(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEvent(data, Limits{})
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || !(errors.Is(err, ErrInvalid) || errors.Is(err, ErrUnknownSchema)) {
				t.Fatalf("error %v is not a FieldError wrapping a sentinel", err)
			}
			return
		}
		b, err := EncodeEvent(e)
		if err != nil {
			t.Fatalf("encode a decoded event: %v", err)
		}
		e2, err := DecodeEvent(b, Limits{})
		if err != nil {
			t.Fatalf("re-decode %s: %v", b, err)
		}
		if b2, _ := EncodeEvent(e2); string(b2) != string(b) {
			t.Fatalf("encoding not stable:\n%s\n%s", b, b2)
		}
	})
}

func FuzzDecodeChange(f *testing.F) {
	seedPayloads(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeChange(data)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a FieldError", err)
			}
			return
		}
		b, err := EncodeChange(c)
		if err != nil {
			t.Fatalf("encode a decoded change: %v", err)
		}
		if _, err := DecodeChange(b); err != nil {
			t.Fatalf("re-decode %s: %v", b, err)
		}
	})
}

func FuzzDecodeReceipt(f *testing.F) {
	seedPayloads(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeReceipt(data)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a FieldError", err)
			}
			return
		}
		b, _ := EncodeReceipt(r)
		r2, err := DecodeReceipt(b)
		if err != nil || *r2 != *r {
			t.Fatalf("round trip %s: %+v, %v", b, r2, err)
		}
	})
}

func TestValidate_IntegersFitIn53Bits(t *testing.T) {
	base := func() *Event {
		return &Event{Schema: SchemaVersion, ID: NewIDSource(nil).New().String(), Tenant: "t", Collection: "c", Doc: "d",
			Op: OpPut, HLC: HLC{Wall: 1, Logical: 0}, Client: "x", Seq: 1}
	}
	for _, tc := range []struct {
		name  string
		field string
		mod   func(*Event)
	}{
		{"seq", "seq", func(e *Event) { e.Seq = MaxSafeInteger + 2 }},
		{"base version", "base_version", func(e *Event) { e.BaseVersion = MaxSafeInteger + 1 }},
		{"hlc wall", "hlc", func(e *Event) { e.HLC.Wall = MaxSafeInteger + 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := base()
			tc.mod(e)
			var fe *FieldError
			if err := e.Validate(Limits{}); !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate: %v, want an ErrInvalid naming %q", err, tc.field)
			}
		})
	}
	e := base()
	e.Seq, e.BaseVersion = MaxSafeInteger, MaxSafeInteger
	if err := e.Validate(Limits{}); err != nil {
		t.Fatalf("2^53-1 is allowed: %v", err)
	}
}

// TestDecode_UnknownFieldIgnoresKeyCase: encoding/json takes a key in
// another case ("Tenant") for its field, so the error names the key it
// refused ("bogus"), or the field whose value has the wrong type, not the
// one in another case.
func TestDecode_UnknownFieldIgnoresKeyCase(t *testing.T) {
	for data, want := range map[string]string{
		`{"schema":1,"Tenant":"t","bogus":1}`: `field "bogus": unknown field`,
		`{"schema":1,"Tenant":"t","seq":"x"}`: `field "seq"`,
	} {
		_, err := DecodeEvent([]byte(data), Limits{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("DecodeEvent(%s): %v, want an error naming %s", data, err, want)
		}
	}
}
