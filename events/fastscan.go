package events

import (
	"math"
	"strings"
)

// The scanner the fast paths of DecodeEvent and DecodeChange share. It reads
// the canonical form encoding/json's Marshal writes (see decode_event.go and
// decode_change.go for what each accepts) and reports false on anything
// else, so that the strict decoder decides it.

// maxFastDepth bounds the nesting the fast path follows in a field's value;
// deeper values are left to the strict decoder (whose own bound is 10000).
const maxFastDepth = 1000

// strSpan is a JSON string in the input: its contents between the quotes,
// and whether they hold an escape.
type strSpan struct {
	start, end int
	esc        bool
}

// fieldSpan is one entry of a fields object (an event's or a change's): its name and its raw value.
type fieldSpan struct {
	key        strSpan
	start, end int
}

// in returns the text of s, a span of all.
func (s strSpan) in(all string) string { return all[s.start:s.end] }

// decodeSpans decodes the strings strs and the names of fields in data into
// one string, in one allocation, and returns it; each span of strs and each
// fields[i].key is rewritten to the place of its text in that string (read
// it with strSpan.in). It declines an escape appendString declines.
func decodeSpans(data []byte, strs []strSpan, fields []fieldSpan) (string, bool) {
	total := 0
	for _, s := range strs {
		total += s.end - s.start
	}
	for _, f := range fields {
		total += f.key.end - f.key.start
	}
	var sb strings.Builder
	sb.Grow(total) // unescaping only shortens a string
	for i := range strs {
		start := sb.Len()
		if !appendString(&sb, data, strs[i]) {
			return "", false
		}
		strs[i] = strSpan{start: start, end: sb.Len()}
	}
	for i := range fields {
		start := sb.Len()
		if !appendString(&sb, data, fields[i].key) {
			return "", false
		}
		fields[i].key = strSpan{start: start, end: sb.Len()}
	}
	return sb.String(), true
}

// rawFields returns the fields fs of data, their names already decoded into
// names by decodeSpans, with copies of their raw values as written, all in
// one byte slice (each value capped at its length, so appending to one never
// overwrites the next). It declines a duplicate name: encoding/json keeps
// the last, and that is left to it. An empty fs gives an empty, non-nil map,
// as encoding/json gives for {}.
func rawFields(data []byte, names string, fs []fieldSpan) (Fields, bool) {
	rawTotal := 0
	for _, f := range fs {
		rawTotal += f.end - f.start
	}
	m := make(Fields, len(fs))
	raw := make([]byte, rawTotal)
	r := 0
	for _, f := range fs {
		name := f.key.in(names)
		if _, dup := m[name]; dup {
			return nil, false
		}
		n := copy(raw[r:], data[f.start:f.end])
		m[name] = raw[r : r+n : r+n]
		r += n
	}
	return m, true
}

// appendString writes the decoded contents of s to sb, decoding escapes
// exactly as encoding/json does. It reports false for a \u escape of a
// surrogate that is not the first half of a valid pair followed by its
// second half, which encoding/json replaces with U+FFFD.
func appendString(sb *strings.Builder, data []byte, s strSpan) bool {
	b := data[s.start:s.end]
	if !s.esc {
		sb.Write(b)
		return true
	}
	for i := 0; i < len(b); {
		c := b[i]
		if c != '\\' {
			j := i + 1
			for j < len(b) && b[j] != '\\' {
				j++
			}
			sb.Write(b[i:j])
			i = j
			continue
		}
		// The parser checked every escape's form: a known letter, or u
		// and four hex digits.
		switch b[i+1] {
		case '"', '\\', '/':
			sb.WriteByte(b[i+1])
		case 'b':
			sb.WriteByte('\b')
		case 'f':
			sb.WriteByte('\f')
		case 'n':
			sb.WriteByte('\n')
		case 'r':
			sb.WriteByte('\r')
		case 't':
			sb.WriteByte('\t')
		case 'u':
			r := hex4(b[i+2 : i+6])
			if r >= 0xD800 && r < 0xE000 {
				if r >= 0xDC00 || i+12 > len(b) || b[i+6] != '\\' || b[i+7] != 'u' {
					return false
				}
				r2 := hex4(b[i+8 : i+12])
				if r2 < 0xDC00 || r2 >= 0xE000 {
					return false
				}
				r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
				i += 6
			}
			sb.WriteRune(r)
			i += 6
			continue
		}
		i += 2
	}
	return true
}

// hex4 returns the value of four hex digits the parser has checked.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// fastParser reads the canonical form. Every method reports false on input
// it does not handle, and the whole parse then declines.
type fastParser struct {
	data []byte
	pos  int
}

func (p *fastParser) consume(c byte) bool {
	if p.pos < len(p.data) && p.data[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

// string reads a JSON string and returns the span of its contents.
func (p *fastParser) string() (strSpan, bool) {
	if !p.consume('"') {
		return strSpan{}, false
	}
	s := strSpan{start: p.pos}
	d := p.data
	for i := p.pos; i < len(d); {
		switch c := d[i]; {
		case c == '"':
			s.end, p.pos = i, i+1
			return s, true
		case c == '\\':
			if i+1 >= len(d) {
				return strSpan{}, false
			}
			s.esc = true
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(d) || !isHex(d[i+2]) || !isHex(d[i+3]) || !isHex(d[i+4]) || !isHex(d[i+5]) {
					return strSpan{}, false
				}
				i += 6
			default:
				return strSpan{}, false
			}
		case c < 0x20:
			return strSpan{}, false
		default:
			i++ // the input is valid UTF-8, checked once at the start
		}
	}
	return strSpan{}, false
}

// plainString reads a JSON string without escapes and returns its
// contents, which alias the input.
func (p *fastParser) plainString() ([]byte, bool) {
	s, ok := p.string()
	if !ok || s.esc {
		return nil, false
	}
	return p.data[s.start:s.end], true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// uint reads a non-negative integer in canonical form (no sign, fraction,
// exponent or leading zero: the byte after it must end it) of at most max.
func (p *fastParser) uint(max uint64) (uint64, bool) {
	d, i := p.data, p.pos
	if i >= len(d) || d[i] < '0' || d[i] > '9' {
		return 0, false
	}
	if d[i] == '0' {
		p.pos = i + 1
		return 0, true // a digit after it is refused where a ',' or '}' must follow
	}
	var n uint64
	for ; i < len(d) && d[i] >= '0' && d[i] <= '9'; i++ {
		c := uint64(d[i] - '0')
		if n > (max-c)/10 {
			return 0, false
		}
		n = n*10 + c
	}
	p.pos = i
	return n, true
}

// hlc reads {"wall":W,"logical":L}, either key optional, in either order.
func (p *fastParser) hlc() (HLC, bool) {
	var h HLC
	if !p.consume('{') {
		return h, false
	}
	if p.consume('}') {
		return h, true
	}
	var seenWall, seenLogical bool
	for {
		key, ok := p.plainString()
		if !ok || !p.consume(':') {
			return h, false
		}
		switch string(key) {
		case "wall":
			n, ok := p.uint(math.MaxInt64)
			if !ok || seenWall {
				return h, false
			}
			h.Wall, seenWall = int64(n), true
		case "logical":
			n, ok := p.uint(math.MaxUint32)
			if !ok || seenLogical {
				return h, false
			}
			h.Logical, seenLogical = uint32(n), true
		default:
			return h, false
		}
		if p.consume(',') {
			continue
		}
		return h, p.consume('}')
	}
}

// fields reads an object of raw values, appending one span per entry.
func (p *fastParser) fields(fs []fieldSpan) ([]fieldSpan, bool) {
	if !p.consume('{') {
		return fs, false
	}
	if p.consume('}') {
		return fs, true
	}
	for {
		key, ok := p.string()
		if !ok || !p.consume(':') {
			return fs, false
		}
		start := p.pos
		if !p.value(0) {
			return fs, false
		}
		fs = append(fs, fieldSpan{key: key, start: start, end: p.pos})
		if p.consume(',') {
			continue
		}
		return fs, p.consume('}')
	}
}

// ws skips JSON whitespace, which the fast path allows only inside a
// field's array or object value (encoding/json keeps it there as written).
func (p *fastParser) ws() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// value checks one JSON value of any type, as encoding/json's scanner
// would, and moves past it.
func (p *fastParser) value(depth int) bool {
	if p.pos >= len(p.data) {
		return false
	}
	switch c := p.data[p.pos]; c {
	case '{':
		if depth >= maxFastDepth {
			return false
		}
		p.pos++
		p.ws()
		if p.consume('}') {
			return true
		}
		for {
			if _, ok := p.string(); !ok {
				return false
			}
			p.ws()
			if !p.consume(':') {
				return false
			}
			p.ws()
			if !p.value(depth + 1) {
				return false
			}
			p.ws()
			if p.consume(',') {
				p.ws()
				continue
			}
			return p.consume('}')
		}
	case '[':
		if depth >= maxFastDepth {
			return false
		}
		p.pos++
		p.ws()
		if p.consume(']') {
			return true
		}
		for {
			if !p.value(depth + 1) {
				return false
			}
			p.ws()
			if p.consume(',') {
				p.ws()
				continue
			}
			return p.consume(']')
		}
	case '"':
		_, ok := p.string()
		return ok
	case 't':
		return p.literal("true")
	case 'f':
		return p.literal("false")
	case 'n':
		return p.literal("null")
	default:
		return p.number()
	}
}

func (p *fastParser) literal(lit string) bool {
	if len(p.data)-p.pos < len(lit) || string(p.data[p.pos:p.pos+len(lit)]) != lit {
		return false
	}
	p.pos += len(lit)
	return true
}

// number checks a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *fastParser) number() bool {
	d, i := p.data, p.pos
	digits := func() bool {
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		return i > j
	}
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(d) && d[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	p.pos = i
	return true
}
