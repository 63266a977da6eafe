package main

import (
	"strings"
	"testing"

	"github.com/ebbsync/ebb/deploy/console"
)

// TestServe_ConsoleMounted: `ebb serve` serves the console at /ui and the
// browser client module at its stable path, beside the gateway's routes.
func TestServe_ConsoleMounted(t *testing.T) {
	srv := serveInProcess(t, "")
	for _, tc := range []struct {
		path, want string
	}{
		{console.Prefix + "/", "<html"},
		{console.ClientPath, "export"},
		{"/healthz", "ok"},
	} {
		code, body := httpGet(t, srv.http+tc.path)
		if code != 200 || !strings.Contains(strings.ToLower(body), tc.want) {
			t.Errorf("GET %s: %d, body %.80q; want 200 with %q", tc.path, code, body, tc.want)
		}
	}
}
