package keys_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ebbsync/ebb/deploy/keys"
)

func mustCipher(t *testing.T, k keys.Key, purpose string) *keys.Cipher {
	t.Helper()
	c, err := k.Cipher(purpose)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCipher_SealOpen(t *testing.T) {
	var k, other keys.Key
	other[0] = 1
	c := mustCipher(t, k, keys.PurposeClient)
	plain := []byte(`{"secret":"value"}`)
	sealed := c.SealValue([]byte("b"), []byte("k1"), plain)
	if len(sealed) != len(plain)+keys.Overhead || bytes.Contains(sealed, []byte("secret")) {
		t.Fatalf("sealed %q", sealed)
	}
	if again := c.SealValue([]byte("b"), []byte("k1"), plain); bytes.Equal(again, sealed) {
		t.Fatal("two seals of one value are equal: nonce not random")
	}
	got, err := c.OpenValue([]byte("b"), []byte("k1"), sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %q, %v", got, err)
	}
	tampered := append([]byte(nil), sealed...)
	tampered[len(tampered)-1] ^= 1
	for name, open := range map[string]func() ([]byte, error){
		"other key": func() ([]byte, error) {
			return mustCipher(t, other, keys.PurposeClient).OpenValue([]byte("b"), []byte("k1"), sealed)
		},
		"other purpose": func() ([]byte, error) {
			return mustCipher(t, k, keys.PurposeView).OpenValue([]byte("b"), []byte("k1"), sealed)
		},
		"moved key":    func() ([]byte, error) { return c.OpenValue([]byte("b"), []byte("k2"), sealed) },
		"moved bucket": func() ([]byte, error) { return c.OpenValue([]byte("b2"), []byte("k1"), sealed) },
		"tampered":     func() ([]byte, error) { return c.OpenValue([]byte("b"), []byte("k1"), tampered) },
		"short":        func() ([]byte, error) { return c.OpenValue([]byte("b"), []byte("k1"), sealed[:5]) },
	} {
		if _, err := open(); !errors.Is(err, keys.ErrDecrypt) {
			t.Errorf("%s: %v, want ErrDecrypt", name, err)
		}
	}
	var none *keys.Cipher
	if v := none.SealValue([]byte("b"), []byte("k"), plain); !bytes.Equal(v, plain) {
		t.Fatal("nil cipher changed the value")
	}
}

func TestCheckStore(t *testing.T) {
	var k, other keys.Key
	other[0] = 1
	c, c2 := mustCipher(t, k, keys.PurposeView), mustCipher(t, other, keys.PurposeView)
	check, err := keys.CheckStore(c, nil, false)
	if err != nil || check == nil {
		t.Fatalf("new encrypted store: %v, %q", check, err)
	}
	tests := []struct {
		name    string
		c       *keys.Cipher
		stored  []byte
		existed bool
		wantErr error
	}{
		{name: "plaintext, no key", existed: true},
		{name: "new, no key"},
		{name: "right key", c: c, stored: check, existed: true},
		{name: "other key", c: c2, stored: check, existed: true, wantErr: keys.ErrWrongKey},
		{name: "no key on encrypted", stored: check, existed: true, wantErr: keys.ErrWrongKey},
		{name: "key on plaintext", c: c, existed: true, wantErr: keys.ErrWrongKey},
		{name: "garbage check", c: c, stored: []byte("garbage"), existed: true, wantErr: keys.ErrWrongKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := keys.CheckStore(tt.c, tt.stored, tt.existed)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if w != nil {
				t.Fatalf("asked to write a check value on an existing store")
			}
		})
	}
}
