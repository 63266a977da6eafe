package projection

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// invalidRaw are field values that are no JSON and hold no byte that
// compacting or escaping would change (no whitespace, no HTML character,
// no 0xE2): the ones the encoder's fast path would copy as they are. `1}`
// and `1,"y":2` would inject members into the document around them.
var invalidRaw = []string{`{bad`, `nope`, `[1,]`, `"open`, `01`, `1}`, `NaN`, `1,"y":2`, `{"a":1}}`, `"a""b"`, `--1`, `1.`, `.5`,
	`+1`, `tru`, `nulll`, `{"a"}`, `["\x"]`, `"\u12"`, `{"a":1,}`, `}`, `]`, `,`, "\"\x01\"", `1e`, `Infinity`, `""""`}

// TestJSONEncoder_RefusesInvalidFieldValues: a field value that is no JSON
// and takes the fast path (see invalidRaw) is refused with Marshal's error
// class wherever a field value is encoded (a change's fields, a conflict
// record's sides, a stored state's kept fields), as events.EncodeChange and
// json.Marshal refuse it, so no change replicas cannot decode is published
// and no state the view cannot read back is written.
func TestJSONEncoder_RefusesInvalidFieldValues(t *testing.T) {
	for _, bad := range invalidRaw {
		if json.Valid([]byte(bad)) || !plainRaw([]byte(bad)) {
			t.Fatalf("value %s: valid JSON %v or off the fast path: not what this test checks", bad, json.Valid([]byte(bad)))
		}
		f := events.Fields{"x": json.RawMessage(bad)}
		conf := events.Conflict{ID: "k", Sides: []events.Side{{Fields: f}}}
		d := Doc{Tenant: "t", Collection: "c", ID: "d", Version: 1, Event: "e", Client: "c", Fields: f}
		_, werr := events.EncodeChange(d.Change(nil))
		got, err := encodeChange(d.encoded(nil))
		checkSameError(t, "change fields "+bad, got, err, werr)

		side := Doc{Tenant: "t", Collection: "c", ID: "d", Version: 1, Conflicts: []events.Conflict{conf}}
		_, werr = events.EncodeChange(side.Change(&conf))
		got, err = encodeChange(side.encoded(&conf))
		checkSameError(t, "change conflict side "+bad, got, err, werr)
		_, werr = json.Marshal(conf)
		got, err = encodeConflict(&conf)
		checkSameError(t, "conflict record "+bad, got, err, werr)

		for _, sd := range []Doc{d, side, {Tenant: "t", Version: 2, Deleted: true, Kept: f}} {
			_, werr := marshalDocState(&sd)
			st, err := encodeDocState(&sd)
			checkSameError(t, "stored state "+bad, st, err, werr)
			if err == nil {
				if _, derr := decodeDocState(st); derr != nil {
					t.Errorf("value %s: stored state written without error cannot be read back: %v", bad, derr)
				}
			}
		}
	}
}

// checkSameError fails t unless the encoder refused what encoding/json
// refused, with the same class of error (a *json.MarshalerError over a
// *json.SyntaxError), and wrote nothing that is no JSON.
func checkSameError(t *testing.T, what string, got []byte, err, werr error) {
	t.Helper()
	if werr == nil {
		t.Fatalf("%s: encoding/json accepted it: not what this test checks", what)
	}
	var me *json.MarshalerError
	var se *json.SyntaxError
	if err == nil || !errors.As(err, &me) || !errors.As(err, &se) {
		t.Errorf("%s: encoder error %v (wrote %s, valid JSON %v), want a *json.MarshalerError over a *json.SyntaxError as %v",
			what, err, got, json.Valid(got), werr)
	}
	if err == nil && bytes.Contains(got, []byte(`"y":2`)) {
		t.Errorf("%s: a field value injected a member: %s", what, got)
	}
}
