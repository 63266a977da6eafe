package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// runIn runs the CLI in process with env as its environment.
func runIn(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}
	err := m.Run(context.Background(), args)
	return out.String(), errOut.String(), ExitCode(err)
}

func TestCLI_Errors(t *testing.T) {
	env := map[string]string{"EBB_DATA": filepath.Join(t.TempDir(), "client"), "EBB_NATS": "nats://127.0.0.1:1", "EBB_TENANT": "acme"}
	tests := []struct {
		name      string
		args      []string
		wantCode  int
		wantUsage bool
		wantErr   string
	}{
		{"bad JSON says where", []string{"put", "todos", "t1", "{\"title\":\n  oops}"}, 2, true, "bad JSON at line 2, column 3"},
		{"JSON that is not an object", []string{"put", "todos", "t1", `["a"]`}, 2, true, "want an object of fields, got array"},
		{"JSON null", []string{"patch", "todos", "t1", `null`}, 2, true, "got null"},
		{"empty collection", []string{"put", "", "t1", `{}`}, 2, true, `field "collection": must not be empty`},
		{"control character in id", []string{"get", "todos", "a\x01b"}, 2, true, `field "doc": contains control character`},
		{"id too long", []string{"get", "todos", strings.Repeat("x", 600)}, 2, true, `field "doc"`},
		{"empty field name", []string{"patch", "todos", "t1", `{"":1}`}, 2, true, "field name must not be empty"},
		{"bad tenant", []string{"ls", "todos", "--tenant", ""}, 2, true, `field "tenant"`},
		{"missing argument", []string{"put", "todos", "t1"}, 2, true, "want COLLECTION ID JSON, got 2 argument(s)"},
		{"too many arguments", []string{"delete", "todos", "t1", "x"}, 2, true, "want COLLECTION ID, got 3"},
		{"not found", []string{"get", "todos", "nope"}, 1, false, "todos/nope: not found"},
		{"unreachable server on sync", []string{"sync", "--timeout", "3s"}, 1, false, "server unreachable at nats://127.0.0.1:1"},
		{"unreachable server on watch", []string{"watch"}, 1, false, "server unreachable"},
		{"unknown collection policy", []string{"serve", "--data", t.TempDir(), "--policy", "todos=bogus"}, 2, true, `unknown conflict policy`},
		{"malformed policy flag", []string{"serve", "--policy", "todos"}, 2, true, "want COLLECTION=POLICY"},
		{"bad sync timeout", []string{"sync", "--timeout", "soon"}, 2, true, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runIn(t, env, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.wantCode, stderr)
			}
			if !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("stderr %q does not say %q", stderr, tt.wantErr)
			}
			if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 {
				t.Fatalf("want one line on stderr, got %d:\n%s", n+1, stderr)
			}
		})
	}
}

func TestCLI_OfflineWritesQueueAndRead(t *testing.T) {
	env := map[string]string{"EBB_DATA": filepath.Join(t.TempDir(), "client"), "EBB_NATS": "nats://127.0.0.1:1"}
	if out, _, code := runIn(t, env, "put", "todos", "a.b c", `{"title":"milk"}`); code != 0 || out != "put todos/a.b c: queued, offline\n" {
		t.Fatalf("offline put: %d %q", code, out)
	}
	if out, _, code := runIn(t, env, "patch", "todos", "a.b c", `{"done":true,"title":null}`); code != 0 || !strings.Contains(out, "queued, offline") {
		t.Fatalf("offline patch: %d %q", code, out)
	}
	if out, _, _ := runIn(t, env, "get", "todos", "a.b c"); out != "{\"done\":true}\n" {
		t.Fatalf("get shows pending writes: %q", out)
	}
	if out, _, _ := runIn(t, env, "status", "--json"); !strings.Contains(out, `"pending":2`) || !strings.Contains(out, `"reachable":false`) {
		t.Fatalf("status: %q", out)
	}
	if out, _, _ := runIn(t, env, "ls", "todos"); out != "a.b c\n" {
		t.Fatalf("ls: %q", out)
	}
	// Another tenant in the same directory is refused, not mixed in.
	if _, stderr, code := runIn(t, env, "ls", "todos", "--tenant", "other"); code == 0 || stderr == "" {
		t.Fatalf("opening a default-tenant replica as tenant other must fail: %d %q", code, stderr)
	}
}

func TestExitCode(t *testing.T) {
	if ExitCode(nil) != 0 || ExitCode(usagef("x")) != 2 || ExitCode(errors.New("x")) != 1 || ExitCode(&exitError{code: 3, err: errors.New("x")}) != 3 {
		t.Fatal("exit codes")
	}
}
