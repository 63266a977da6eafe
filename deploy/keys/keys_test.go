package keys_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/deploy/keys"
)

func writeKeyFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const hexKey = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

func TestOpen_HexKey(t *testing.T) {
	dir := t.TempDir()
	k, err := keys.Open(writeKeyFile(t, hexKey+"\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range k {
		if k[i] != byte(i) {
			t.Fatalf("key byte %d = %d, want the hex digits", i, k[i])
		}
	}
	if _, err := os.Stat(filepath.Join(dir, keys.SaltFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a hex key created a salt file (err %v)", err)
	}
}

func TestOpen_PassphraseStableWithSalt(t *testing.T) {
	dir := t.TempDir()
	kf := writeKeyFile(t, "correct horse battery staple\n")
	k1, err := keys.Open(kf, dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := keys.Open(kf, dir)
	if err != nil {
		t.Fatalf("second open: %v", err)
	}
	if k1 != k2 {
		t.Fatal("same passphrase and salt gave different keys")
	}
	// Another data dir has another salt, hence another key.
	k3, err := keys.Open(kf, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if k3 == k1 {
		t.Fatal("two data dirs derived the same key from one passphrase (salt not random?)")
	}
}

func TestOpen_WrongKeyRefused(t *testing.T) {
	tests := []struct {
		name, first, second string
	}{
		{name: "hex then other hex", first: hexKey, second: strings.Repeat("ab", 32)},
		{name: "passphrase then other passphrase", first: "one", second: "two"},
		{name: "hex then passphrase", first: hexKey, second: "one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := keys.Open(writeKeyFile(t, tt.first), dir); err != nil {
				t.Fatal(err)
			}
			_, err := keys.Open(writeKeyFile(t, tt.second), dir)
			if !errors.Is(err, keys.ErrWrongKey) {
				t.Fatalf("open with another key: %v, want ErrWrongKey", err)
			}
			if err := keys.CheckNoKey(dir); !errors.Is(err, keys.ErrWrongKey) {
				t.Fatalf("CheckNoKey on an encrypted dir: %v, want ErrWrongKey", err)
			}
		})
	}
}

func TestOpen_BadKeyFile(t *testing.T) {
	for name, path := range map[string]string{
		"empty":   writeKeyFile(t, " \n"),
		"missing": filepath.Join(t.TempDir(), "nope"),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := keys.Open(path, t.TempDir()); !errors.Is(err, keys.ErrBadKeyFile) {
				t.Fatalf("err = %v, want ErrBadKeyFile", err)
			}
		})
	}
	if err := keys.CheckNoKey(t.TempDir()); err != nil {
		t.Fatalf("CheckNoKey on a fresh dir: %v", err)
	}
}

func TestKey_DeriveIndependent(t *testing.T) {
	var k keys.Key
	a, b := k.Derive("nats-jetstream"), k.Derive("bolt")
	if len(a) != 32 || bytes.Equal(a, b) {
		t.Fatalf("subkeys %x and %x", a, b)
	}
}
