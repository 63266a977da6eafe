package projection

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// TestJSONEncoder_RawEdgeCasesAsMarshal: valid field values at the edges
// of what the fast path copies (invalid UTF-8 and surrogates in strings,
// numbers past float64, duplicate or unsorted members) are written as
// encoding/json writes them.
func TestJSONEncoder_RawEdgeCasesAsMarshal(t *testing.T) {
	for _, raw := range []string{"\"\xff\"", "\"\xed\xa0\x80\"", `1e400`, `123456789012345678901234567890`, `-0`, `1.0E+2`, `"\u003c"`, "\"\x7f\"", `{"b":1,"a":2}`, `{"a":1,"a":2}`} {
		f := events.Fields{"x": json.RawMessage(raw)}
		got, err := appendFields(nil, f)
		want, werr := json.Marshal(f)
		if (err == nil) != (werr == nil) || (err == nil && !bytes.Equal(got, want)) {
			t.Errorf("raw %q: got %q (%v), Marshal %q (%v)", raw, got, err, want, werr)
		}
	}
}
