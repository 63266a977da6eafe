package events

import (
	"bytes"
	"encoding/json"
	"unicode"
	"unicode/utf8"
)

// Limits bound what an event may carry. The zero value of any field means its
// default (see DefaultLimits).
type Limits struct {
	MaxNameBytes      int // tenant, collection and client names
	MaxDocIDBytes     int // document ids
	MaxFieldNameBytes int // a field's name
	MaxFields         int // fields in one event
	MaxFieldsBytes    int // the encoded fields of one event together
	MaxDepth          int // nesting of arrays and objects within a field value
}

// DefaultLimits are the limits used where none are configured. They keep one
// event well under NATS's default 1 MiB payload.
var DefaultLimits = Limits{
	MaxNameBytes:      128,
	MaxDocIDBytes:     512,
	MaxFieldNameBytes: 256,
	MaxFields:         1000,
	MaxFieldsBytes:    256 << 10,
	MaxDepth:          32,
}

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	if l.MaxNameBytes > 0 {
		d.MaxNameBytes = l.MaxNameBytes
	}
	if l.MaxDocIDBytes > 0 {
		d.MaxDocIDBytes = l.MaxDocIDBytes
	}
	if l.MaxFieldNameBytes > 0 {
		d.MaxFieldNameBytes = l.MaxFieldNameBytes
	}
	if l.MaxFields > 0 {
		d.MaxFields = l.MaxFields
	}
	if l.MaxFieldsBytes > 0 {
		d.MaxFieldsBytes = l.MaxFieldsBytes
	}
	if l.MaxDepth > 0 {
		d.MaxDepth = l.MaxDepth
	}
	return d
}

// ValidateName checks a tenant, collection or client name: non-empty, valid
// UTF-8, no control characters, at most max bytes. field names the field in
// the error.
func ValidateName(field, name string, max int) error {
	switch {
	case name == "":
		return invalid(field, "must not be empty")
	case len(name) > max:
		return invalid(field, "is %d bytes, limit %d", len(name), max)
	case !utf8.ValidString(name):
		return invalid(field, "is not valid UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return invalid(field, "contains control character %U", r)
		}
	}
	return nil
}

// MaxSafeInteger is 2^53-1, the largest integer a JSON reader that holds
// numbers as IEEE doubles (JavaScript's, for one) keeps exactly. Every
// integer of the protocol stays at or below it.
const MaxSafeInteger = 1<<53 - 1

// Validate checks every field of e against the contract and limits l (zero
// fields of l take DefaultLimits). It returns a *FieldError naming the first
// problem found.
func (e *Event) Validate(l Limits) error {
	l = l.WithDefaults()
	if e.Schema != SchemaVersion {
		return &FieldError{Field: "schema", Reason: schemaReason(e.Schema), Err: ErrUnknownSchema}
	}
	if _, err := ParseID(e.ID); err != nil {
		return invalid("id", "not a ULID: %v", err)
	}
	if err := ValidateName("tenant", e.Tenant, l.MaxNameBytes); err != nil {
		return err
	}
	if err := ValidateName("collection", e.Collection, l.MaxNameBytes); err != nil {
		return err
	}
	if err := ValidateName("doc", e.Doc, l.MaxDocIDBytes); err != nil {
		return err
	}
	if err := ValidateName("client", e.Client, l.MaxNameBytes); err != nil {
		return err
	}
	if e.Device != "" {
		if err := ValidateName("device", e.Device, l.MaxNameBytes); err != nil {
			return err
		}
	}
	if e.Seq == 0 {
		return invalid("seq", "must be at least 1")
	}
	if e.Seq > MaxSafeInteger {
		return invalid("seq", "%d is above 2^53-1, the largest integer every JSON reader keeps exactly", e.Seq)
	}
	if e.BaseVersion > MaxSafeInteger {
		return invalid("base_version", "%d is above 2^53-1, the largest integer every JSON reader keeps exactly", e.BaseVersion)
	}
	if e.HLC.Wall > MaxSafeInteger {
		return invalid("hlc", "wall %d is above 2^53-1, the largest integer every JSON reader keeps exactly", e.HLC.Wall)
	}
	if e.HLC.IsZero() || e.HLC.Wall < 0 {
		return invalid("hlc", "must be a positive timestamp")
	}
	switch e.Op {
	case OpPut:
	case OpPatch:
		if len(e.Fields) == 0 {
			return invalid("fields", "a patch must change at least one field")
		}
	case OpDelete:
		if len(e.Fields) != 0 {
			return invalid("fields", "a delete carries no fields")
		}
	case OpResolve:
		if _, err := ParseID(e.Resolves); err != nil {
			return invalid("resolves", "a resolve must name the conflict it settles: %v", err)
		}
	default:
		return invalid("op", "unknown op %q (want put, patch, delete or resolve)", e.Op)
	}
	if e.Op != OpResolve && e.Resolves != "" {
		return invalid("resolves", "only a resolve names a conflict")
	}
	if e.After != "" {
		if _, err := ParseID(e.After); err != nil {
			return invalid("after", "not a ULID: %v", err)
		}
		if e.After == e.ID {
			return invalid("after", "an event cannot follow itself")
		}
	}
	return ValidateFields(e.Fields, e.Op == OpPatch, l)
}

// ValidateFields checks field names and values against l. allowNull permits
// JSON null values (a patch's way to remove a field).
func ValidateFields(fields Fields, allowNull bool, l Limits) error {
	l = l.WithDefaults()
	if len(fields) > l.MaxFields {
		return invalid("fields", "has %d fields, limit %d", len(fields), l.MaxFields)
	}
	total := 0
	for name, v := range fields {
		if err := ValidateName("fields", name, l.MaxFieldNameBytes); err != nil {
			fe := err.(*FieldError)
			fe.Reason = "field name " + fe.Reason
			return fe
		}
		path := "fields." + name
		total += len(name) + len(v)
		if total > l.MaxFieldsBytes {
			return invalid("fields", "encode to more than %d bytes", l.MaxFieldsBytes)
		}
		if len(v) == 0 || !json.Valid(v) {
			return invalid(path, "is not valid JSON")
		}
		if !allowNull && bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			return invalid(path, "null is only allowed in a patch (it removes the field)")
		}
		if d := jsonDepth(v); d > l.MaxDepth {
			return invalid(path, "nests %d levels deep, limit %d", d, l.MaxDepth)
		}
	}
	return nil
}

// jsonDepth returns the maximum nesting of arrays and objects in valid JSON v.
func jsonDepth(v []byte) int {
	depth, maxDepth, inString, escaped := 0, 0, false, false
	for _, c := range v {
		switch {
		case escaped:
			escaped = false
		case inString:
			switch c {
			case '\\':
				escaped = true
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			maxDepth = max(maxDepth, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return maxDepth
}
