package keys

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/argon2"
)

// Files kept in the data directory.
const (
	SaltFile  = "ebb.key.salt"  // argon2id salt of a passphrase key file
	CheckFile = "ebb.key.check" // HMAC check value of the key in use
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrWrongKey means the key does not match the one the data directory
	// was encrypted with, or a key is missing or extra.
	ErrWrongKey = errors.New("wrong encryption key")
	// ErrBadKeyFile means the key file is empty or unreadable.
	ErrBadKeyFile = errors.New("bad key file")
)

// argon2id parameters (RFC 9106's second recommended option, one thread).
const (
	argonTime    = 3
	argonMemory  = 64 << 10 // KiB
	argonThreads = 1
	saltSize     = 16
)

// Key is a 32-byte encryption key.
type Key [32]byte

// Derive returns a 32-byte subkey of k for purpose (such as
// "nats-jetstream"): HMAC-SHA256(k, "ebb "+purpose). Different purposes
// give independent keys.
func (k Key) Derive(purpose string) []byte {
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte("ebb " + purpose))
	return m.Sum(nil)
}

// Open reads keyFile, derives the key (a passphrase with the salt in dir,
// created if missing), and checks it against CheckFile in dir (written on
// first use). dir is created if missing. A key that differs from the one
// dir was first opened with is an error wrapping ErrWrongKey.
func Open(keyFile, dir string) (Key, error) {
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		return Key{}, fmt.Errorf("%w: %w", ErrBadKeyFile, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Key{}, fmt.Errorf("open key: %w", err)
	}
	k, err := parse(raw, dir)
	if err != nil {
		return Key{}, fmt.Errorf("key file %s: %w", keyFile, err)
	}
	if err := k.check(dir); err != nil {
		return Key{}, fmt.Errorf("key file %s: %w", keyFile, err)
	}
	return k, nil
}

// CheckNoKey returns an error wrapping ErrWrongKey if dir was opened with a
// key before: the data is encrypted and starting without the key must fail.
func CheckNoKey(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, CheckFile)); err == nil {
		return fmt.Errorf("%w: %s holds encrypted data (%s exists); pass the key file", ErrWrongKey, dir, CheckFile)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("check key: %w", err)
	}
	return nil
}

// parse turns the key file's content into a key.
func parse(raw []byte, dir string) (Key, error) {
	text := bytes.TrimSpace(raw)
	if len(text) == 0 {
		return Key{}, fmt.Errorf("%w: empty", ErrBadKeyFile)
	}
	var k Key
	if len(text) == 2*len(k) {
		if n, err := hex.Decode(k[:], text); err == nil && n == len(k) {
			return k, nil
		}
	}
	salt, err := loadSalt(dir)
	if err != nil {
		return Key{}, err
	}
	copy(k[:], argon2.IDKey(text, salt, argonTime, argonMemory, argonThreads, uint32(len(k))))
	return k, nil
}

// loadSalt reads dir's salt, creating it on first use.
func loadSalt(dir string) ([]byte, error) {
	path := filepath.Join(dir, SaltFile)
	salt, err := os.ReadFile(path)
	switch {
	case err == nil && len(salt) == saltSize:
		return salt, nil
	case err == nil:
		return nil, fmt.Errorf("salt %s: %d bytes, want %d", path, len(salt), saltSize)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read salt: %w", err)
	}
	salt = make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("new salt: %w", err)
	}
	if err := writeNew(path, salt); err != nil {
		return nil, fmt.Errorf("write salt: %w", err)
	}
	return salt, nil
}

// check compares k with dir's check value, writing it on first use.
func (k Key) check(dir string) error {
	path := filepath.Join(dir, CheckFile)
	want := k.Derive("key check")
	have, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := writeNew(path, want); err != nil {
			return fmt.Errorf("write key check: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read key check: %w", err)
	case !hmac.Equal(have, want):
		return fmt.Errorf("%w: %s was encrypted with another key", ErrWrongKey, dir)
	}
	return nil
}

// writeNew writes a new file durably: temp file, fsync, rename, fsync dir.
func writeNew(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
