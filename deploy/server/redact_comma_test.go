package server_test

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ebbsync/ebb/deploy/server"
)

// TestRedactURL_CommaInsideASecret: every form pgx takes for
// postgres_url (print-config runs it through RedactURL) must hide the
// password. pgx.ParseConfig shows what each form's password is.
func TestRedactURL_CommaInsideASecret(t *testing.T) {
	for _, dsn := range []string{
		"postgres://ebb@db/ebb?sslmode=disable&password=top,secret", // a comma in the query value
		"postgres://ebb@db/ebb?sslmode=disable&password=top%2Csecret",
	} {
		c, err := pgx.ParseConfig(dsn)
		if err != nil {
			t.Fatalf("pgx refuses %q: %v", dsn, err)
		}
		pw := c.Password
		got := server.RedactURL(dsn)
		leak := ""
		for _, part := range strings.Split(pw, ",") {
			if len(part) >= 3 && strings.Contains(got, part) {
				leak = part
			}
		}
		if leak != "" {
			t.Errorf("RedactURL(%q) = %q: shows %q of the password %q pgx uses", dsn, got, leak, pw)
		}
	}
}

// A comma inside a user's password is part of it; a comma between URLs
// with schemes still separates them.
func TestRedactURL_CommaInUserPassword(t *testing.T) {
	for in, want := range map[string]string{
		"nats://ebb:pa,ss@h1:4222":                  "nats://ebb:REDACTED@h1:4222",
		"nats://a:pw@h1:4222,nats://b:pw2@h2:4222":  "nats://a:REDACTED@h1:4222,nats://b:REDACTED@h2:4222",
		"nats://h1:4222,nats://h2:4222":             "nats://h1:4222,nats://h2:4222",
		"postgres://ebb:pw@db/ebb?password=a,b&x=1": "postgres://ebb:REDACTED@db/ebb?password=REDACTED&x=1",
	} {
		if got := server.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
