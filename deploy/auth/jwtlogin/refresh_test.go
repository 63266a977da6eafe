package jwtlogin_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/auth/jwtlogin"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin/jwtlogintest"
)

// TestVerifier_AbortedUnknownKidRefreshDoesNotBlockRotation: a caller
// that sends a token with a bogus key id and goes away at once (an HTTP
// client that disconnects: its request context is cancelled) does not
// burn the MinRefresh window with an aborted fetch: the refresh runs on
// the Verifier's own context, so a real user's token signed with the
// IdP's new key is accepted right after.
func TestVerifier_AbortedUnknownKidRefreshDoesNotBlockRotation(t *testing.T) {
	old, next := jwtlogintest.NewKey(t, "old"), jwtlogintest.NewKey(t, "new")
	idp := jwtlogintest.Start(t, old)
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	v := mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL, Now: now}) // defaults: MinRefresh 10s, Refresh 5m
	c := jwtlogintest.Claims{Subject: "alice", Tenant: "acme"}
	idp.Publish(old, next)                                        // the IdP rotates in a new key
	offset.Store(int64(jwtlogin.DefaultMinRefresh + time.Second)) // past the MinRefresh of New's own fetch

	dead, cancel := context.WithCancel(context.Background())
	cancel()
	bogus := jwtlogintest.Token(t, jwtlogintest.NewKey(t, "bogus"), c)
	if _, err := v.Verify(dead, bogus); err == nil {
		t.Fatal("a token of a key the IdP never served was accepted")
	}

	if _, err := v.Verify(context.Background(), jwtlogintest.Token(t, next, c)); err != nil {
		t.Fatalf("a valid token of the IdP's new key after an aborted refresh by someone else: %v", err)
	}
}

// TestVerifier_FailedUnknownKidRefreshRetriedSooner: a refresh for an
// unknown key id that fails (the IdP is down) may be tried again after
// FailedRefreshRetry rather than MinRefresh, and no sooner: a flood of
// unknown key ids makes at most one fetch per FailedRefreshRetry while
// the IdP fails.
func TestVerifier_FailedUnknownKidRefreshRetriedSooner(t *testing.T) {
	old, next := jwtlogintest.NewKey(t, "old"), jwtlogintest.NewKey(t, "new")
	idp := jwtlogintest.Start(t, old)
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	v := mustVerifier(t, jwtlogin.Config{JWKSURL: idp.URL, MinRefresh: 10 * time.Minute, Now: now})
	c := jwtlogintest.Claims{Subject: "alice", Tenant: "acme"}
	tok := jwtlogintest.Token(t, next, c)
	ctx := context.Background()

	offset.Store(int64(10 * time.Minute)) // past the MinRefresh of New's own fetch
	idp.SetDown(true)
	before := idp.Fetches()
	for range 20 {
		if _, err := v.Verify(ctx, tok); !errors.Is(err, jwtlogin.ErrUnknownKey) {
			t.Fatalf("while the IdP is down: %v, want ErrUnknownKey", err)
		}
	}
	if got := idp.Fetches() - before; got != 1 {
		t.Fatalf("%d JWKS fetches for 20 unknown key ids while the IdP fails, want 1", got)
	}

	idp.SetDown(false)
	idp.Publish(old, next)
	if _, err := v.Verify(ctx, tok); !errors.Is(err, jwtlogin.ErrUnknownKey) {
		t.Fatalf("before FailedRefreshRetry has passed: %v, want ErrUnknownKey (rate limited)", err)
	}
	offset.Store(int64(10*time.Minute + jwtlogin.FailedRefreshRetry))
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("a FailedRefreshRetry after a failed refresh, with the IdP back: %v", err)
	}
	if got := idp.Fetches() - before; got != 2 {
		t.Fatalf("%d JWKS fetches in all, want 2", got)
	}
}
