package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/authtest"
	"github.com/ebbsync/ebb/deploy/auth/jwtlogin/jwtlogintest"
)

const serveTestRules = "collections:\n  lists:\n    read: [{user: owner}]\n    write: [{user: owner}]\n"

func writeTestFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runServeArgs runs `ebb serve` with args in process until it returns,
// which a refused configuration does at once.
func runServeArgs(t *testing.T, args ...string) error {
	t.Helper()
	m := &Main{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a start that got this far would stop at once
	err := m.Run(ctx, append([]string{"serve", "--data", t.TempDir(), "--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0"}, args...))
	return err
}

// TestServe_RulesNeedAuth: --rules without --auth is a usage error.
func TestServe_RulesNeedAuth(t *testing.T) {
	err := runServeArgs(t, "--rules", writeTestFile(t, "rules.yaml", serveTestRules))
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--rules (rules) needs --auth") {
		t.Fatalf("serve --rules without --auth: %v, want a usage error", err)
	}
}

// TestServe_BadRulesRefused: a bad rules file stops serve at start, naming
// the collection, the rule and the field.
func TestServe_BadRulesRefused(t *testing.T) {
	users := writeTestFile(t, "users.yaml", "users:\n  - {name: ann, password: ann-secret, tenant: acme, role: client}\n")
	bad := writeTestFile(t, "rules.yaml", "collections:\n  lists:\n    read: [{user: owner}]\n    write: [{group: ''}]\n")
	err := runServeArgs(t, "--auth", users, "--rules", bad)
	if !errors.Is(err, ErrUsage) {
		t.Fatalf("serve with a bad rules file: %v, want a usage error", err)
	}
	for _, want := range []string{bad, `collection "lists"`, "rule write[0]", `field "group"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if err := runServeArgs(t, "--auth", users, "--rules", filepath.Join(t.TempDir(), "none.yaml")); !errors.Is(err, ErrUsage) {
		t.Errorf("serve with a missing rules file: %v, want a usage error", err)
	}
}

// TestServe_RulesRecorded: serve runs the rules and keeps a copy in the
// data directory for ebb verify; a serve without rules removes it.
func TestServe_RulesRecorded(t *testing.T) {
	users := writeTestFile(t, "users.yaml", "users:\n  - {name: ann, password: ann-secret, tenant: acme, role: client}\n")
	data := t.TempDir()
	s := serveInProcess(t, data, "--auth", users, "--rules", writeTestFile(t, "rules.yaml", serveTestRules))
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(data, rulesFile))
	if err != nil || string(got) != serveTestRules {
		t.Fatalf("recorded rules %q, %v; want the file served", got, err)
	}
	if rs, err := recordedRules(data); err != nil || !rs.Ruled("lists") {
		t.Fatalf("recordedRules: %v, %v", rs, err)
	}
	s = serveInProcess(t, data, "--auth", users)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(data, rulesFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("rules still recorded after a serve without rules: %v", err)
	}
}

// externalServeUsers writes a users file of a client and the admin serve
// connects as, with bcrypt hashes of the lowest cost so the external
// server's own login checks stay quick under -race.
func externalServeUsers(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("users:\n")
	for _, u := range []struct{ name, rest string }{{"ann", "tenant: acme, role: client"}, {"ops", "role: admin"}} {
		h, err := bcrypt.GenerateFromPassword([]byte(u.name+"-secret"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "  - {name: %s, password_hash: %q, %s}\n", u.name, h, u.rest)
	}
	return writeTestFile(t, "users.yaml", b.String())
}

// externalNATSFor starts nats-server with the accounts `ebb nats-config
// args...` prints, and returns the URL serve connects to as ops.
func externalNATSFor(t *testing.T, args ...string) string {
	t.Helper()
	conf, err := runNATSConfigArgs(t, args...)
	if err != nil {
		t.Fatalf("nats-config %q: %v", args, err)
	}
	ns := authtest.MustStartNATS(t, conf)
	return strings.Replace(ns.ClientURL(), "nats://", "nats://ops:ops-secret@", 1)
}

// TestServe_RulesExternalNATS: serve --rules --nats starts against a
// server configured by `ebb nats-config --rules` (the filtered reads
// configuration), and serves. It replaces
// TestServe_RulesRefusedWithExternalNATS: refusing every external server
// was a limit (no command wrote, and nothing checked, its filtered
// accounts), not a contract.
func TestServe_RulesExternalNATS(t *testing.T) {
	users, rulesPath := externalServeUsers(t), writeTestFile(t, "rules.yaml", serveTestRules)
	url := externalNATSFor(t, "--auth", users, "--rules", rulesPath)
	s := serveInProcess(t, "", "--auth", users, "--rules", rulesPath, "--nats", url)
	if code, body := httpGet(t, s.http+"/readyz"); code != 200 {
		t.Fatalf("/readyz of serve --rules --nats: %d %s", code, body)
	}
	if strings.Contains(s.stderr.String(), "ops-secret") {
		t.Errorf("serve logged the admin's NATS password")
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestServe_RulesExternalNATSNotFiltered: against a server configured
// without filtered reads (`ebb nats-config` without --rules), where
// clients read CHANGES directly, serve --rules refuses to start and
// names the fix.
func TestServe_RulesExternalNATSNotFiltered(t *testing.T) {
	users, rulesPath := externalServeUsers(t), writeTestFile(t, "rules.yaml", serveTestRules)
	url := externalNATSFor(t, "--auth", users)
	// Not runServeArgs: its context is cancelled, and the check needs one
	// alive. A serve that started would run until this deadline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := &Main{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
	err := m.Run(ctx, []string{"serve", "--data", t.TempDir(), "--http-listen", "127.0.0.1:0", "--auth", users, "--rules", rulesPath, "--nats", url})
	if !errors.Is(err, auth.ErrNotFilteredReads) {
		t.Fatalf("serve --rules --nats on an unfiltered server: %v, want auth.ErrNotFilteredReads", err)
	}
	for _, want := range []string{"ebb nats-config", "--rules", "reload"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name the fix (%s)", err, want)
		}
	}
	if strings.Contains(err.Error(), "ops-secret") {
		t.Errorf("error %q shows the admin's NATS password", err)
	}
}

// TestServe_RulesExternalNATSTokensOverHTTP: login tokens with sync rules
// on an external server work over HTTP (the gateway verifies them, the
// rules filter what the token user reads) and not over NATS, where only
// the embedded server has the login hook; serve says so at start rather
// than refusing, since the HTTP half works.
func TestServe_RulesExternalNATSTokensOverHTTP(t *testing.T) {
	users, rulesPath := externalServeUsers(t), writeTestFile(t, "rules.yaml", serveTestRules)
	url := externalNATSFor(t, "--auth", users, "--rules", rulesPath)
	k := jwtlogintest.NewKey(t, "k1")
	idp := jwtlogintest.Start(t, k)
	s := serveInProcess(t, "", "--auth", users, "--rules", rulesPath, "--nats", url,
		"--jwt-issuer", jwtlogintest.Issuer, "--jwt-audience", jwtlogintest.Audience, "--jwt-jwks-url", idp.URL)
	if !strings.Contains(s.stderr.String(), "login tokens are accepted over HTTP only") {
		t.Errorf("serve did not say NATS token logins need the embedded server:\n%s", s.stderr.String())
	}
	tok := jwtlogintest.Token(t, k, jwtlogintest.Claims{Subject: "tina", Tenant: "acme"})
	if code, body := httpBearer(t, "GET", s.http+"/v1/acme/changes?after=0", tok); code != 200 {
		t.Fatalf("HTTP changes with a token under rules on external NATS: %d %s", code, body)
	}
	clientURL := strings.Replace(url, "ops:ops-secret@", "", 1)
	if nc, err := nats.Connect(clientURL, nats.Token(tok)); err == nil {
		nc.Close()
		t.Fatal("the external server took a token login")
	}
}
