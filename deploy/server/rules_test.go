package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/server"
	"github.com/ebbsync/ebb/projection/rules"
)

func testRules(t *testing.T) *rules.Set {
	t.Helper()
	s, err := rules.Parse([]byte("collections:\n  lists:\n    read: [{user: owner}]\n    write: [{user: owner}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStart_RulesNeedUsers: sync rules without authentication are refused
// before anything is touched.
func TestStart_RulesNeedUsers(t *testing.T) {
	cfg := testConfig(t)
	cfg.Rules = testRules(t)
	s, err := server.Start(t.Context(), cfg)
	if !errors.Is(err, server.ErrInvalidConfig) || !strings.Contains(err.Error(), "Rules") {
		if s != nil {
			s.Close(context.Background())
		}
		t.Fatalf("start with rules and no users: %v, want ErrInvalidConfig naming Rules", err)
	}
}

// TestServer_RulesRefuseWrite: the server's projector runs the rules: an
// HTTP write by a user the rules do not let write the document is
// rejected, naming the rule; the owner's applies.
func TestServer_RulesRefuseWrite(t *testing.T) {
	users, err := auth.New([]auth.User{
		{Name: "ann", Password: "ann-secret", Tenant: "acme", Role: auth.RoleClient},
		{Name: "bob", Password: "bob-secret", Tenant: "acme", Role: auth.RoleClient},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Users, cfg.Rules = users.WithFilteredReads(true), testRules(t)
	s := mustStart(t, cfg)
	put := func(user, pass, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPut, s.URL()+"/v1/acme/docs/lists/l1", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(user, pass)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := put("ann", "ann-secret", `{"owner": "ann"}`); code != http.StatusCreated {
		t.Fatalf("owner's put: %d %s", code, body)
	}
	code, body := put("bob", "bob-secret", `{"owner": "bob"}`)
	// bob may not read l1 either, so the refusal says nothing of it: not
	// its version, not which rule (the projector's hidden receipt).
	if code != http.StatusConflict || !strings.Contains(body, "sync rules: lists/l1: you may not write this document") || strings.Contains(body, "owner") {
		t.Fatalf("bob's put: %d %s, want 409 refusing it without telling what l1 holds", code, body)
	}
}
