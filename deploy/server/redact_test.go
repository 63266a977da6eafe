package server_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/server"
)

// TestRedactURL: every form nats.go connects with has its secret
// replaced: with or without a scheme, user and password, a token alone,
// several URLs, and text url.Parse refuses; a URL without credentials is
// left as it is.
func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"127.0.0.1:4222", "127.0.0.1:4222"},
		{"nats://ops:pw@h:4222", "nats://ops:REDACTED@h:4222"},
		{"ops:pw@h:4222", "ops:REDACTED@h:4222"},
		{"tls://ops:pw@h:4222", "tls://ops:REDACTED@h:4222"},
		{"nats://TOKEN@h:4222", "nats://REDACTED@h:4222"},
		{"TOKEN@h:4222", "REDACTED@h:4222"},
		{"nats://ops:s3cr%zz@h:4222", "nats://ops:REDACTED@h:4222"},
		{"nats://ops:p@ss@h:4222", "nats://ops:REDACTED@h:4222"},
		// A scheme-less token URL after one without "@" could be the rest of
		// its password (a comma in it): hidden together, more rather than less.
		{"nats://a:pw1@h1:4222,b:pw2@h2:4222,nats://h3:4222,TOK@h4", "nats://a:REDACTED@h1:4222,b:REDACTED@h2:4222,nats://h3:REDACTED@h4"},
		{"nats://a:pw1@h1:4222,b:pw2@h2:4222,nats://h3:4222,nats://TOK@h4", "nats://a:REDACTED@h1:4222,b:REDACTED@h2:4222,nats://h3:4222,nats://REDACTED@h4"},
		{"", ""},
		{"postgres://ebb@db/ebb?sslmode=disable&password=pw", "postgres://REDACTED@db/ebb?sslmode=disable&password=REDACTED"},
		{"postgres://db/ebb?sslmode=disable&Pass=pw&token=t&x=1", "postgres://db/ebb?sslmode=disable&Pass=REDACTED&token=REDACTED&x=1"},
		{"nats://h:4222?x=1", "nats://h:4222?x=1"},
	} {
		if got := server.RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := server.RedactURLs([]string{"nats://a:pw@h1", "TOK@h2"}); got != "nats://a:REDACTED@h1,REDACTED@h2" {
		t.Errorf("RedactURLs = %q", got)
	}
}

// TestRedactError: the text of nats.go's errors for the forms it takes
// never shows the secret, and errors.Is still sees nats.go's error.
func TestRedactError(t *testing.T) {
	for _, raw := range []string{"nats://ops:s3cret%zz@127.0.0.1:1", "nats://ops:s3cret@127.0.0.1:1", "ops:s3cret@127.0.0.1:1", "nats://s3cret@127.0.0.1:1"} {
		_, err := nats.Connect(raw, nats.Timeout(100e6))
		if err == nil {
			t.Fatalf("connect to %s succeeded", raw)
		}
		red := server.RedactError(err, raw)
		if strings.Contains(red.Error(), "s3cret") || strings.Contains(red.Error(), "%zz") {
			t.Errorf("RedactError of %s: %q shows the secret", raw, red)
		}
		if !errors.Is(red, err) {
			t.Errorf("RedactError of %s hides the error from errors.Is", raw)
		}
	}
	var ue *url.Error
	quoted := &url.Error{Op: "parse", URL: "nats://u:s3cret@h", Err: errors.New("bad")}
	if red := server.RedactError(quoted, "nats://u:s3cret@h"); strings.Contains(red.Error(), "s3cret") || !errors.As(red, &ue) {
		t.Errorf("RedactError of a url.Error: %q", red)
	}
	if server.RedactError(nil) != nil {
		t.Error("RedactError(nil) is not nil")
	}
}
