package projection

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/ebbsync/ebb/events"
)

// A hand-written encoder for what the projector encodes per event (a
// change, the stored state, a conflict record, a receipt): the same bytes as
// encoding/json's Marshal of the events types, without reflection. Field
// values (json.RawMessage) are copied as they are when they are valid,
// compact and hold nothing Marshal escapes, else given to Marshal, which
// compacts and escapes them or refuses them with its own error. jsonenc_test.go
// checks the bytes against Marshal for every member of the types, so a
// member added to them fails the test until it is encoded here.

const hexDigits = "0123456789abcdef"

// safeASCII holds the ASCII bytes encoding/json writes in a string as
// they are.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for c := range t {
		t[c] = c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendJSONString appends s as encoding/json writes a string (HTML
// characters, U+2028 and U+2029 escaped, invalid UTF-8 as U+FFFD).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(append(b, s[start:]...), '"')
}

// appendRaw appends a field value as Marshal writes a json.RawMessage:
// compacted, HTML characters escaped, null for nil, and an error for a
// value that is not one JSON value (Marshal's own error: a
// *json.MarshalerError), so that nothing unreadable is ever written. A
// value copied as it is must be valid JSON: field values come from a
// custom resolver too, which nothing checked before (json.Valid
// allocates nothing).
func appendRaw(b []byte, v json.RawMessage) ([]byte, error) {
	if v == nil {
		return append(b, "null"...), nil
	}
	if plainScalar(v) || len(v) > 0 && plainRaw(v) && json.Valid(v) {
		return append(b, v...), nil
	}
	out, err := json.Marshal(v) // what needs compacting or escaping, or is no JSON: Marshal's own rules
	if err != nil {
		return b, err
	}
	return append(b, out...), nil
}

// plainScalar reports whether v is one JSON string, number, true, false
// or null, with nothing around it, that Marshal writes as it is: a field
// value appendRaw may copy without running json.Valid's scanner over it.
// It answers false for whatever it does not decide this way (objects,
// arrays, strings with escapes, control characters or what Marshal
// escapes, anything invalid), which appendRaw then checks as before, so it
// changes how fast a value is copied, never which bytes are written.
func plainScalar(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	switch c := v[0]; {
	case c == '"':
		last := len(v) - 1
		if last == 0 || v[last] != '"' {
			return false
		}
		for _, c := range v[1:last] {
			if !plainStringByte[c] {
				return false
			}
		}
		return true
	case c == '-' || c >= '0' && c <= '9':
		return plainNumber(v)
	}
	switch string(v) {
	case "true", "false", "null":
		return true
	}
	return false
}

// plainStringByte holds the bytes a string plainScalar accepts may hold
// as they are: not escapes, quotes or control characters, nor what
// Marshal escapes ('<', '>', '&', and 0xE2, the first byte of U+2028 and
// U+2029), which go the long way.
var plainStringByte = func() (t [256]bool) {
	for c := range t {
		t[c] = c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' && c != 0xE2
	}
	return t
}()

// plainNumber reports whether v is exactly one JSON number:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func plainNumber(v []byte) bool {
	i := 0
	if v[0] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(v) && v[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(v) && v[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(v) && (v[i] == 'e' || v[i] == 'E') {
		i++
		if i < len(v) && (v[i] == '+' || v[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(v)
}

// plainRaw reports whether v holds no byte that compacting or escaping
// would change: whitespace, HTML characters, or the first byte of U+2028
// and U+2029 (0xE2).
func plainRaw(v []byte) bool {
	for _, c := range v {
		switch c {
		case ' ', '\t', '\r', '\n', '<', '>', '&', 0xE2:
			return false
		}
	}
	return true
}

func appendKey(b []byte, k string) []byte {
	return append(appendJSONString(b, k), ':')
}

func appendHLC(b []byte, h events.HLC) []byte {
	b = append(b, `{"wall":`...)
	b = strconv.AppendInt(b, h.Wall, 10)
	b = append(b, `,"logical":`...)
	b = strconv.AppendUint(b, uint64(h.Logical), 10)
	return append(b, '}')
}

// smallMap is how many keys sortedKeys sorts in its caller's array.
const smallMap = 16

// sortedKeys returns the keys of m in byte order, appended to buf (an
// array of the caller's: a document's fields and clocks fit one).
func sortedKeys[V any](m map[string]V, buf []string) []string {
	for k := range m {
		buf = append(buf, k)
	}
	slices.Sort(buf)
	return buf
}

// appendFields appends a fields map, keys in byte order.
func appendFields(b []byte, f events.Fields) ([]byte, error) {
	b = append(b, '{')
	var buf [smallMap]string
	keys := sortedKeys(f, buf[:0])
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendKey(b, k)
		if b, err = appendRaw(b, f[k]); err != nil {
			return b, fmt.Errorf("field %q: %w", k, err)
		}
	}
	return append(b, '}'), nil
}

func appendClocks(b []byte, c map[string]events.FieldClock) []byte {
	b = append(b, '{')
	var buf [smallMap]string
	keys := sortedKeys(c, buf[:0])
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		fc := c[k]
		b = appendKey(b, k)
		b = append(b, `{"version":`...)
		b = strconv.AppendUint(b, fc.Version, 10)
		b = append(b, `,"hlc":`...)
		b = appendHLC(b, fc.HLC)
		if fc.Client != "" {
			b = append(b, `,"client":`...)
			b = appendJSONString(b, fc.Client)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

func appendSide(b []byte, s *events.Side) ([]byte, error) {
	b = append(b, '{')
	if s.Event != "" {
		b = append(b, `"event":`...)
		b = appendJSONString(b, s.Event)
		b = append(b, ',')
	}
	if s.Client != "" {
		b = append(b, `"client":`...)
		b = appendJSONString(b, s.Client)
		b = append(b, ',')
	}
	b = append(b, `"hlc":`...)
	b = appendHLC(b, s.HLC)
	if s.Version != 0 {
		b = append(b, `,"version":`...)
		b = strconv.AppendUint(b, s.Version, 10)
	}
	if s.Deleted {
		b = append(b, `,"deleted":true`...)
	}
	if len(s.Fields) > 0 {
		b = append(b, `,"fields":`...)
		var err error
		if b, err = appendFields(b, s.Fields); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

// appendConflict appends c as Marshal writes an events.Conflict.
func appendConflict(b []byte, c *events.Conflict) ([]byte, error) {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, c.ID)
	b = append(b, `,"policy":`...)
	b = appendJSONString(b, string(c.Policy))
	b = append(b, `,"status":`...)
	b = appendJSONString(b, string(c.Status))
	b = append(b, `,"sides":`...)
	if c.Sides == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range c.Sides {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendSide(b, &c.Sides[i]); err != nil {
				return b, err
			}
		}
		b = append(b, ']')
	}
	if len(c.Lost) > 0 {
		b = append(b, `,"lost":[`...)
		for i, l := range c.Lost {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, l)
		}
		b = append(b, ']')
	}
	if c.Resolution != "" {
		b = append(b, `,"resolution":`...)
		b = appendJSONString(b, c.Resolution)
	}
	return append(b, '}'), nil
}

// appendChangeMembers appends the members of c, without the braces, as
// Marshal writes an events.Change.
func appendChangeMembers(b []byte, c *events.Change) ([]byte, error) {
	var err error
	b = append(b, `"schema":`...)
	b = strconv.AppendInt(b, int64(c.Schema), 10)
	b = append(b, `,"tenant":`...)
	b = appendJSONString(b, c.Tenant)
	b = append(b, `,"collection":`...)
	b = appendJSONString(b, c.Collection)
	b = append(b, `,"doc":`...)
	b = appendJSONString(b, c.Doc)
	b = append(b, `,"version":`...)
	b = strconv.AppendUint(b, c.Version, 10)
	if c.Deleted {
		b = append(b, `,"deleted":true`...)
	}
	if len(c.Fields) > 0 {
		b = append(b, `,"fields":`...)
		if b, err = appendFields(b, c.Fields); err != nil {
			return b, err
		}
	}
	b = append(b, `,"hlc":`...)
	b = appendHLC(b, c.HLC)
	if len(c.Clocks) > 0 {
		b = append(b, `,"clocks":`...)
		b = appendClocks(b, c.Clocks)
	}
	b = append(b, `,"event":`...)
	b = appendJSONString(b, c.Event)
	b = append(b, `,"client":`...)
	b = appendJSONString(b, c.Client)
	if c.Device != "" {
		b = append(b, `,"device":`...)
		b = appendJSONString(b, c.Device)
	}
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, c.Seq, 10)
	if len(c.Conflicts) > 0 {
		b = append(b, `,"conflicts":[`...)
		for i := range c.Conflicts {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendConflict(b, &c.Conflicts[i]); err != nil {
				return b, err
			}
		}
		b = append(b, ']')
	}
	if c.Settled != nil {
		b = append(b, `,"settled":`...)
		if b, err = appendConflict(b, c.Settled); err != nil {
			return b, err
		}
	}
	if c.AsWritten {
		b = append(b, `,"as_written":true`...)
	}
	if c.Left {
		b = append(b, `,"left":true`...)
	}
	return b, nil
}

// encodeChange returns what events.EncodeChange returns for c.
func encodeChange(c *events.Change) ([]byte, error) {
	b, err := appendChangeMembers(append(make([]byte, 0, 512), '{'), c)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// appendDocState appends the stored form of d (encodeDocState, docstate.go).
func appendDocState(b []byte, d *Doc) ([]byte, error) {
	b, err := appendChangeMembers(append(b, '{'), d.encoded(nil))
	if err != nil {
		return nil, err
	}
	if len(d.Audience) > 0 {
		b = append(b, `,"ebb_audience":[`...)
		for i, p := range d.Audience {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, p)
		}
		b = append(b, ']')
	}
	if d.Kept != nil {
		b = append(b, `,"ebb_kept":`...)
		if b, err = appendFields(b, d.Kept); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// encodeConflict returns what json.Marshal returns for c.
func encodeConflict(c *events.Conflict) ([]byte, error) {
	return appendConflict(make([]byte, 0, 256), c)
}

// encodeReceipt returns what events.EncodeReceipt returns for r.
func encodeReceipt(r *events.Receipt) []byte {
	b := make([]byte, 0, 256)
	b = append(b, `{"schema":`...)
	b = strconv.AppendInt(b, int64(r.Schema), 10)
	b = append(b, `,"event":`...)
	b = appendJSONString(b, r.Event)
	b = append(b, `,"tenant":`...)
	b = appendJSONString(b, r.Tenant)
	b = append(b, `,"client":`...)
	b = appendJSONString(b, r.Client)
	if r.Device != "" {
		b = append(b, `,"device":`...)
		b = appendJSONString(b, r.Device)
	}
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	if r.Collection != "" {
		b = append(b, `,"collection":`...)
		b = appendJSONString(b, r.Collection)
	}
	if r.Doc != "" {
		b = append(b, `,"doc":`...)
		b = appendJSONString(b, r.Doc)
	}
	b = append(b, `,"outcome":`...)
	b = appendJSONString(b, string(r.Outcome))
	if r.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, r.Reason)
	}
	if r.Version != 0 {
		b = append(b, `,"version":`...)
		b = strconv.AppendUint(b, r.Version, 10)
	}
	if r.Conflict != "" {
		b = append(b, `,"conflict":`...)
		b = appendJSONString(b, r.Conflict)
	}
	b = append(b, `,"stream_seq":`...)
	b = strconv.AppendUint(b, r.Stream, 10)
	return append(b, '}')
}
