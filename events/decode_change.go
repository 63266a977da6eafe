package events

import (
	"math"
	"unicode/utf8"
)

// The fast path of DecodeChange. It parses the common change in the
// canonical form EncodeChange (and the projector's own encoder, which writes
// the same bytes) writes and nothing else: one JSON object, no whitespace
// between its tokens (a field's value may hold some: it is kept as written),
// every key exactly as Change's and FieldClock's struct tags spell it and at
// most once, every value of its field's JSON type, never null (a field's
// value may be null), numbers that are unsigned integers within their Go
// type. It declines a change carrying "conflicts" or "settled" (rare, and
// deep) whatever their value. On any other input it declines and the strict
// decoder decides, so that encoding/json's own rules (keys matched
// case-insensitively, the last duplicate winning, null leaving the zero
// value) and its errors stay the only ones. On what it accepts it must
// return a Change deep-equal to the strict decoder's:
// FuzzDecodeChangeFastPath checks it.

// The string fields of a Change, as indexes into decodeChangeFast's spans;
// the clocks' names and clients follow them.
const (
	chgTenant = iota
	chgCollection
	chgDoc
	chgEvent
	chgClient
	chgDevice
	numChgStrs
)

// Bits of a change's keys seen, to decline a duplicate.
const (
	chgSeenSchema = 1 << (numChgStrs + iota)
	chgSeenVersion
	chgSeenDeleted
	chgSeenFields
	chgSeenHLC
	chgSeenClocks
	chgSeenSeq
	chgSeenAsWritten
	chgSeenLeft
)

// clockSpan is one entry of a change's clocks: its name, its client's span
// and the rest of its value.
type clockSpan struct {
	key, client strSpan
	clock       FieldClock
}

// decodeChangeFast parses the canonical form of a change (see above)
// without checking it. It reports false for any input it does not handle.
// The change it returns shares no memory with data; its strings share one
// allocation, and so do its fields' raw values.
func decodeChangeFast(data []byte) (*Change, bool) {
	if !utf8.Valid(data) {
		return nil, false
	}
	p := fastParser{data: data}
	var (
		c       Change
		strs    [numChgStrs]strSpan
		seen    uint32
		fieldsA [16]fieldSpan
		fields  = fieldsA[:0]
		clocksA [16]clockSpan
		clocks  = clocksA[:0]
	)
	if !p.consume('{') {
		return nil, false
	}
	if !p.consume('}') {
		for {
			key, ok := p.plainString()
			if !ok || !p.consume(':') {
				return nil, false
			}
			var bit uint32
			switch string(key) {
			case "schema":
				bit = chgSeenSchema
				n, ok := p.uint(math.MaxInt)
				if !ok {
					return nil, false
				}
				c.Schema = int(n)
			case "version":
				bit = chgSeenVersion
				if c.Version, ok = p.uint(math.MaxUint64); !ok {
					return nil, false
				}
			case "seq":
				bit = chgSeenSeq
				if c.Seq, ok = p.uint(math.MaxUint64); !ok {
					return nil, false
				}
			case "deleted":
				bit = chgSeenDeleted
				if c.Deleted, ok = p.bool(); !ok {
					return nil, false
				}
			case "as_written":
				bit = chgSeenAsWritten
				if c.AsWritten, ok = p.bool(); !ok {
					return nil, false
				}
			case "left":
				bit = chgSeenLeft
				if c.Left, ok = p.bool(); !ok {
					return nil, false
				}
			case "hlc":
				bit = chgSeenHLC
				if c.HLC, ok = p.hlc(); !ok {
					return nil, false
				}
			case "fields":
				bit = chgSeenFields
				if fields, ok = p.fields(fields); !ok {
					return nil, false
				}
			case "clocks":
				bit = chgSeenClocks
				if clocks, ok = p.clocks(clocks); !ok {
					return nil, false
				}
			default:
				i := chgStrIndex(key)
				if i < 0 {
					return nil, false // an unknown key, or conflicts or settled
				}
				bit = 1 << i
				if strs[i], ok = p.string(); !ok {
					return nil, false
				}
			}
			if seen&bit != 0 {
				return nil, false
			}
			seen |= bit
			if p.consume(',') {
				continue
			}
			if p.consume('}') {
				break
			}
			return nil, false
		}
	}
	if p.pos != len(data) {
		return nil, false
	}
	return c.fill(data, &strs, fields, seen&chgSeenFields != 0, clocks, seen&chgSeenClocks != 0)
}

func chgStrIndex(key []byte) int {
	switch string(key) {
	case "tenant":
		return chgTenant
	case "collection":
		return chgCollection
	case "doc":
		return chgDoc
	case "event":
		return chgEvent
	case "client":
		return chgClient
	case "device":
		return chgDevice
	}
	return -1
}

// fill sets c's strings, fields and clocks from their spans in data, in two
// allocations besides the maps: one string for every name and one byte
// slice for every raw value. It declines a duplicate field or clock name and
// an escape it does not decode the way encoding/json does.
func (c *Change) fill(data []byte, fixed *[numChgStrs]strSpan, fields []fieldSpan, hasFields bool, clocks []clockSpan, hasClocks bool) (*Change, bool) {
	var strsA [numChgStrs + 2*16]strSpan
	strs := append(strsA[:0], fixed[:]...)
	for _, k := range clocks {
		strs = append(strs, k.key, k.client)
	}
	all, ok := decodeSpans(data, strs, fields)
	if !ok {
		return nil, false
	}
	c.Tenant = strs[chgTenant].in(all)
	c.Collection = strs[chgCollection].in(all)
	c.Doc = strs[chgDoc].in(all)
	c.Event = strs[chgEvent].in(all)
	c.Client = strs[chgClient].in(all)
	c.Device = strs[chgDevice].in(all)
	if hasFields {
		if c.Fields, ok = rawFields(data, all, fields); !ok {
			return nil, false
		}
	}
	if hasClocks {
		c.Clocks = make(map[string]FieldClock, len(clocks))
		for i, k := range clocks {
			name := strs[numChgStrs+2*i].in(all)
			if _, dup := c.Clocks[name]; dup {
				return nil, false // encoding/json keeps the last; leave that to it
			}
			k.clock.Client = strs[numChgStrs+2*i+1].in(all)
			c.Clocks[name] = k.clock
		}
	}
	return c, true
}

// bool reads true or false.
func (p *fastParser) bool() (bool, bool) {
	switch {
	case p.literal("true"):
		return true, true
	case p.literal("false"):
		return false, true
	}
	return false, false
}

// clocks reads an object of field clocks, appending one span per entry.
func (p *fastParser) clocks(cs []clockSpan) ([]clockSpan, bool) {
	if !p.consume('{') {
		return cs, false
	}
	if p.consume('}') {
		return cs, true
	}
	for {
		key, ok := p.string()
		if !ok || !p.consume(':') {
			return cs, false
		}
		k, ok := p.clock()
		if !ok {
			return cs, false
		}
		k.key = key
		cs = append(cs, k)
		if p.consume(',') {
			continue
		}
		return cs, p.consume('}')
	}
}

// clock reads {"version":V,"hlc":H,"client":C}, every key optional, in any
// order, each at most once.
func (p *fastParser) clock() (clockSpan, bool) {
	var k clockSpan
	if !p.consume('{') {
		return k, false
	}
	if p.consume('}') {
		return k, true
	}
	var seenVersion, seenHLC, seenClient bool
	for {
		key, ok := p.plainString()
		if !ok || !p.consume(':') {
			return k, false
		}
		switch string(key) {
		case "version":
			if k.clock.Version, ok = p.uint(math.MaxUint64); !ok || seenVersion {
				return k, false
			}
			seenVersion = true
		case "hlc":
			if k.clock.HLC, ok = p.hlc(); !ok || seenHLC {
				return k, false
			}
			seenHLC = true
		case "client":
			if k.client, ok = p.string(); !ok || seenClient {
				return k, false
			}
			seenClient = true
		default:
			return k, false
		}
		if p.consume(',') {
			continue
		}
		return k, p.consume('}')
	}
}
