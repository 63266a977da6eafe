package events

import (
	"errors"
	"strings"
	"testing"
)

// TestDecode_NamesFirstUnknownField: with several unknown fields, the error
// names the first one as written, the same on every call (it once named
// whichever a map iteration met first).
func TestDecode_NamesFirstUnknownField(t *testing.T) {
	good, _ := EncodeEvent(ptr(validEvent()))
	var extra strings.Builder
	for _, k := range []string{"zeta", "alpha", "mid", "beta", "omega", "gamma", "delta", "kappa"} {
		extra.WriteString(`,"` + k + `":{"nested":[1,{"schema":2}]}`)
	}
	data := []byte(strings.Replace(string(good), `"schema":1`, `"schema":1`+extra.String(), 1))
	for range 50 {
		_, err := DecodeEvent(data, Limits{})
		var fe *FieldError
		if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) || fe.Field != "zeta" {
			t.Fatalf("DecodeEvent: %v, want ErrInvalid naming the first unknown field, \"zeta\"", err)
		}
		if _, err := DecodeReceipt(data); !errors.As(err, &fe) || fe.Field != "zeta" {
			t.Fatalf("DecodeReceipt: %v, want the first unknown field, \"zeta\"", err)
		}
	}
}
