package consumer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// The synced record: what consumer.docs holds of a document's synced
// state, after the 8-byte version (store.go). A change payload as received
// repeats the tenant, collection and document (the key and the replica
// hold them), spells every id as 26 characters and every field's clock as
// JSON (~100 bytes a field), and carries the conflict the change settled,
// which no read uses: about 4 times the document's JSON. So the follower
// stores instead, for every change that decodes, a compact record of
// exactly what projection.Doc holds:
//
//	0x01                      format
//	flags                     1 byte: deleted, as_written, conflicts
//	hlc                       uvarint wall, uvarint logical
//	event, client, device     each an id (below)
//	seq                       uvarint
//	fields                    uvarint count, then per field (sorted by name):
//	                          uvarint len + name, uvarint len + raw JSON value
//	clocks                    uvarint count, then per clock (sorted): uvarint
//	                          len + name, then 0 when the clock is the
//	                          document's own (its version, HLC and client), or
//	                          1, uvarint version, hlc, client id
//	conflicts                 when flagged: uvarint len + JSON array
//
// An id is 0 + uvarint len + bytes, or 1 + 16 bytes for a canonical ULID.
// A payload that does not decode strictly is stored as received (JSON,
// starting with '{'), as before this format, and read the same way, so
// what the view accepts and when it quarantines is unchanged, and records
// written before it stay readable.
const syncedCompact = 0x01

const (
	flagDeleted   = 1 << 0
	flagAsWritten = 1 << 1
	flagConflicts = 1 << 2
)

// compactSynced appends to dst the compact record of the change payload
// data and reports whether it did: false (dst unchanged) if data does not
// decode (events.DecodeChange). The usual shape, as the projector encodes
// it, is read in one pass (scanCompact) with no allocation but the
// record's; anything else goes through events.DecodeChange.
func compactSynced(dst, data []byte) ([]byte, bool) {
	var c compactChange
	return compactSyncedWith(dst, data, &c)
}

// compactSyncedWith is compactSynced reading into c, whose slices it
// reuses.
func compactSyncedWith(dst, data []byte, cp *compactChange) ([]byte, bool) {
	// Keep no slice of data: the payload is garbage once the record is made.
	defer func() {
		clear(cp.fields)
		clear(cp.clocks)
		*cp = compactChange{fields: cp.fields[:0], clocks: cp.clocks[:0]}
	}()
	c := cp
	if !scanCompact(data, c) {
		ch, err := events.DecodeChange(data)
		if err != nil {
			return dst, false
		}
		var cs []byte
		if len(ch.Conflicts) > 0 {
			if cs, err = json.Marshal(ch.Conflicts); err != nil {
				return dst, false
			}
		}
		slow := compactOf(ch, cs)
		c = &slow
	}
	return appendCompact(dst, c), true
}

// compactChange is what a compact record holds, its bytes aliasing the
// payload it was read from.
type compactChange struct {
	version            uint64
	deleted, asWritten bool
	hlc                events.HLC
	event, client, dev []byte
	seq                uint64
	fields             []rawField // sorted by name, no name twice
	clocks             []rawClock // sorted by name, no name twice
	conflicts          []byte     // JSON array, nil for none
}

type rawField struct{ name, value []byte }

type rawClock struct {
	name    []byte
	version uint64
	hlc     events.HLC
	client  []byte
}

// compactOf is the compactChange of a decoded change (cs: its conflicts
// as JSON).
func compactOf(ch *events.Change, cs []byte) compactChange {
	c := compactChange{version: ch.Version, deleted: ch.Deleted, asWritten: ch.AsWritten, hlc: ch.HLC,
		event: []byte(ch.Event), client: []byte(ch.Client), dev: []byte(ch.Device), seq: ch.Seq, conflicts: cs}
	for _, name := range slices.Sorted(maps.Keys(ch.Fields)) {
		c.fields = append(c.fields, rawField{[]byte(name), ch.Fields[name]})
	}
	for _, name := range slices.Sorted(maps.Keys(ch.Clocks)) {
		fc := ch.Clocks[name]
		c.clocks = append(c.clocks, rawClock{[]byte(name), fc.Version, fc.HLC, []byte(fc.Client)})
	}
	return c
}

func appendCompact(b []byte, c *compactChange) []byte {
	var flags byte
	if c.deleted {
		flags |= flagDeleted
	}
	if c.asWritten {
		flags |= flagAsWritten
	}
	if len(c.conflicts) > 0 {
		flags |= flagConflicts
	}
	b = append(b, syncedCompact, flags)
	b = appendHLC(b, c.hlc)
	b = appendID(b, c.event)
	b = appendID(b, c.client)
	b = appendID(b, c.dev)
	b = binary.AppendUvarint(b, c.seq)
	b = binary.AppendUvarint(b, uint64(len(c.fields)))
	for _, f := range c.fields {
		b = appendBytes(b, f.name)
		b = appendBytes(b, f.value)
	}
	b = binary.AppendUvarint(b, uint64(len(c.clocks)))
	for _, k := range c.clocks {
		b = appendBytes(b, k.name)
		if k.version == c.version && k.hlc == c.hlc && bytes.Equal(k.client, c.client) {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = binary.AppendUvarint(b, k.version)
		b = appendHLC(b, k.hlc)
		b = appendID(b, k.client)
	}
	if flags&flagConflicts != 0 {
		b = appendBytes(b, c.conflicts)
	}
	return b
}

// clockKeys are the keys of a field clock, by index.
var clockKeys = [...]string{"version", "hlc", "client"}

// compactKeys are the top-level keys scanCompact reads, by bit.
var compactKeys = [...]string{"schema", "tenant", "collection", "doc", "version", "deleted", "fields", "hlc", "clocks", "event", "client", "device", "seq", "as_written"}

// scanCompact fills c from data and reports true only when data is a
// change in the shape the projector writes that events.DecodeChange
// accepts and would decode to exactly c: valid UTF-8, each known key once
// and spelled exactly, plain strings, no conflicts, no settled conflict,
// no unknown key at any level, and the head DecodeChange requires.
// Anything else reports false, for DecodeChange to judge.
func scanCompact(data []byte, c *compactChange) bool {
	if !utf8.Valid(data) {
		return false
	}
	*c = compactChange{fields: c.fields[:0], clocks: c.clocks[:0]}
	s := scanner{b: data}
	var seen uint16
	ok := s.object(func(key []byte) bool {
		k := slices.Index(compactKeys[:], string(key))
		if k < 0 || seen&(1<<k) != 0 {
			return false
		}
		seen |= 1 << k
		switch compactKeys[k] {
		case "version":
			return s.uint(64, &c.version)
		case "deleted":
			return s.boolean(&c.deleted)
		case "as_written":
			return s.boolean(&c.asWritten)
		case "hlc":
			return s.strictHLC(&c.hlc)
		case "event":
			return s.plainInto(&c.event)
		case "client":
			return s.plainInto(&c.client)
		case "device":
			return s.plainInto(&c.dev)
		case "seq":
			return s.uint(64, &c.seq)
		case "fields":
			return s.object(func(name []byte) bool {
				start := s.i
				if !s.skip(0) {
					return false
				}
				c.fields = append(c.fields, rawField{name, s.b[start:s.i]})
				return true
			})
		case "clocks":
			return s.object(func(name []byte) bool {
				k := rawClock{name: name}
				var seen [3]bool
				ok := s.object(func(key []byte) bool {
					i := slices.Index(clockKeys[:], string(key))
					if i < 0 || seen[i] {
						return false
					}
					seen[i] = true
					switch i {
					case 0:
						return s.uint(64, &k.version)
					case 1:
						return s.strictHLC(&k.hlc)
					default:
						return s.plainInto(&k.client)
					}
				})
				c.clocks = append(c.clocks, k)
				return ok
			})
		case "schema":
			n, ok := s.int(64)
			return ok && n == events.SchemaVersion
		default: // tenant, collection, doc: plain and not empty
			v, ok := s.plain()
			return ok && len(v) > 0
		}
	})
	// The head (schema, tenant, collection, doc, version) is required, as
	// events.DecodeChange requires it.
	if !ok || seen&0b11111 != 0b11111 || c.version == 0 {
		return false
	}
	s.ws()
	if s.i != len(s.b) {
		return false
	}
	byName := func(a, b []byte) int { return bytes.Compare(a, b) }
	slices.SortFunc(c.fields, func(a, b rawField) int { return byName(a.name, b.name) })
	slices.SortFunc(c.clocks, func(a, b rawClock) int { return byName(a.name, b.name) })
	for i := 1; i < len(c.fields); i++ {
		if bytes.Equal(c.fields[i].name, c.fields[i-1].name) {
			return false
		}
	}
	for i := 1; i < len(c.clocks); i++ {
		if bytes.Equal(c.clocks[i].name, c.clocks[i-1].name) {
			return false
		}
	}
	return true
}

// boolean reads true or false.
func (s *scanner) boolean(dst *bool) bool {
	for _, lit := range []string{"true", "false"} {
		if bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
			s.i += len(lit)
			*dst = lit == "true"
			return true
		}
	}
	return false
}

// plainInto reads a plain string (scanner.plain) into dst, aliasing b.
func (s *scanner) plainInto(dst *[]byte) bool {
	v, ok := s.plain()
	*dst = v
	return ok
}

// strictHLC reads {"wall": int64, "logical": uint32}, each at most once
// and nothing else.
func (s *scanner) strictHLC(h *events.HLC) bool { return s.hlcOf(h, true) }

func appendHLC(b []byte, h events.HLC) []byte {
	b = binary.AppendUvarint(b, uint64(h.Wall))
	return binary.AppendUvarint(b, uint64(h.Logical))
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendID(b, id []byte) []byte {
	if len(id) == ulid.EncodedSize {
		var u ulid.ULID
		if err := u.UnmarshalText(id); err == nil && isCanonicalULID(u, id) {
			b = append(b, 1)
			return append(b, u[:]...)
		}
	}
	b = append(b, 0)
	return appendBytes(b, id)
}

// isCanonicalULID reports whether id is how u prints (upper case, no
// overflow), so the 16 bytes give id back.
func isCanonicalULID(u ulid.ULID, id []byte) bool {
	var buf [ulid.EncodedSize]byte
	if err := u.MarshalTextTo(buf[:]); err != nil {
		return false
	}
	return bytes.Equal(buf[:], id)
}

// errShortRecord: a compact record ended early.
var errShortRecord = errors.New("short synced record")

// syncedReader reads a compact record.
type syncedReader struct {
	b   []byte
	err error
}

func (r *syncedReader) byte() byte {
	if r.err != nil || len(r.b) < 1 {
		r.err = errShortRecord
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *syncedReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShortRecord
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *syncedReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil || uint64(len(r.b)) < n {
		r.err = errShortRecord
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *syncedReader) hlc() events.HLC {
	return events.HLC{Wall: int64(r.uvarint()), Logical: uint32(r.uvarint())}
}

func (r *syncedReader) id() string {
	switch r.byte() {
	case 0:
		return string(r.bytes())
	case 1:
		if r.err != nil || len(r.b) < 16 {
			r.err = errShortRecord
			return ""
		}
		var u ulid.ULID
		copy(u[:], r.b[:16])
		r.b = r.b[16:]
		return u.String()
	default:
		if r.err == nil {
			r.err = errors.New("bad id tag in synced record")
		}
		return ""
	}
}

// decodeCompact reads a compact record (after its format byte) of the
// document key at version into a projection.Doc of tenant. The Doc owns
// its memory.
func decodeCompact(tenant string, key []byte, version uint64, b []byte) (projection.Doc, error) {
	collection, id := splitDocKey(key)
	r := &syncedReader{b: b}
	flags := r.byte()
	d := projection.Doc{Tenant: tenant, Collection: collection, ID: id, Version: version,
		Deleted: flags&flagDeleted != 0, AsWritten: flags&flagAsWritten != 0}
	d.HLC = r.hlc()
	d.Event, d.Client, d.Device = r.id(), r.id(), r.id()
	d.Seq = r.uvarint()
	if n := r.uvarint(); n > 0 && r.err == nil {
		d.Fields = make(events.Fields, min(n, 1024))
		for range n {
			name, v := r.bytes(), r.bytes()
			if r.err != nil {
				break
			}
			d.Fields[string(name)] = json.RawMessage(append([]byte(nil), v...))
		}
	}
	if n := r.uvarint(); n > 0 && r.err == nil {
		d.Clocks = make(map[string]events.FieldClock, min(n, 1024))
		for range n {
			name := string(r.bytes())
			c := events.FieldClock{Version: d.Version, HLC: d.HLC, Client: d.Client}
			if r.byte() == 1 {
				c.Version = r.uvarint()
				c.HLC = r.hlc()
				c.Client = r.id()
			}
			if r.err != nil {
				break
			}
			d.Clocks[name] = c
		}
	}
	if flags&flagConflicts != 0 {
		cs := r.bytes()
		if r.err == nil {
			if err := json.Unmarshal(cs, &d.Conflicts); err != nil {
				return projection.Doc{}, fmt.Errorf("read synced %q: conflicts: %w", key, err)
			}
		}
	}
	if r.err != nil {
		return projection.Doc{}, fmt.Errorf("read synced %q: %w", key, r.err)
	}
	return d, nil
}
