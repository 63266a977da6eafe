package projection

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// errClass is what FuzzJSONEncoder compares of two errors: none, or the
// kinds encoding/json's Marshal of a json.RawMessage returns.
func errClass(err error) string {
	var me *json.MarshalerError
	var se *json.SyntaxError
	switch {
	case err == nil:
		return "none"
	case errors.As(err, &me) && errors.As(err, &se):
		return "marshaler/syntax"
	case errors.As(err, &me):
		return "marshaler"
	default:
		return fmt.Sprintf("other %T", err)
	}
}

// sameEncoding fails t unless the encoder and encoding/json wrote the same
// bytes, or both refused with the same class of error.
func sameEncoding(t *testing.T, what string, got []byte, err error, want []byte, werr error) {
	t.Helper()
	if errClass(err) != errClass(werr) {
		t.Fatalf("%s: encoder error %v (wrote %q), encoding/json %v (wrote %q)", what, err, got, werr, want)
	}
	if err == nil && !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// FuzzJSONEncoder: for any field value and any string (as a field name, a
// tenant, a client, a reader, a reason), the hand-written encoder of
// changes, stored states, conflict records and receipts writes exactly what
// encoding/json writes, or refuses what it refuses with the same class of
// error. The corpus it found is kept in testdata/fuzz/FuzzJSONEncoder.
func FuzzJSONEncoder(f *testing.F) {
	for _, raw := range append(invalidRaw, `1`, `"v"`, `{"a":[1,2]}`, ` { "h" : "<&>" } `, "\"\u2028\"", "\"\xff\"", `1e400`, `-0`, `null`, ``) {
		f.Add([]byte(raw), "a<b>&\u2028\xff")
	}
	f.Fuzz(func(t *testing.T, raw []byte, s string) {
		for _, v := range []json.RawMessage{raw, nil} {
			fields := events.Fields{s: v, "k": json.RawMessage(`1`)}
			side := events.Side{Event: s, Client: s, HLC: events.HLC{Wall: 1}, Version: 2, Fields: fields}
			conf := events.Conflict{ID: s, Policy: events.Policy(s), Status: "overwritten", Sides: []events.Side{side, {}}, Lost: []string{s}, Resolution: s}
			d := Doc{Tenant: s, Collection: s, ID: s, Version: 3, Fields: fields,
				Clocks: map[string]events.FieldClock{s: {Version: 1, Client: s}},
				Event:  s, Client: s, Device: s, Conflicts: []events.Conflict{conf},
				Audience: []string{s}, Kept: fields}
			got, err := encodeDocState(&d)
			want, werr := marshalDocState(&d)
			sameEncoding(t, "stored state", got, err, want, werr)
			for _, settled := range []*events.Conflict{nil, &conf} {
				got, err := encodeChange(d.encoded(settled))
				want, werr := events.EncodeChange(d.Change(settled))
				sameEncoding(t, "change", got, err, want, werr)
			}
			got, err = encodeConflict(&conf)
			want, werr = json.Marshal(conf)
			sameEncoding(t, "conflict record", got, err, want, werr)
		}
		r := events.Receipt{Schema: 1, Event: s, Tenant: s, Client: s, Device: s, Collection: s, Doc: s, Outcome: events.Outcome(s), Reason: s, Conflict: s}
		want, werr := events.EncodeReceipt(&r)
		sameEncoding(t, "receipt", encodeReceipt(&r), nil, want, werr)
	})
}
