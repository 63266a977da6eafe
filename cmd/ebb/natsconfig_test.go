package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ebbsync/ebb/deploy/auth"
)

// exampleUsers is the users file deploy/nats-auth.conf is generated from.
var exampleUsers = filepath.Join("..", "..", "deploy", "users.example.yaml")

// runNATSConfigArgs runs `ebb nats-config args...` in process and returns
// its stdout and error.
func runNATSConfigArgs(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout bytes.Buffer
	m := &Main{Stdout: &stdout, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
	err := m.Run(context.Background(), append([]string{"nats-config"}, args...))
	return stdout.String(), err
}

// parseByNATSServer fails the test unless nats-server's own config file
// parser accepts conf (an accounts block) in a server's config, as
// TestNATSConfig_ExternalServer does.
func parseByNATSServer(t *testing.T, conf string) *server.Options {
	t.Helper()
	path := filepath.Join(t.TempDir(), "server.conf")
	if err := os.WriteFile(path, []byte("jetstream: enabled\n"+conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses the output: %v", err)
	}
	return opts
}

// TestNATSConfig_CommandIsGenerated: `ebb nats-config` prints what
// deploy/auth generates for the users file, which nats-server parses;
// without a mode flag that is the checked-in deploy/nats-auth.conf, and
// with --rules or --filtered the filtered reads configuration, marker
// included. -o writes the same bytes to a file of mode 0600.
func TestNATSConfig_CommandIsGenerated(t *testing.T) {
	users, err := auth.Load(exampleUsers)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := users.NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	filtered, err := users.WithFilteredReads(true).NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	checkedIn, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats-auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	rulesPath := writeTestFile(t, "rules.yaml", serveTestRules)
	for _, tc := range []struct {
		name   string
		args   []string
		want   string
		marker bool
	}{
		{"plain", nil, plain, false},
		{"rules", []string{"--rules", rulesPath}, filtered, true},
		{"filtered", []string{"--filtered"}, filtered, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := runNATSConfigArgs(t, append([]string{"--auth", exampleUsers}, tc.args...)...)
			if err != nil {
				t.Fatalf("nats-config: %v", err)
			}
			if got != tc.want {
				t.Fatalf("nats-config printed\n%s\nwant what deploy/auth generates\n%s", got, tc.want)
			}
			if tc.name == "plain" && got != string(checkedIn) {
				t.Fatal("ebb nats-config --auth deploy/users.example.yaml differs from deploy/nats-auth.conf")
			}
			if strings.Contains(got, auth.FilteredModeSubject) != tc.marker {
				t.Fatalf("output carries the filtered reads marker: %v, want %v", !tc.marker, tc.marker)
			}
			opts := parseByNATSServer(t, got)
			if len(opts.Users) != len(users.List()) {
				t.Fatalf("nats-server reads %d users, want %d", len(opts.Users), len(users.List()))
			}

			out := filepath.Join(t.TempDir(), "nats-auth.conf")
			if err := os.WriteFile(out, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, err := runNATSConfigArgs(t, append([]string{"--auth", exampleUsers, "-o", out}, tc.args...)...)
			if err != nil || stdout != "" {
				t.Fatalf("nats-config -o: %v, stdout %q", err, stdout)
			}
			b, err := os.ReadFile(out)
			if err != nil || string(b) != tc.want {
				t.Fatalf("-o file holds %q, %v", b, err)
			}
			if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("-o file mode %v, %v; want 0600", st.Mode().Perm(), err)
			}

			stdout, err = runNATSConfigArgs(t, append([]string{"--auth", exampleUsers, "--json"}, tc.args...)...)
			var r natsConfigResult
			if err != nil || json.Unmarshal([]byte(stdout), &r) != nil || r.Config != tc.want || r.Filtered != tc.marker || r.Users != len(users.List()) {
				t.Fatalf("nats-config --json: %v, %+v", err, r)
			}
		})
	}
}

// TestNATSConfig_BadInputs: every bad input is a usage error (exit 2)
// naming what was wrong, and nothing is printed or written.
func TestNATSConfig_BadInputs(t *testing.T) {
	noAdmin := writeTestFile(t, "users.yaml", "users:\n  - {name: ann, password: ann-secret, tenant: acme, role: client}\n")
	badUsers := writeTestFile(t, "bad-users.yaml", "users:\n  - {name: ann, tenant: acme, role: client}\n")
	badRules := writeTestFile(t, "rules.yaml", "collections:\n  lists:\n    read: [{user: owner}]\n    write: [{group: ''}]\n")
	missing := filepath.Join(t.TempDir(), "none.yaml")
	out := filepath.Join(t.TempDir(), "out.conf")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no --auth", nil, []string{"--auth USERS.yaml is required"}},
		{"missing users file", []string{"--auth", missing}, []string{"--auth", "none.yaml"}},
		{"bad users file", []string{"--auth", badUsers}, []string{"--auth", "ann"}},
		{"no admin", []string{"--auth", noAdmin}, []string{"no user has role admin"}},
		{"bad rules", []string{"--auth", exampleUsers, "--rules", badRules}, []string{"--rules", badRules, `collection "lists"`, `field "group"`}},
		{"missing rules", []string{"--auth", exampleUsers, "--rules", missing}, []string{"--rules", "none.yaml"}},
		{"rules and filtered", []string{"--auth", exampleUsers, "--rules", writeTestFile(t, "ok.yaml", serveTestRules), "--filtered"}, []string{"--rules or --filtered, not both"}},
		{"argument", []string{"--auth", exampleUsers, "extra"}, []string{"takes no arguments", "extra"}},
		{"unknown flag", []string{"--auth", exampleUsers, "--nats", "x"}, []string{"nats"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, err := runNATSConfigArgs(t, append(tc.args, "-o", out)...)
			if !errors.Is(err, ErrUsage) || ExitCode(err) != 2 {
				t.Fatalf("nats-config %q: %v, want a usage error", tc.args, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if stdout != "" {
				t.Errorf("printed %q on a refused input", stdout)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("-o file written on a refused input: %v", err)
			}
		})
	}
}
