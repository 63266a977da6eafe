package consumer

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// changeHead is the part of a change payload the view needs to file it; the
// full, strictly checked decode (events.DecodeChange) happens when a
// document is read. Decoding only this much keeps catch-up fast.
type changeHead struct {
	Schema     int        `json:"schema"`
	Tenant     string     `json:"tenant"`
	Collection string     `json:"collection"`
	Doc        string     `json:"doc"`
	Version    uint64     `json:"version"`
	HLC        events.HLC `json:"hlc"`
	Event      string     `json:"event"`
	Client     string     `json:"client"`
	Seq        uint64     `json:"seq"`
	Conflicts  []struct {
		Status events.ConflictStatus `json:"status"`
	} `json:"conflicts"`
	Settled *struct {
		ID     string                `json:"id"`
		Policy events.Policy         `json:"policy"`
		Status events.ConflictStatus `json:"status"`
	} `json:"settled"`
}

// decodeHead decodes and checks the head of a change payload into h.
//
// The common payload (what events.EncodeChange writes: compact, ASCII names,
// no escapes in the head) is read by scanHead in one pass that also checks
// the rest of the payload is well-formed JSON; anything it is not sure of,
// it hands to encoding/json, so the result (value or error) is always the
// one json.Unmarshal gives. FuzzDecodeHead holds the two paths equal.
func decodeHead(data []byte, h *changeHead) error { return decodeHeadAfter(data, h, nil) }

// decodeHeadAfter is decodeHead reusing prev's tenant, collection and
// client strings where the payload's are equal (a catch-up's changes mostly
// share them), so they cost no allocation; prev may be nil.
func decodeHeadAfter(data []byte, h *changeHead, prev *changeHead) error {
	*h = changeHead{}
	if !scanHead(data, h, prev) {
		*h = changeHead{}
		if err := json.Unmarshal(data, h); err != nil {
			return fmt.Errorf("decode change: %w", err)
		}
	}
	switch {
	case h.Schema != events.SchemaVersion:
		return fmt.Errorf("decode change: %w: schema %d", events.ErrUnknownSchema, h.Schema)
	case h.Tenant == "" || h.Collection == "" || h.Doc == "" || h.Version == 0:
		return fmt.Errorf("decode change: %w: tenant, collection, doc and version are required", events.ErrInvalid)
	}
	return nil
}

// change is a CHANGES message as a changePreparer readies it for the view, on
// the follower's reader goroutine (off the store transaction).
type change struct {
	head   changeHead
	header nats.Header // the message's (trace context)
	key    []byte      // docKey of the document
	value  []byte      // what bucketDocs will hold (putSyncedValue)
	err    error       // the head did not decode or is not its subject's: the change is quarantined
	retry  bool        // err: a newer schema, worth reading again after an upgrade
	left   bool        // a Left notice of the change feed (rules.go): forget the document
}

// changePreparer readies CHANGES messages for the view (prepare, data). It
// keeps the buffer the compact record is built in and the field lists it
// is read into, so a catch-up grows them once, not once per document (a
// delivery's change is cleared each time its batch is recycled). One
// goroutine uses it at a time: the follower's reader.
type changePreparer struct {
	scratch []byte
	compact compactChange
	// last holds the tenant, collection and client of the last change
	// prepared, which the next one reuses when equal (decodeHeadAfter).
	last changeHead
}

func newChangePreparer() *changePreparer { return &changePreparer{} }

// prepare decodes m's head and builds the view's key and value in a, so
// the message's own copy of the payload is garbage once this returns.
func (p *changePreparer) prepare(m jetstream.Msg, c *change, a *arena) {
	p.data(m.Subject(), m.Data(), m.Headers(), c, a)
}

// data is prepare of a message's parts. A payload that does not decode, or
// names another document than subject, is c.err (wrapping ErrUnreadable or
// ErrSubjectMismatch).
func (p *changePreparer) data(subject string, data []byte, header nats.Header, c *change, a *arena) {
	c.header = header
	if err := decodeHeadAfter(data, &c.head, &p.last); err != nil {
		c.err = fmt.Errorf("%w: %w", ErrUnreadable, err)
		c.retry = newerSchema(data)
		return
	}
	h := &c.head
	p.last = changeHead{Tenant: h.Tenant, Collection: h.Collection, Client: h.Client}
	if !changeSubjectMatches(subject, h.Tenant, h.Collection, h.Doc) {
		c.err = mismatch(subject, h.Tenant, h.Collection, h.Doc)
		return
	}
	c.err, c.retry = nil, false
	c.key = a.alloc(len(h.Collection) + 1 + len(h.Doc))
	putDocKey(c.key, h.Collection, h.Doc)
	// The compact record (synced.go) when the change decodes, else the
	// payload as received.
	var ok bool
	if p.scratch, ok = compactSyncedWith(p.scratch[:0], data, &p.compact); ok {
		data = p.scratch
	}
	c.value = a.alloc(8 + len(data))
	putSyncedValue(c.value, h.Version, data)
}

// headKeys are the keys of changeHead, in the order of the bits scanHead
// uses to notice a key seen twice.
var headKeys = [...]string{"schema", "tenant", "collection", "doc", "version", "hlc", "event", "client", "seq", "conflicts", "settled"}

// headKey returns the index of key in headKeys, -1 if it is none of them.
func headKey(key []byte) int {
	switch string(key) {
	case "schema":
		return 0
	case "tenant":
		return 1
	case "collection":
		return 2
	case "doc":
		return 3
	case "version":
		return 4
	case "hlc":
		return 5
	case "event":
		return 6
	case "client":
		return 7
	case "seq":
		return 8
	case "conflicts":
		return 9
	case "settled":
		return 10
	}
	return -1
}

// maxSkipDepth bounds the nesting scanHead follows; deeper payloads go to
// encoding/json (which has its own, larger limit).
const maxSkipDepth = 64

// scanHead fills h from data and reports true when data is a well-formed
// JSON object that json.Unmarshal would decode into exactly h without
// error. It reports false (h then holds garbage) for anything else, and for
// anything it does not handle itself: a head key written in another case or
// twice, escapes or non-ASCII bytes in a head string, null or a number
// outside plain integer syntax in a head field, deep nesting.
//
// A string equal to prev's (if prev is not nil) of the same field is
// prev's, not a copy.
func scanHead(data []byte, h *changeHead, prev *changeHead) bool {
	s := scanner{b: data}
	var none changeHead
	if prev == nil {
		prev = &none
	}
	var seen uint16
	ok := s.object(func(key []byte) bool {
		k := headKey(key)
		if k < 0 {
			if foldsToHeadKey(key) {
				return false // encoding/json matches keys case-insensitively
			}
			return s.skip(0)
		}
		if seen&(1<<k) != 0 {
			return false
		}
		seen |= 1 << k
		switch k {
		case 0:
			n, ok := s.int(strconv.IntSize)
			h.Schema = int(n)
			return ok
		case 1:
			return s.strLike(&h.Tenant, prev.Tenant)
		case 2:
			return s.strLike(&h.Collection, prev.Collection)
		case 3:
			return s.str(&h.Doc)
		case 4:
			return s.uint(64, &h.Version)
		case 5:
			return s.hlc(&h.HLC)
		case 6:
			return s.str(&h.Event)
		case 7:
			return s.strLike(&h.Client, prev.Client)
		case 8:
			return s.uint(64, &h.Seq)
		case 9:
			return s.rawInto(&h.Conflicts)
		default: // 10
			return s.rawInto(&h.Settled)
		}
	})
	if !ok {
		return false
	}
	s.ws()
	return s.i == len(s.b)
}

// foldsToHeadKey reports whether key is a head key in another case (or
// holds non-ASCII bytes, which Unicode folding could turn into one).
func foldsToHeadKey(key []byte) bool {
	for _, c := range key {
		if c >= 0x80 {
			return true
		}
	}
	for _, name := range headKeys {
		if len(key) == len(name) && asciiEqualFold(key, name) {
			return true
		}
	}
	return false
}

func asciiEqualFold(a []byte, b string) bool {
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// scanner is a strict JSON reader over b; every method returns false on
// input it does not accept, leaving the decision to encoding/json.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// object reads {"key": value, ...}, calling field with each key (plain
// ASCII without escapes, else false) positioned at its value.
func (s *scanner) object(field func(key []byte) bool) bool {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return true
	}
	for {
		s.ws()
		key, ok := s.plain()
		if !ok {
			return false
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		s.ws()
		if !field(key) {
			return false
		}
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// plain reads a string of printable ASCII without escapes and returns its
// contents (aliasing b).
func (s *scanner) plain() ([]byte, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return s.b[start:j], true
		case c < 0x20 || c >= 0x80 || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

func (s *scanner) str(dst *string) bool { return s.strLike(dst, "") }

// strLike is str that stores like, not a copy, when the string equals it.
func (s *scanner) strLike(dst *string, like string) bool {
	v, ok := s.plain()
	switch {
	case !ok:
	case like != "" && string(v) == like: // compared without a copy
		*dst = like
	default:
		*dst = string(v)
	}
	return ok
}

// digits reads an integer in plain syntax (-?(0|[1-9][0-9]*), no fraction
// or exponent) and returns its sign and digits.
func (s *scanner) digits() (neg bool, ds []byte, ok bool) {
	if s.i < len(s.b) && s.b[s.i] == '-' {
		neg = true
		s.i++
	}
	start := s.i
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		s.i++
	}
	ds = s.b[start:s.i]
	if len(ds) == 0 || (ds[0] == '0' && len(ds) > 1) {
		return false, nil, false
	}
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E':
			return false, nil, false
		}
	}
	return neg, ds, true
}

// uint reads a non-negative integer that fits in bits.
func (s *scanner) uint(bits uint, dst *uint64) bool {
	neg, ds, ok := s.digits()
	if !ok || neg { // encoding/json refuses even -0 for an unsigned field
		return false
	}
	var n uint64
	limit := uint64(1)<<bits - 1
	if bits == 64 {
		limit = ^uint64(0)
	}
	for _, c := range ds {
		d := uint64(c - '0')
		if n > (limit-d)/10 {
			return false
		}
		n = n*10 + d
	}
	*dst = n
	return true
}

// int reads a signed integer that fits in bits.
func (s *scanner) int(bits uint) (int64, bool) {
	neg, ds, ok := s.digits()
	if !ok {
		return 0, false
	}
	var n uint64
	limit := uint64(1)<<(bits-1) - 1
	if neg {
		limit++
	}
	for _, c := range ds {
		d := uint64(c - '0')
		if n > (limit-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	if neg {
		return -int64(n), true
	}
	return int64(n), true
}

// hlc reads {"wall": int64, "logical": uint32} (other keys ignored, as
// encoding/json does).
func (s *scanner) hlc(h *events.HLC) bool { return s.hlcOf(h, false) }

// hlcOf reads an HLC object, each key at most once; strict refuses any
// other key, else other keys are skipped (but not one encoding/json would
// fold onto "wall" or "logical").
func (s *scanner) hlcOf(h *events.HLC, strict bool) bool {
	var seen [2]bool
	return s.object(func(key []byte) bool {
		switch string(key) {
		case "wall":
			if seen[0] {
				return false
			}
			seen[0] = true
			n, ok := s.int(64)
			h.Wall = n
			return ok
		case "logical":
			if seen[1] {
				return false
			}
			seen[1] = true
			var n uint64
			ok := s.uint(32, &n)
			h.Logical = uint32(n)
			return ok
		default:
			if strict || foldsTo(key, "wall") || foldsTo(key, "logical") {
				return false
			}
			return s.skip(0)
		}
	})
}

func foldsTo(key []byte, name string) bool {
	for _, c := range key {
		if c >= 0x80 {
			return true
		}
	}
	return len(key) == len(name) && asciiEqualFold(key, name)
}

// rawInto skips a value and decodes its bytes into dst with encoding/json
// (used for the rare conflict fields).
func (s *scanner) rawInto(dst any) bool {
	start := s.i
	if !s.skip(0) {
		return false
	}
	return json.Unmarshal(s.b[start:s.i], dst) == nil
}

// skip reads one well-formed JSON value.
func (s *scanner) skip(depth int) bool {
	if depth > maxSkipDepth || s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return s.skipString()
	case c == '{' || c == '[':
		obj, end := c == '{', byte('}')
		if !obj {
			end = ']'
		}
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == end {
			s.i++
			return true
		}
		for {
			s.ws()
			if obj {
				if s.i >= len(s.b) || s.b[s.i] != '"' || !s.skipString() {
					return false
				}
				s.ws()
				if s.i >= len(s.b) || s.b[s.i] != ':' {
					return false
				}
				s.i++
				s.ws()
			}
			if !s.skip(depth + 1) {
				return false
			}
			s.ws()
			if s.i >= len(s.b) {
				return false
			}
			switch s.b[s.i] {
			case ',':
				s.i++
			case end:
				s.i++
				return true
			default:
				return false
			}
		}
	case c == '-' || ('0' <= c && c <= '9'):
		return s.skipNumber()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return false
}

// skipString reads a string with any escapes JSON allows; bytes of 0x80 and
// above are accepted as encoding/json accepts them.
func (s *scanner) skipString() bool {
	for j := s.i + 1; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			j++
			if j >= len(s.b) {
				return false
			}
			switch s.b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(s.b) {
					return false
				}
				for _, h := range s.b[j+1 : j+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				j += 4
			default:
				return false
			}
		}
	}
	return false
}

// skipNumber reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func (s *scanner) skipNumber() bool {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		start := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	s.i = i
	return true
}

func (s *scanner) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}
