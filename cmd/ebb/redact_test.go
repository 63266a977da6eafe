package main

import (
	"strings"
	"testing"
)

// TestPrintConfig_NATSURLsRedacted: --print-config ("passwords
// redacted") shows no password or token of the NATS URLs in any form
// nats.go connects with: host:port with user info and no scheme, a URL
// that does not parse, a token alone, several URLs.
func TestPrintConfig_NATSURLsRedacted(t *testing.T) {
	for _, u := range []string{"ops:ops-secret@127.0.0.1:4222", "nats://ops:ops-secret%zz@127.0.0.1:4222",
		"nats://ops-secret@127.0.0.1:4222", "nats://127.0.0.1:4222,svc:ops-secret@10.0.0.1:4222"} {
		c := printConfigOf(t, nil, "--nats", u)
		if got := strings.Join(c.NATS.URLs, ","); strings.Contains(got, "ops-secret") || !strings.Contains(got, "REDACTED") {
			t.Errorf("serve --print-config --nats %s prints nats.urls %q", u, got)
		}
	}
}

// TestConnect_ErrorRedactsURL: a client command's connect error (ebb
// verify, restore, policy --nats all connect through connFlags) shows
// neither the password of a URL nor one that does not parse.
func TestConnect_ErrorRedactsURL(t *testing.T) {
	var c connFlags
	for _, u := range []string{"nats://ops:ops-secret@127.0.0.1:1", "ops:ops-secret@127.0.0.1:1", "nats://ops:ops-secret%zz@127.0.0.1:1", "nats://ops-secret@127.0.0.1:1"} {
		_, err := c.connect(u, "ebb-test")
		if err == nil {
			t.Fatalf("connect to %s succeeded", u)
		}
		if strings.Contains(err.Error(), "ops-secret") {
			t.Errorf("connect to %s: %v", u, err)
		}
	}
}

// TestPrintConfig_QueryPasswordRedacted: a postgres_url whose password
// is in the query (postgres://ebb@db/ebb?password=..., which pgx and
// libpq take) is printed by --print-config without it, and so is a NATS
// URL list whose last URL has a query.
func TestPrintConfig_QueryPasswordRedacted(t *testing.T) {
	for _, u := range []string{
		"postgres://ebb@db:5432/ebb?sslmode=disable&password=pg-s3cret",
		"postgres://db:5432/ebb?PassWord=pg-s3cret&sslmode=disable",
		"nats://ops:ops-s3cret@n1:4222,nats://n2:4222?x=1",
	} {
		got := redactURL(u)
		if strings.Contains(got, "s3cret") || !strings.Contains(got, "REDACTED") {
			t.Errorf("redactURL(%q) = %q: the password is shown", u, got)
		}
	}
	if got := redactURL("postgres://ebb@db/ebb?sslmode=disable"); got != "postgres://REDACTED@db/ebb?sslmode=disable" {
		t.Errorf("a query without a secret changed: %q", got)
	}
}
