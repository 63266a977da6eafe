package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"
)

// Payloads are JSON objects (UTF-8, RFC 8259). Encoding is deterministic:
// object keys of Fields are sorted and raw values compacted, so equal values
// encode to equal bytes.

// EncodeEvent returns the wire form of e. It does not validate e.
func EncodeEvent(e *Event) ([]byte, error) { return encode("event", e) }

// EncodeChange returns the wire form of c.
func EncodeChange(c *Change) ([]byte, error) { return encode("change", c) }

// EncodeReceipt returns the wire form of r.
func EncodeReceipt(r *Receipt) ([]byte, error) { return encode("receipt", r) }

// EncodeDeadLetter returns the wire form of d.
func EncodeDeadLetter(d *DeadLetter) ([]byte, error) { return encode("dead letter", d) }

func encode(what string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", what, err)
	}
	return b, nil
}

// DecodeEvent parses and validates an event against limits l (zero fields
// take DefaultLimits). Any error names the field at fault and wraps
// ErrInvalid or ErrUnknownSchema.
//
// It accepts exactly the payloads the strict decoder accepts (encoding/json
// with unknown fields refused, after a UTF-8 check; keys matched as
// encoding/json matches them) and returns the same Event or the same error.
// Fields' values are raw JSON as written, copied: data may be reused once it
// returns. EncodeEvent's output takes a faster parser, which declines
// anything it does not handle and leaves it to the strict decoder.
func DecodeEvent(data []byte, l Limits) (*Event, error) {
	e, ok := decodeEventFast(data)
	if !ok {
		var err error
		if e, err = decodeEventStrict(data); err != nil {
			return nil, err
		}
	}
	if err := e.Validate(l); err != nil {
		return nil, err
	}
	return e, nil
}

// decodeEventStrict is the reference parse of an event: the strict
// encoding/json decoder (decodeStrict). It does not validate.
func decodeEventStrict(data []byte) (*Event, error) {
	var e Event
	if err := decodeStrict(data, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// DecodeChange parses a change and checks its required fields (schema,
// tenant, collection, doc, a version of at least 1). Any error names the
// field at fault and wraps ErrInvalid or ErrUnknownSchema.
//
// It accepts exactly the payloads the strict decoder accepts (encoding/json
// with unknown fields refused, after a UTF-8 check; keys matched as
// encoding/json matches them) and returns the same Change or the same error.
// Fields' values are raw JSON as written, copied: data may be reused once it
// returns. The common change EncodeChange writes takes a faster parser, which
// declines anything it does not handle and leaves it to the strict decoder.
func DecodeChange(data []byte) (*Change, error) {
	c, ok := decodeChangeFast(data)
	if !ok {
		var err error
		if c, err = decodeChangeStrict(data); err != nil {
			return nil, err
		}
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return c, nil
}

// decodeChangeStrict is the reference parse of a change: the strict
// encoding/json decoder (decodeStrict). It does not check the change.
func decodeChangeStrict(data []byte) (*Change, error) {
	var c Change
	if err := decodeStrict(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// check is what DecodeChange requires of a parsed change, whichever parser
// read it.
func (c *Change) check() error {
	if err := checkHeader(c.Schema, c.Tenant, c.Collection, c.Doc); err != nil {
		return err
	}
	if c.Version == 0 {
		return invalid("version", "must be at least 1")
	}
	return nil
}

// DecodeReceipt parses a receipt and checks its required fields.
func DecodeReceipt(data []byte) (*Receipt, error) {
	var r Receipt
	if err := decodeStrict(data, &r); err != nil {
		return nil, err
	}
	if r.Schema != SchemaVersion {
		return nil, &FieldError{Field: "schema", Reason: schemaReason(r.Schema), Err: ErrUnknownSchema}
	}
	if r.Event == "" {
		return nil, invalid("event", "must not be empty")
	}
	if r.Tenant == "" {
		return nil, invalid("tenant", "must not be empty")
	}
	if r.Client == "" {
		return nil, invalid("client", "must not be empty")
	}
	if !r.Outcome.Valid() {
		return nil, invalid("outcome", "unknown outcome %q", r.Outcome)
	}
	return &r, nil
}

// DecodeDeadLetter parses a dead letter.
func DecodeDeadLetter(data []byte) (*DeadLetter, error) {
	var d DeadLetter
	if err := decodeStrict(data, &d); err != nil {
		return nil, err
	}
	if d.Schema != SchemaVersion {
		return nil, &FieldError{Field: "schema", Reason: schemaReason(d.Schema), Err: ErrUnknownSchema}
	}
	if d.Reason == "" {
		return nil, invalid("reason", "must not be empty")
	}
	return &d, nil
}

func checkHeader(schema int, tenant, collection, doc string) error {
	if schema != SchemaVersion {
		return &FieldError{Field: "schema", Reason: schemaReason(schema), Err: ErrUnknownSchema}
	}
	for _, f := range [...]struct{ name, v string }{{"tenant", tenant}, {"collection", collection}, {"doc", doc}} {
		if f.v == "" {
			return invalid(f.name, "must not be empty")
		}
	}
	return nil
}

func schemaReason(v int) string {
	return fmt.Sprintf("version %d, this code reads version %d", v, SchemaVersion)
}

// decodeStrict decodes one JSON object into v, refusing invalid UTF-8,
// unknown fields and trailing data. Errors name the field.
func decodeStrict(data []byte, v any) error {
	if !utf8.Valid(data) {
		return invalid("payload", "is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return diagnose(data, v, err)
	}
	if _, err := dec.Token(); err == nil {
		return invalid("payload", "trailing data after the JSON object")
	}
	return nil
}

// diagnose turns a decoding failure into a *FieldError. It runs only on the
// error path, so the fast path parses once.
func diagnose(data []byte, v any, err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return invalid("payload", "malformed JSON at byte %d: %v", syn.Offset, err)
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(data, &raw) != nil {
		return invalid("payload", "not a JSON object: %v", err)
	}
	var schema int
	if s, ok := raw["schema"]; ok && json.Unmarshal(s, &schema) == nil && schema != SchemaVersion {
		return &FieldError{Field: "schema", Reason: schemaReason(schema), Err: ErrUnknownSchema}
	}
	if k, ok := firstUnknownKey(data, jsonFieldNames(reflect.TypeOf(v).Elem())); ok {
		return invalid(k, "unknown field")
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) && typ.Field != "" {
		return invalid(typ.Field, "has JSON %s, want %s", typ.Value, typ.Type)
	}
	return invalid("payload", "%v", err)
}

// firstUnknownKey returns the first top-level key of the JSON object data,
// in the order written, that known does not hold (knownKey: encoding/json
// takes a key in another case for the field). The order makes the error
// the same on every call; data must already have parsed as an object.
func firstUnknownKey(data []byte, known map[string]bool) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", false
		}
		k, _ := t.(string)
		if !knownKey(known, k) {
			return k, true
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", false
		}
	}
	return "", false
}

// knownKey reports whether encoding/json matches key k to a name of known:
// exactly or, as it does, without regard to case.
func knownKey(known map[string]bool, k string) bool {
	if known[k] {
		return true
	}
	for name := range known {
		if strings.EqualFold(name, k) {
			return true
		}
	}
	return false
}

func jsonFieldNames(t reflect.Type) map[string]bool {
	names := make(map[string]bool, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" {
			name = t.Field(i).Name
		}
		names[name] = true
	}
	return names
}
