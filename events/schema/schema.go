// Package schema holds the JSON Schemas (draft 2020-12) of ebb's payloads,
// the machine-readable half of events/PROTOCOL.md: event, change, receipt
// and dead letter. A client written in another language can validate what
// it sends and receives against the same files (events/schema/*.json);
// ebb's own tests validate every payload they see with Validate.
//
// The schemas state the shape: fields, types, required and optional
// members, the 53-bit bound on integers, the ops and outcomes. Rules that
// need more than the shape (name byte limits after token decoding, field
// depth, the 256 KiB fields budget) are the Go decoders' (events.DecodeEvent
// and friends) and PROTOCOL.md's.
package schema

import (
	"bytes"
	"embed"
	"fmt"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Kind names one payload schema.
type Kind string

// The payload kinds.
const (
	Event      Kind = "event"
	Change     Kind = "change"
	Receipt    Kind = "receipt"
	DeadLetter Kind = "dead_letter"
)

//go:embed *.schema.json
var files embed.FS

var (
	once     sync.Once
	compiled map[Kind]*jsonschema.Schema
	errLoad  error
)

func load() {
	c := jsonschema.NewCompiler()
	compiled = map[Kind]*jsonschema.Schema{}
	for _, k := range []Kind{Event, Change, Receipt, DeadLetter} {
		name := string(k) + ".schema.json"
		b, err := files.ReadFile(name)
		if err != nil {
			errLoad = fmt.Errorf("read schema %s: %w", name, err)
			return
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			errLoad = fmt.Errorf("parse schema %s: %w", name, err)
			return
		}
		if err := c.AddResource(name, doc); err != nil {
			errLoad = fmt.Errorf("add schema %s: %w", name, err)
			return
		}
		s, err := c.Compile(name)
		if err != nil {
			errLoad = fmt.Errorf("compile schema %s: %w", name, err)
			return
		}
		compiled[k] = s
	}
}

// Validate checks one encoded payload of kind k against its schema. The
// error names the schema and every failing location.
func Validate(k Kind, data []byte) error {
	once.Do(load)
	if errLoad != nil {
		return errLoad
	}
	s, ok := compiled[k]
	if !ok {
		return fmt.Errorf("validate: no schema for %q", k)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("validate %s: not JSON: %w", k, err)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("validate %s: %w", k, err)
	}
	return nil
}
