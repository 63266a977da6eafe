package server_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/server"
)

// TestServe_WithoutUsersRefusedOnRulesNATS: `ebb serve --nats
// nats://ops:...@host` without --auth (and so without --rules) on a
// sync-rules fleet's NATS is refused (ErrNATSConfiguredForRules): its
// unauthenticated HTTP gateway would serve bob's list, which the rules
// hide from everyone but bob, to anyone.
func TestServe_WithoutUsersRefusedOnRulesNATS(t *testing.T) {
	users := externalRulesUsers(t)
	natsURL, adminURL := startExternalNATS(t, users, true)
	rulesSrv := mustStart(t, externalRulesConfig(t, users, adminURL))
	bobWritesSecret(t, &rulesWorld{t: t, srv: rulesSrv, natsURL: natsURL})

	cfg := testConfig(t)
	cfg.NATSURLs = []string{adminURL}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	srv, err := server.Start(ctx, cfg)
	if err == nil {
		srv.Close(context.Background())
		t.Fatal("a server without Users (so without rules) started on the rules fleet's NATS")
	}
	if !errors.Is(err, server.ErrNATSConfiguredForRules) {
		t.Fatalf("Start: %v, want ErrNATSConfiguredForRules", err)
	}
}
