package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Every command has help naming its arguments with an example, reached
// both as `ebb help CMD` and `ebb CMD --help`, and it differs from the
// general list.
func TestHelp_EveryCommand(t *testing.T) {
	general, _, _ := runIn(t, nil, "help")
	for name, cmd := range commands {
		t.Run(name, func(t *testing.T) {
			byHelp, stderr, code := runIn(t, nil, "help", name)
			if code != 0 {
				t.Fatalf("ebb help %s: exit %d: %s", name, code, stderr)
			}
			want := "Usage: ebb " + name
			if cmd.args != "" {
				want += " " + cmd.args
			}
			if !strings.HasPrefix(byHelp, want+" [flags]\n") || !strings.Contains(byHelp, "\nExamples:\n") || !strings.Contains(byHelp[strings.Index(byHelp, "Examples:"):], "ebb "+name) {
				t.Fatalf("ebb help %s does not name its arguments (%q) and show an example:\n%s", name, want, byHelp)
			}
			if byHelp == general {
				t.Fatalf("ebb help %s prints the general list", name)
			}
			if name == "help" {
				return
			}
			byFlag, _, code := runIn(t, nil, name, "--help")
			if code != 0 || byFlag != byHelp {
				t.Fatalf("ebb %s --help (exit %d) differs from ebb help %s:\n%s", name, code, name, byFlag)
			}
		})
	}
	if out, _, _ := runIn(t, nil, "put", "--help"); !strings.Contains(out, "\nFlags:\n") || !strings.Contains(out, "-tenant") || !strings.Contains(out, "@FILE") {
		t.Fatalf("put --help lists no flags or no @FILE:\n%s", out)
	}
	if out, _, _ := runIn(t, nil, "policy", "set", "--help"); !strings.Contains(out, "Usage: ebb policy set [flags]") || !strings.Contains(out, "-data") {
		t.Fatalf("policy set --help:\n%s", out)
	}
	if _, stderr, code := runIn(t, nil, "help", "frobnicate"); code != 2 || !strings.Contains(stderr, `unknown command "frobnicate"`) {
		t.Fatalf("help of an unknown command: %d %q", code, stderr)
	}
}

func TestVersion(t *testing.T) {
	out, _, code := runIn(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "ebb ") || !strings.Contains(out, "go1.") {
		t.Fatalf("version: %d %q", code, out)
	}
	out, _, code = runIn(t, nil, "version", "--json")
	var bi buildInfo
	if code != 0 || json.Unmarshal([]byte(out), &bi) != nil || bi.Version == "" || !strings.HasPrefix(bi.GoVersion, "go1.") {
		t.Fatalf("version --json: %d %q", code, out)
	}
	linkVersion, linkRevision = "v1.2.3", "abc123"
	t.Cleanup(func() { linkVersion, linkRevision = "", "" })
	if out, _, _ := runIn(t, nil, "version"); !strings.HasPrefix(out, "ebb v1.2.3 (abc123") {
		t.Fatalf("version set at link time: %q", out)
	}
	if _, _, code := runIn(t, nil, "version", "extra"); code != 2 {
		t.Fatalf("version with an argument: exit %d", code)
	}
}

// The completion scripts name every command and each command's flags, and
// the bash one is valid bash.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, stderr, code := runIn(t, nil, "completion", sh)
		if code != 0 {
			t.Fatalf("completion %s: exit %d %s", sh, code, stderr)
		}
		for name := range commands {
			if !strings.Contains(out, name) {
				t.Fatalf("completion %s lacks command %s", sh, name)
			}
		}
		for _, f := range []string{"print-config", "default-policy", "tenant", "context"} {
			if !strings.Contains(out, f) {
				t.Fatalf("completion %s lacks flag %s", sh, f)
			}
		}
		if sh == "bash" {
			if _, err := exec.LookPath("bash"); err == nil {
				cmd := exec.Command("bash", "-n")
				cmd.Stdin = strings.NewReader(out)
				if b, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("bash -n: %v: %s", err, b)
				}
				// Complete "ebb put --ten" in a real bash.
				script := out + "\nCOMP_WORDS=(ebb put --ten); COMP_CWORD=2; _ebb; echo \"${COMPREPLY[@]}\"\n"
				b, err := exec.Command("bash", "-c", script).CombinedOutput()
				if err != nil || strings.TrimSpace(string(b)) != "--tenant" {
					t.Fatalf("bash completion of 'ebb put --ten': %v %q", err, b)
				}
			}
		}
	}
	if _, _, code := runIn(t, nil, "completion", "powershell"); code != 2 {
		t.Fatalf("unknown shell: exit %d", code)
	}
}

// A document comes from the argument, @FILE, or - for stdin.
func TestPut_DocumentFromFileAndStdin(t *testing.T) {
	env := map[string]string{"EBB_DATA": filepath.Join(t.TempDir(), "client"), "EBB_NATS": "nats://127.0.0.1:1"}
	doc := filepath.Join(t.TempDir(), "doc.json")
	if err := os.WriteFile(doc, []byte("{\n  \"title\": \"from a file\"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runIn(t, env, "put", "todos", "t1", "@"+doc); code != 0 {
		t.Fatalf("put @file: %d %s", code, stderr)
	}
	if out, _, _ := runIn(t, env, "get", "todos", "t1"); out != `{"title":"from a file"}`+"\n" {
		t.Fatalf("get after put @file: %q", out)
	}
	var stdout, stderr bytes.Buffer
	m := &Main{Stdin: strings.NewReader(`{"title":"from stdin"}`), Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }}
	if err := m.Run(context.Background(), []string{"put", "todos", "t2", "-"}); err != nil {
		t.Fatalf("put -: %v", err)
	}
	if out, _, _ := runIn(t, env, "get", "todos", "t2"); out != `{"title":"from stdin"}`+"\n" {
		t.Fatalf("get after put -: %q", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte("{\n  \"title\": oops\n}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runIn(t, env, "put", "todos", "t3", "@"+bad); code != 2 || !strings.Contains(stderr, bad+": bad JSON at line 2") {
		t.Fatalf("bad file: %d %q", code, stderr)
	}
	if _, stderr, code := runIn(t, env, "put", "todos", "t3", "@/nonexistent/doc.json"); code != 2 || !strings.Contains(stderr, "no such file") {
		t.Fatalf("missing file: %d %q", code, stderr)
	}
}

// Contexts supply the client flags: flags beat EBB_* variables, which beat
// the context in use.
func TestContext_SaveUseAndPrecedence(t *testing.T) {
	home := t.TempDir()
	dirA, dirB, dirEnv := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b"), filepath.Join(t.TempDir(), "env")
	env := map[string]string{"XDG_CONFIG_HOME": home}
	for _, c := range [][]string{
		{"context", "save", "alice", "--nats", "nats://127.0.0.1:1", "--tenant", "acme", "--data", dirA, "--password", "s3cret"},
		{"context", "save", "bob", "--nats", "nats://127.0.0.1:1", "--data", dirB},
		{"context", "use", "alice"},
	} {
		if _, stderr, code := runIn(t, env, c...); code != 0 {
			t.Fatalf("%v: %d %s", c, code, stderr)
		}
	}
	if st, err := os.Stat(filepath.Join(home, "ebb", "contexts", "alice.json")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("context file: %v %v", st, err)
	}
	out, _, _ := runIn(t, env, "context", "ls")
	if !strings.Contains(out, "* alice") || !strings.Contains(out, "  bob") || strings.Contains(out, "s3cret") {
		t.Fatalf("context ls:\n%s", out)
	}
	var recs []contextRecord
	if out, _, _ := runIn(t, env, "context", "ls", "--json"); json.Unmarshal([]byte(out), &recs) != nil || len(recs) != 2 || !recs[0].Current || recs[0].Password != "REDACTED" {
		t.Fatalf("context ls --json: %s", out)
	}

	// The context in use decides the data directory and tenant.
	if _, stderr, code := runIn(t, env, "put", "todos", "t1", `{"who":"alice"}`); code != 0 {
		t.Fatalf("put under alice: %d %s", code, stderr)
	}
	var st statusRecord
	if out, _, _ := runIn(t, env, "status", "--json"); json.Unmarshal([]byte(out), &st) != nil || st.Tenant != "acme" || st.Pending != 1 {
		t.Fatalf("status under alice: %s", out)
	}
	if _, err := os.Stat(dirA); err != nil {
		t.Fatalf("alice's data directory not used: %v", err)
	}
	// --context picks another; EBB_CONTEXT too.
	if out, _, _ := runIn(t, env, "get", "todos", "t1", "--context", "bob"); out != "" {
		t.Fatalf("bob sees alice's document: %q", out)
	}
	if out, _, _ := runIn(t, with(env, "EBB_CONTEXT", "bob"), "ls", "todos"); out != "" {
		t.Fatalf("EBB_CONTEXT=bob sees alice's documents: %q", out)
	}
	// A variable beats the context; a flag beats the variable.
	if out, _, _ := runIn(t, with(env, "EBB_DATA", dirEnv, "EBB_TENANT", "acme"), "ls", "todos"); out != "" {
		t.Fatalf("EBB_DATA did not override the context: %q", out)
	}
	if out, _, _ := runIn(t, with(env, "EBB_DATA", dirEnv), "ls", "todos", "--data", dirA); out != "t1\n" {
		t.Fatalf("--data did not override EBB_DATA: %q", out)
	}
	// A missing context is one clear line, exit 2.
	if _, stderr, code := runIn(t, env, "ls", "todos", "--context", "carol"); code != 2 || !strings.Contains(stderr, `context "carol": no such context`) {
		t.Fatalf("missing context: %d %q", code, stderr)
	}
	if _, _, code := runIn(t, env, "context", "rm", "alice"); code != 0 {
		t.Fatal("rm alice")
	}
	if out, _, _ := runIn(t, env, "context", "ls"); strings.Contains(out, "alice") {
		t.Fatalf("alice still listed:\n%s", out)
	}
}

// Every command that prints a result takes --json (help and completion
// print text for people and shells).
func TestJSON_EveryCommandHasFlag(t *testing.T) {
	for _, c := range completionSpec(context.Background(), &Main{Getenv: func(string) string { return "" }}) {
		if c.name == "help" || c.name == "completion" {
			continue
		}
		has := false
		for _, f := range c.flags {
			has = has || f.Name == "json"
		}
		if !has {
			t.Errorf("ebb %s has no --json", c.name)
		}
	}
	env := map[string]string{"XDG_CONFIG_HOME": t.TempDir()}
	out, _, code := runIn(t, env, "context", "save", "x", "--nats", "nats://h:4222", "--json")
	var done struct{ Done, Name string }
	if code != 0 || json.Unmarshal([]byte(out), &done) != nil || done.Done != "saved" || done.Name != "x" {
		t.Fatalf("context save --json: %d %q", code, out)
	}
	out, _, code = runIn(t, map[string]string{"EBB_DATA": filepath.Join(t.TempDir(), "c")}, "doctor", "--reset", "--json")
	if code != 0 || !json.Valid([]byte(out)) {
		t.Fatalf("doctor --reset --json on a missing store: %d %q", code, out)
	}
}
