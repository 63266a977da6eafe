package auth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/authtest"
)

// TestAccountsFingerprint_CoversLimitsAndHashes: the NATS limits written
// into the accounts and the password hashes a users file gives are in
// the fingerprint, so CheckFilteredReads with a file whose limits were
// lowered fails on a nats-server still running the old file's accounts
// (ErrOtherUsersFile), and so does a rotated password_hash; a password
// changed in plain text (hashed with a random salt) and the limits only
// ebb enforces leave it as it was, as documented.
func TestAccountsFingerprint_CoversLimitsAndHashes(t *testing.T) {
	fp := func(u *auth.Users) string { return u.WithFilteredReads(true).AccountsFingerprint() }
	oldU, err := auth.Parse([]byte(externalUsers))
	if err != nil {
		t.Fatal(err)
	}
	for _, limits := range []string{"max_connections: 1", "max_subscriptions: 5", "max_payload: 1024", "max_consumers: 1"} {
		newU, err := auth.Parse([]byte("limits: {" + limits + "}\n" + externalUsers))
		if err != nil {
			t.Fatal(err)
		}
		if fp(newU) == fp(oldU) {
			t.Errorf("limits {%s}: the fingerprint is unchanged", limits)
		}
	}
	lowered, err := auth.Parse([]byte("limits: {max_connections: 1, max_subscriptions: 5, max_payload: 1024, max_consumers: 1}\n" + externalUsers))
	if err != nil {
		t.Fatal(err)
	}
	oldConf, err := oldU.WithFilteredReads(true).NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	ns := authtest.MustStartNATS(t, oldConf)
	ops := connectSlowBcrypt(t, ns.ClientURL(), nats.UserInfo("ops", "ops-pw"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := auth.CheckFilteredReads(ctx, ops, lowered); !errors.Is(err, auth.ErrOtherUsersFile) {
		t.Errorf("CheckFilteredReads with lowered limits on the old accounts: %v, want ErrOtherUsersFile", err)
	}
	if err := auth.CheckFilteredReads(ctx, ops, oldU); err != nil {
		t.Errorf("CheckFilteredReads with the file the accounts were written from: %v", err)
	}

	withHash := func(pw string) *auth.Users {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		u, err := auth.New([]auth.User{
			{Name: "alice", PasswordHash: string(h), Tenant: "acme", Role: auth.RoleClient},
			{Name: "ops", Password: "ops-pw", Role: auth.RoleAdmin},
		})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	h1 := withHash("alice-pw")
	if fp(h1) == fp(withHash("alice-NEW-pw")) {
		t.Error("a rotated password_hash leaves the fingerprint as it was")
	}
	if fp(h1) == fp(oldU) {
		t.Error("a password_hash instead of the plain password leaves the fingerprint as it was")
	}

	plain, err := auth.Parse([]byte(`users:
  - {name: alice, password: alice-NEW-pw, tenant: acme, role: client}
  - {name: ops, password: ops-pw, role: admin}
`))
	if err != nil {
		t.Fatal(err)
	}
	if fp(plain) != fp(oldU) {
		t.Error("a plain password changed the fingerprint: the doc says it is not detected (random salts)")
	}
	ebbOnly, err := auth.Parse([]byte("limits: {max_consumers_per_user: 3, publish: {events_per_second: 7}}\n" + externalUsers))
	if err != nil {
		t.Fatal(err)
	}
	if fp(ebbOnly) != fp(oldU) {
		t.Error("limits only ebb enforces (not in the accounts) changed the fingerprint")
	}
}
