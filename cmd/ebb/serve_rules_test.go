package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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

// TestServe_RulesRefusedWithExternalNATS: ebb cannot make an external
// server's accounts refuse clients' direct reads of CHANGES, so sync rules
// with --nats are refused before anything is touched.
func TestServe_RulesRefusedWithExternalNATS(t *testing.T) {
	users := writeTestFile(t, "users.yaml", "users:\n  - {name: ann, password: ann-secret, tenant: acme, role: client}\n")
	err := runServeArgs(t, "--auth", users, "--rules", writeTestFile(t, "rules.yaml", serveTestRules), "--nats", "nats://127.0.0.1:1")
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--rules (rules) with --nats") {
		t.Fatalf("serve --rules --nats: %v, want a usage error naming both", err)
	}
}
