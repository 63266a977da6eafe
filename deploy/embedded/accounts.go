package embedded

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ebbsync/ebb/deploy/auth"
)

// withInternalUser returns a copy of users in which the internal user has
// a fresh random password: the one users name auth.InternalUser, or one
// added in the global account with every permission.
func withInternalUser(users []*server.User) ([]*server.User, *server.User, error) {
	pw := make([]byte, 32)
	if _, err := rand.Read(pw); err != nil {
		return nil, nil, fmt.Errorf("internal password: %w", err)
	}
	out := make([]*server.User, 0, len(users)+1)
	var internal *server.User
	for _, u := range users {
		if u.Username == internalUser {
			c := *u
			c.Password, c.Permissions = hex.EncodeToString(pw), nil
			internal = &c
			out = append(out, internal)
			continue
		}
		out = append(out, u)
	}
	if internal == nil {
		internal = &server.User{Username: internalUser, Password: hex.EncodeToString(pw)}
		out = append(out, internal)
	}
	return out, internal, nil
}

// accountsOf returns every account a user points at, once each.
func accountsOf(users []*server.User) []*server.Account {
	var out []*server.Account
	seen := map[string]bool{}
	for _, u := range users {
		if u.Account == nil || seen[u.Account.Name] {
			continue
		}
		seen[u.Account.Name] = true
		out = append(out, u.Account)
	}
	return out
}

// streamAccountOf returns the account whose JetStream holds the streams:
// the internal user's.
func streamAccountOf(internal *server.User) string {
	if internal == nil || internal.Account == nil {
		return globalAccount
	}
	return internal.Account.Name
}

// moveStreamAccount keeps the streams when authentication is turned on or
// off on an existing Dir: nats-server keeps each account's JetStream in
// Dir/jetstream/<account>, and the streams live in the global account
// without Users but in auth.StreamAccount with users from auth. If the
// account that will hold them has no directory and the other one has, it
// is renamed.
func moveStreamAccount(dir string, internal *server.User) error {
	want := streamAccountOf(internal)
	other := auth.StreamAccount
	if want != globalAccount {
		other = globalAccount
	}
	to := filepath.Join(dir, "jetstream", want)
	from := filepath.Join(dir, "jetstream", other)
	if _, err := os.Stat(to); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, err := os.Stat(from); err != nil {
		return nil
	}
	if err := os.Rename(from, to); err != nil {
		return fmt.Errorf("move JetStream storage of account %s to account %s: %w", other, want, err)
	}
	return nil
}
