package main

import (
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"
)

// TestHostile_PasswordGuessing: over NATS and over HTTP, an unknown user
// costs the server what a wrong password of a real one costs, and past
// the burst every guess, even the right password, is refused at once
// for the user name and for the source.
func TestHostile_PasswordGuessing(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("carol-pw"), 8)
	if err != nil {
		t.Fatal(err)
	}
	const burst = 8
	users := "limits: {login: {burst: 8, backoff: 10s}}\n" + usersYAML +
		"  - {name: carol, password_hash: \"" + string(hash) + "\", tenant: acme, role: client}\n"
	median := func(ds []time.Duration) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)/2]
	}

	t.Run("nats", func(t *testing.T) {
		srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", users))
		try := func(user, pw string) (time.Duration, error) {
			start := time.Now()
			nc, err := nats.Connect(srv.nats, nats.UserInfo(user, pw), nats.NoReconnect(), nats.Timeout(10*time.Second))
			d := time.Since(start)
			if err == nil {
				nc.Close()
			}
			return d, err
		}
		var wrong, unknown []time.Duration
		for range 3 {
			d, err := try("carol", "guess")
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("wrong password: %v", err)
			}
			wrong = append(wrong, d)
			if d, err = try("mallory", "guess"); !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("unknown user: %v", err)
			}
			unknown = append(unknown, d)
		}
		w, u := median(wrong), median(unknown)
		t.Logf("wrong password %s, unknown user %s", w, u)
		if u < w/3 || u > w*3 {
			t.Fatalf("unknown user costs %s, a wrong password %s: not the same order", u, w)
		}
		for range burst {
			_, _ = try("carol", "guess")
		}
		d, err := try("carol", "carol-pw")
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("the right password past the burst: %v, want refused", err)
		}
		if d > w/2 {
			t.Fatalf("a locked login took %s, a password check %s: not refused before the check", d, w)
		}
		if _, err := try("alice", "alice-pw"); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("another user from the locked source: %v, want refused", err)
		}
	})

	t.Run("http", func(t *testing.T) {
		srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", users))
		doc := srv.http + "/v1/acme/docs/todos"
		try := func(user, pw string) (time.Duration, int, string) {
			req, _ := http.NewRequest("GET", doc, nil)
			req.SetBasicAuth(user, pw)
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			d := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return d, resp.StatusCode, resp.Header.Get("Retry-After")
		}
		var wrong, unknown []time.Duration
		for range 3 {
			d, code, _ := try("carol", "guess")
			if code != http.StatusUnauthorized {
				t.Fatalf("wrong password: %d", code)
			}
			wrong = append(wrong, d)
			if d, code, _ = try("mallory", "guess"); code != http.StatusUnauthorized {
				t.Fatalf("unknown user: %d", code)
			}
			unknown = append(unknown, d)
		}
		w, u := median(wrong), median(unknown)
		t.Logf("wrong password %s, unknown user %s", w, u)
		if u < w/3 || u > w*3 {
			t.Fatalf("unknown user costs %s, a wrong password %s: not the same order", u, w)
		}
		for range burst {
			_, _, _ = try("carol", "guess")
		}
		d, code, retry := try("carol", "carol-pw")
		if code != http.StatusTooManyRequests || retry == "" {
			t.Fatalf("the right password past the burst: %d (Retry-After %q), want 429 with Retry-After", code, retry)
		}
		if d > w/2 {
			t.Fatalf("a locked login took %s, a password check %s: not refused before the check", d, w)
		}
		if _, code, _ := try("alice", "alice-pw"); code != http.StatusTooManyRequests {
			t.Fatalf("another user from the locked source: %d, want 429", code)
		}
	})
}
