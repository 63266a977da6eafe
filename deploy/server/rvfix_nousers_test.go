package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/server"
)

// TestRVFix_ServeWithoutUsersNotRefusedOnRulesNATS: refuseRulesAccounts
// runs only with Users, so `ebb serve --nats nats://ops:...@host` without
// --auth (and so without --rules) starts on a sync-rules fleet's NATS, and
// its unauthenticated HTTP gateway serves bob's list, which the rules hide
// from everyone but bob, to anyone.
func TestRVFix_ServeWithoutUsersNotRefusedOnRulesNATS(t *testing.T) {
	users := externalRulesUsers(t)
	natsURL, adminURL := startExternalNATS(t, users, true)
	rulesSrv := mustStart(t, externalRulesConfig(t, users, adminURL))
	bobWritesSecret(t, &rulesWorld{t: t, srv: rulesSrv, natsURL: natsURL})

	cfg := testConfig(t)
	cfg.NATSURLs = []string{adminURL}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	srv, err := server.Start(ctx, cfg)
	if err != nil {
		t.Logf("refused: %v", err)
		return
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	var body string
	embeddedtest.WaitFor(t, 30*time.Second, "the change read", func() bool {
		resp, err := http.Get(srv.URL() + "/v1/acme/changes")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		return strings.Contains(body, "secret plans")
	})
	t.Fatalf("a server without Users (so without rules) started on the rules fleet's NATS and serves bob's hidden list to an anonymous HTTP GET: %.200s", body)
}
