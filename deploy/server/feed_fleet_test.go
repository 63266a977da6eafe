package server_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/auth"
)

// TestFeed_NoRulesServerNeverAnswersRulesClients: every ebb serve runs a
// change responder, unfiltered without rules. A fleet moving to sync rules
// (accounts regenerated with --rules and reloaded, servers restarted one
// by one with --rules) keeps a server without rules up for a while; the
// filtered-reads accounts route a client's change requests to the
// filtering responders' subject only, so the unfiltered responder never
// answers one: no reply ann gets is an unfiltered page. (Both responders
// once shared one subject and queue group, and 20 of 20 of ann's requests
// were answered unfiltered, bob's "secret plans" in them.) That server's
// projector, still running without rules, writing changes without their
// audience, is another matter: README's sync-rules section says to stop
// such servers before the reload; this test does not judge it.
func TestFeed_NoRulesServerNeverAnswersRulesClients(t *testing.T) { feedFleet(t, true) }

// TestFeed_RulesServerAloneFilters: the same fleet without the server
// without rules, the control: ann never gets bob's list.
func TestFeed_RulesServerAloneFilters(t *testing.T) { feedFleet(t, false) }

func feedFleet(t *testing.T, withA bool) {
	users := externalRulesUsers(t)
	ns, path := startReloadable(t, users)
	adminURL := strings.Replace(ns.ClientURL(), "nats://", "nats://ops:ops-secret@", 1)
	// The fleet before sync rules: unfiltered accounts, a server without rules.
	writeConf(t, path, strings.TrimSuffix(path, "/nats-server.conf"), users, false)
	if err := ns.Reload(); err != nil {
		t.Fatal(err)
	}
	cfgA := testConfig(t)
	cfgA.Users, cfgA.NATSURLs = users.WithFilteredReads(false), []string{adminURL}
	if withA {
		_ = mustStart(t, cfgA)
	}
	// Moving to sync rules: the accounts in filtered reads mode, a server with rules.
	writeConf(t, path, strings.TrimSuffix(path, "/nats-server.conf"), users, true)
	if err := ns.Reload(); err != nil {
		t.Fatal(err)
	}
	w := &rulesWorld{t: t, srv: mustStart(t, externalRulesConfig(t, users, adminURL)), natsURL: ns.ClientURL()}
	bobWritesSecret(t, w)
	ann := w.conn("ann")
	unfiltered, leaked := 0, 0
	const asks = 20
	for range asks {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		m, err := ann.RequestWithContext(ctx, auth.ChangesSubject, []byte(`{}`))
		cancel()
		if err != nil {
			t.Fatalf("ann's change request: %v", err)
		}
		if bytes.Contains(m.Data, []byte(`"unfiltered":true`)) {
			unfiltered++
		}
		if bytes.Contains(m.Data, []byte("secret plans")) {
			leaked++
		}
	}
	if unfiltered > 0 {
		t.Fatalf("%d of %d of ann's change requests answered by an unfiltered responder", unfiltered, asks)
	}
	if !withA && leaked > 0 {
		t.Fatalf("%d of %d of ann's change requests answered with bob's l-bob (secret plans)", leaked, asks)
	}
}
