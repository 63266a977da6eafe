package events

import (
	"errors"
	"fmt"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrInvalid marks input that breaks the contract: a malformed payload, a
	// missing or out-of-range field, a name over its limit. It is always
	// wrapped in a *FieldError naming what was wrong.
	ErrInvalid = errors.New("invalid")
	// ErrUnknownSchema marks a payload whose schema version this code does not know.
	ErrUnknownSchema = errors.New("unknown schema version")
	// ErrClockDrift marks a hybrid logical clock reading further in the future
	// than the allowed drift.
	ErrClockDrift = errors.New("clock too far in the future")
	// ErrStreamMismatch marks an existing stream whose configuration conflicts
	// with ebb's and cannot be updated in place.
	ErrStreamMismatch = errors.New("stream configuration mismatch")
)

// FieldError reports which field of an input was wrong and why. It unwraps to
// ErrInvalid (or ErrUnknownSchema for the schema field) and to the cause.
type FieldError struct {
	Field  string // JSON name of the field, e.g. "doc" or "fields.title"
	Reason string // what is wrong, in words
	Err    error  // sentinel: ErrInvalid or ErrUnknownSchema
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: field %q: %s", e.Err, e.Field, e.Reason)
}

// Unwrap returns the sentinel.
func (e *FieldError) Unwrap() error { return e.Err }

func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...), Err: ErrInvalid}
}
