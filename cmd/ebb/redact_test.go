package main

import (
	"strings"
	"testing"
)

// RV-HD-5: --print-config ("passwords redacted") prints the admin's NATS
// password whole for URLs nats.go connects with but url.Parse reads
// differently: host:port with user info and no scheme, and a URL that
// does not parse.
func TestRVHD_PrintConfigShowsNATSPassword(t *testing.T) {
	for _, u := range []string{"ops:ops-secret@127.0.0.1:4222", "nats://ops:ops-secret%zz@127.0.0.1:4222"} {
		c := printConfigOf(t, nil, "--nats", u)
		if got := strings.Join(c.NATS.URLs, ","); strings.Contains(got, "ops-secret") {
			t.Errorf("serve --print-config --nats %s prints nats.urls %q", u, got)
		}
	}
}
