package events

import (
	"math"
	"unicode/utf8"
)

// The fast path of DecodeEvent. It parses the canonical form EncodeEvent
// writes and nothing else: one JSON object, no whitespace between its tokens
// (a field's value may hold some: it is kept as written), every key exactly
// as Event's struct tags spell it and at most once, every value of its
// field's JSON type, never null (a field's value may be null), numbers that
// are unsigned integers within their Go type. On any other input it declines
// and the strict decoder decides, so that encoding/json's own rules (keys
// matched case-insensitively, the last duplicate winning, null leaving the
// zero value) and its errors stay the only ones. On what it accepts it must
// return an Event deep-equal to the strict decoder's: FuzzDecodeEventFastPath
// checks it.

// The string fields of an Event, as indexes into decodeEventFast's spans.
const (
	strID = iota
	strTenant
	strCollection
	strDoc
	strOp
	strClient
	strDevice
	strResolves
	strAfter
	numStrs
)

// Bits of the keys seen, to decline a duplicate.
const (
	seenSchema = 1 << (numStrs + iota)
	seenFields
	seenBaseVersion
	seenHLC
	seenSeq
)

// decodeEventFast parses the canonical form of an event (see above) without
// validating it. It reports false for any input it does not handle. The
// event it returns shares no memory with data; its strings share one
// allocation, and so do its fields' raw values.
func decodeEventFast(data []byte) (*Event, bool) {
	if !utf8.Valid(data) {
		return nil, false
	}
	p := fastParser{data: data}
	var (
		e       Event
		strs    [numStrs]strSpan
		seen    uint32
		fieldsA [16]fieldSpan
		fields  = fieldsA[:0]
		hasMap  bool
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
				bit = seenSchema
				n, ok := p.uint(math.MaxInt)
				if !ok {
					return nil, false
				}
				e.Schema = int(n)
			case "base_version":
				bit = seenBaseVersion
				if e.BaseVersion, ok = p.uint(math.MaxUint64); !ok {
					return nil, false
				}
			case "seq":
				bit = seenSeq
				if e.Seq, ok = p.uint(math.MaxUint64); !ok {
					return nil, false
				}
			case "hlc":
				bit = seenHLC
				if e.HLC, ok = p.hlc(); !ok {
					return nil, false
				}
			case "fields":
				bit = seenFields
				if fields, ok = p.fields(fields); !ok {
					return nil, false
				}
				hasMap = true
			default:
				i := strIndex(key)
				if i < 0 {
					return nil, false
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
	return e.fill(data, &strs, fields, hasMap)
}

func strIndex(key []byte) int {
	switch string(key) {
	case "id":
		return strID
	case "tenant":
		return strTenant
	case "collection":
		return strCollection
	case "doc":
		return strDoc
	case "op":
		return strOp
	case "client":
		return strClient
	case "device":
		return strDevice
	case "resolves":
		return strResolves
	case "after":
		return strAfter
	}
	return -1
}

// fill sets e's strings and fields from their spans in data, in two
// allocations besides the map: one string for every name and one byte slice
// for every raw value. It declines a duplicate field name and an escape it
// does not decode the way encoding/json does.
func (e *Event) fill(data []byte, strs *[numStrs]strSpan, fields []fieldSpan, hasMap bool) (*Event, bool) {
	all, ok := decodeSpans(data, strs[:], fields)
	if !ok {
		return nil, false
	}
	e.ID = strs[strID].in(all)
	e.Tenant = strs[strTenant].in(all)
	e.Collection = strs[strCollection].in(all)
	e.Doc = strs[strDoc].in(all)
	e.Op = Op(strs[strOp].in(all))
	e.Client = strs[strClient].in(all)
	e.Device = strs[strDevice].in(all)
	e.Resolves = strs[strResolves].in(all)
	e.After = strs[strAfter].in(all)
	if hasMap {
		if e.Fields, ok = rawFields(data, all, fields); !ok {
			return nil, false
		}
	}
	return e, true
}
