package projection

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// copiedAsIs reports whether json.Marshal writes the field value v as it
// is: what appendRaw may then copy.
func copiedAsIs(v []byte) bool {
	out, err := json.Marshal(json.RawMessage(v))
	return err == nil && string(out) == string(v)
}

// TestPlainScalar_OnlyWhatMarshalCopies: plainScalar accepts a value only
// when it is valid JSON that json.Marshal writes unchanged (so appendRaw
// writes the same bytes with or without it), and it does accept the
// common scalars.
func TestPlainScalar_OnlyWhatMarshalCopies(t *testing.T) {
	accepted := []string{`"x"`, `""`, `"é"`, `"a b"`, `" "`, `0`, `-0`, `12`, `-3.25`, `1e9`, `1E+2`, `2.5e-3`, `true`, `false`, `null`,
		`"` + string([]byte{0xff, 0xfe}) + `"`} // json.Valid does not check UTF-8 either
	for _, v := range accepted {
		if !plainScalar([]byte(v)) {
			t.Errorf("plainScalar(%q) = false, want true", v)
		}
	}
	refused := []string{``, `"`, `"a`, `a"`, `"a"b"`, `"\n"`, `"\\"`, `"\u0041"`, `"<"`, `"&"`, `">"`, "\"\u2028\"", "\"\x01\"",
		`01`, `-`, `1.`, `.5`, `1e`, `1e+`, `+1`, `1 `, ` 1`, `--1`, `0x1`, `nul`, `truee`, `{}`, `[]`, `[1]`, `{"a":1}`, `NaN`, `1_0`}
	for _, v := range refused {
		if plainScalar([]byte(v)) {
			t.Errorf("plainScalar(%q) = true, want false", v)
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte(`"0123456789-+.eE\ntrufalsn{}[] ,:<&>` + "\\\x00\xe2\x80\xa8\xff")
	for range 200000 {
		b := make([]byte, r.IntN(8))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		if plainScalar(b) && !copiedAsIs(b) {
			t.Fatalf("plainScalar(%q) = true, but json.Marshal does not copy it as it is", b)
		}
	}
}

// FuzzPlainScalar: plainScalar never accepts what json.Marshal would not
// copy as it is.
func FuzzPlainScalar(f *testing.F) {
	for _, s := range []string{`"x"`, `-1.5e3`, `true`, `"\\"`, `01`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if plainScalar(b) && !copiedAsIs(b) {
			t.Fatalf("plainScalar(%q) = true, but json.Marshal does not copy it as it is", b)
		}
	})
}
