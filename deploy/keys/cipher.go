package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
)

// Purposes of the subkeys ebb derives from one key file. Each store seals
// with its own subkey, so a value sealed for one cannot be opened by another.
const (
	PurposeJetStream = "nats-jetstream" // nats-server's JetStream storage (Key.Derive)
	PurposeClient    = "client-store"   // a client's bbolt file: producer log and replica view
	PurposeView      = "server-view"    // the server's bbolt view store
	PurposeGateway   = "gateway-log"    // the HTTP gateway's logs of server-built writes
)

// ErrDecrypt means a sealed value failed authentication: it was sealed
// with another key, under another bbolt bucket or key, or it was changed.
var ErrDecrypt = errors.New("cannot decrypt value")

// nonceSize is AES-GCM's standard nonce: random per Seal. With random
// 96-bit nonces one key may seal about 2^32 values before the chance of a
// repeat reaches 2^-32 (NIST SP 800-38D); a local store is far below that.
const nonceSize = 12

// Overhead is how many bytes Seal adds to a value: the nonce and the tag.
const Overhead = nonceSize + 16

// checkPlain is the known constant a store's check value seals.
var checkPlain = []byte("ebb store key check v1")

// Cipher seals and opens values with AES-256-GCM under one key. It is safe
// for concurrent use. A nil *Cipher means "no encryption" to the stores that
// take one: SealValue and OpenValue pass values through unchanged; Seal and
// Open must not be called on it.
type Cipher struct {
	aead cipher.AEAD
}

// Cipher returns a Cipher on k's subkey for purpose (Key.Derive), such as
// PurposeClient.
func (k Key) Cipher(purpose string) (*Cipher, error) {
	return NewCipher(k.Derive(purpose))
}

// NewCipher returns a Cipher on a 32-byte key.
func NewCipher(key []byte) (*Cipher, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("new cipher: key of %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("new cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("new cipher: %w", err)
	}
	return &Cipher{aead: aead}, nil
}

// RandomCipher returns a Cipher on a fresh random key that is never
// stored: for throw-away files (a verification rebuild) whose content must
// not sit on disk in the clear.
func RandomCipher() (*Cipher, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return nil, fmt.Errorf("random cipher: %w", err)
	}
	return NewCipher(k[:])
}

// Seal encrypts and authenticates plain, binding it to aad (which is not
// stored: pass the same to Open). The result is a random 12-byte nonce, the
// ciphertext and a 16-byte tag, Overhead bytes longer than plain. aad
// should name where the value lives (bucket and key), so a sealed value
// moved elsewhere fails to open.
func (c *Cipher) Seal(plain, aad []byte) []byte {
	out := make([]byte, nonceSize, nonceSize+len(plain)+c.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		// crypto/rand.Read never returns an error on supported platforms
		// (it crashes the program instead); keep the contract explicit.
		panic(fmt.Sprintf("keys: read random nonce: %v", err))
	}
	return c.aead.Seal(out, out[:nonceSize], plain, aad)
}

// Open authenticates and decrypts a value Seal made with the same key and
// aad. Anything else is an error wrapping ErrDecrypt. The result does not
// alias sealed.
func (c *Cipher) Open(sealed, aad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes is shorter than a sealed value", ErrDecrypt, len(sealed))
	}
	plain, err := c.aead.Open(nil, sealed[:nonceSize], sealed[nonceSize:], aad)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	return plain, nil
}

// SealValue seals plain as the value of key in bbolt bucket: the
// associated data is bucket, a zero byte and key, so the value opens only
// there. On a nil Cipher it returns plain unchanged (a plaintext store).
func (c *Cipher) SealValue(bucket, key, plain []byte) []byte {
	if c == nil {
		return plain
	}
	return c.Seal(plain, valueAAD(bucket, key))
}

// OpenValue opens what SealValue stored as the value of key in bucket; an
// error wraps ErrDecrypt and names both. On a nil Cipher it returns sealed
// unchanged (which then aliases it).
func (c *Cipher) OpenValue(bucket, key, sealed []byte) ([]byte, error) {
	if c == nil {
		return sealed, nil
	}
	plain, err := c.Open(sealed, valueAAD(bucket, key))
	if err != nil {
		return nil, fmt.Errorf("value of %q in %s: %w", key, bucket, err)
	}
	return plain, nil
}

func valueAAD(bucket, key []byte) []byte {
	a := make([]byte, 0, len(bucket)+1+len(key))
	a = append(a, bucket...)
	a = append(a, 0)
	return append(a, key...)
}

// CheckStore decides whether c fits a store at open. stored is the check
// value the store holds (nil: none) and existed says whether the store held
// data before this open; the caller's error context names the store. It returns the check
// value to store now (nil: nothing to write), or an error wrapping
// ErrWrongKey when an encrypted store is opened without a key (c nil) or
// with another key, or a plaintext store with a key. A store calls it once
// per open, before reading anything else, in the transaction that then
// writes the returned value.
func CheckStore(c *Cipher, stored []byte, existed bool) ([]byte, error) {
	switch {
	case c == nil && stored == nil:
		return nil, nil
	case c == nil:
		return nil, fmt.Errorf("%w: the store is encrypted and no key was given", ErrWrongKey)
	case stored == nil && existed:
		return nil, fmt.Errorf("%w: the store is not encrypted but a key was given", ErrWrongKey)
	case stored == nil:
		return c.Seal(checkPlain, []byte(checkAAD)), nil
	}
	plain, err := c.Open(stored, []byte(checkAAD))
	if err != nil || subtle.ConstantTimeCompare(plain, checkPlain) != 1 {
		return nil, fmt.Errorf("%w: the store was encrypted with another key", ErrWrongKey)
	}
	return nil, nil
}

// checkAAD is the associated data of check values: fixed, so a store can be
// renamed or moved and still open.
const checkAAD = "ebb key check"
