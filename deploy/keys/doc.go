// Package keys reads ebb's encryption key file and turns it into a 32-byte
// key, one for every store ebb encrypts: nats-server's JetStream storage
// (PurposeJetStream), a client's bbolt file (PurposeClient) and the
// server's bbolt view (PurposeView). Each use takes its own subkey
// (Key.Derive), so one key file serves them all without reusing key
// material.
//
// A key file holds either 64 hex digits (the key itself, e.g. from
// `openssl rand -hex 32`) or a passphrase, which argon2id (time 3, memory
// 64 MiB, 1 thread) stretches into a key with a random 16-byte salt kept in
// the data directory (SaltFile, created on first use). Surrounding white
// space, and a trailing newline, are ignored.
//
// Open also keeps a check value in the data directory (CheckFile: an
// HMAC-SHA256 of a fixed label under the key). The first Open with a key
// writes it; every later Open compares, so starting with another key (or
// none, see CheckNoKey) is ErrWrongKey at once, before nats-server reads a
// byte of the encrypted store. Losing the key file, or the salt of a
// passphrase, loses the data: back them up apart from it.
package keys
