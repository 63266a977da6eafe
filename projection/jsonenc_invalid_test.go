package projection

import (
	"encoding/json"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// TestJSONEncoder_RefusesInvalidFieldValues: a field value that is not JSON and has
// no whitespace/HTML byte takes appendRaw's fast path and is copied as is:
// no error where events.EncodeChange (json.Marshal) refused it. A custom
// resolver's fields are checked by nothing else (normalize does not), so the
// apply that used to dead-letter "encode the new state" now commits a state
// that decodeDocState cannot read and publishes a change replicas cannot
// decode.
func TestJSONEncoder_RefusesInvalidFieldValues(t *testing.T) {
	for _, bad := range []string{`{bad`, `nope`, `[1,]`, `"open`, `01`, `1}`, `NaN`} {
		d := Doc{Tenant: "t", Collection: "c", ID: "d", Version: 1, Event: "e", Client: "c",
			Fields: events.Fields{"x": json.RawMessage(bad)}}
		_, werr := events.EncodeChange(d.Change(nil))
		got, err := encodeChange(d.encoded(nil))
		if (err == nil) != (werr == nil) {
			t.Errorf("value %s: encodeChange err %v, json.Marshal err %v; wrote %s (valid JSON %v)", bad, err, werr, got, json.Valid(got))
		}
		if st, err := encodeDocState(&d); err == nil {
			if _, derr := decodeDocState(st); derr != nil {
				t.Errorf("value %s: stored state written without error cannot be read back: %v", bad, derr)
			}
		}
	}
}
