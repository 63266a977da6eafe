package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode"
	"unicode/utf8"
)

// errAmbiguousJSON is returned by unambiguousJSON.
var errAmbiguousJSON = errors.New("ambiguous JSON")

// unambiguousJSON returns an error wrapping errAmbiguousJSON if data is not
// one JSON value, or if any of its objects, at any depth, holds two keys
// equal under encoding/json's case folding ("a" and "A", "s" and "ſ",
// a key and its escaped spelling, a key twice). encoding/json matches a
// struct field to any such key and keeps the last, so two readers of the
// same bytes (the consumer create responder, JetStream) could otherwise
// see different values if either reorders or re-encodes the keys.
func unambiguousJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var stack []*jsonObject // nil entries are arrays
	values := 0             // top-level values
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %v", errAmbiguousJSON, err)
		}
		var top *jsonObject
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.wantKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				valueDone(stack)
				continue
			}
			key, _ := tok.(string)
			f := foldKey(key)
			if top.keys[f] {
				return fmt.Errorf("%w: key %q appears twice (keys match without regard to letter case)", errAmbiguousJSON, key)
			}
			top.keys[f] = true
			top.wantKey = false
			continue
		}
		if len(stack) == 0 {
			values++
			if values > 1 {
				return fmt.Errorf("%w: more than one value", errAmbiguousJSON)
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &jsonObject{keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, nil)
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone(stack)
		default:
			valueDone(stack)
		}
	}
	if values != 1 || len(stack) > 0 {
		return fmt.Errorf("%w: not one complete JSON value", errAmbiguousJSON)
	}
	return nil
}

// jsonObject is an object unambiguousJSON is inside: the folded keys it
// has seen, and whether its next token is a key (or its end).
type jsonObject struct {
	keys    map[string]bool
	wantKey bool
}

// valueDone notes that a value ended inside the innermost container of
// stack: an object wants its next key.
func valueDone(stack []*jsonObject) {
	if len(stack) > 0 && stack[len(stack)-1] != nil {
		stack[len(stack)-1].wantKey = true
	}
}

// foldKey is encoding/json's folding of an object key (its foldName):
// two keys it matches to the same field fold to the same string.
func foldKey(k string) string {
	out := make([]byte, 0, len(k))
	for i := 0; i < len(k); {
		if c := k[i]; c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			out = append(out, c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(k[i:])
		out = utf8.AppendRune(out, unicode.ToUpper(unicode.ToLower(r)))
		i += n
	}
	return string(out)
}
