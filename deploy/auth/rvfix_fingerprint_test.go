package auth_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/authtest"
)

// TestRVFix_FingerprintBlindToLimitsAndPasswords: two users files whose
// accounts differ (alice's password rotated, the NATS limits lowered)
// write different NATS configurations, yet CheckFilteredReads with the new
// file passes on a nats-server still running the old file's accounts:
// the old password still logs in and the old limits still apply, while
// the interlock reports the accounts as this users file's.
func TestRVFix_FingerprintBlindToLimitsAndPasswords(t *testing.T) {
	oldU, err := auth.Parse([]byte(externalUsers))
	if err != nil {
		t.Fatal(err)
	}
	newU, err := auth.Parse([]byte(`limits: {max_connections: 1, max_subscriptions: 5, max_payload: 1024, max_consumers: 1}
users:
  - {name: alice, password: alice-NEW-pw, tenant: acme, role: client}
  - {name: ops, password: ops-pw, role: admin}
`))
	if err != nil {
		t.Fatal(err)
	}
	oldConf, err := oldU.WithFilteredReads(true).NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	newConf, _ := newU.WithFilteredReads(true).NATSConfig()
	if oldConf == newConf {
		t.Fatal("the two files write the same accounts")
	}
	ns := authtest.MustStartNATS(t, oldConf)
	ops := connectSlowBcrypt(t, ns.ClientURL(), nats.UserInfo("ops", "ops-pw"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := auth.CheckFilteredReads(ctx, ops, newU); err == nil {
		alice := connectSlowBcrypt(t, ns.ClientURL(), nats.UserInfo("alice", "alice-pw"))
		t.Fatalf("CheckFilteredReads with the new users file passes on the old file's accounts (fingerprints %s == %s); the rotated password alice-pw still logs in: %v, limits %+v not applied",
			oldU.WithFilteredReads(true).AccountsFingerprint(), newU.WithFilteredReads(true).AccountsFingerprint(), alice.IsConnected(), newU.Limits())
	}
}
