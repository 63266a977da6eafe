package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecurity_AtRest writes documents holding a marker through a client
// and a server that both have --key-file, syncs, stops everything, and
// searches every file under both data directories (the client's ebb.db,
// the server's jetstream/ and view.db, ...) for the marker in plain text.
// A control run without keys must find it, so the search proves something.
// Then the client store reopens with the right key, and refuses another
// key and no key with a one-line error and a non-zero exit; the server's
// view (ebb verify) does the same.
func TestSecurity_AtRest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := buildEbb()
	if err != nil {
		t.Fatal(err)
	}
	const marker = "ebb-atrest-marker-7d41c0b3"
	keyFile := writeFile(t, "key", "a passphrase for the client and the server\n")
	otherKey := writeFile(t, "key2", strings.Repeat("ab", 32))

	// client runs the built binary as a client of data against natsURL.
	client := func(t *testing.T, data, natsURL, keyFile string, args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "EBB_DATA="+data, "EBB_NATS="+natsURL, "EBB_TENANT=acme", "EBB_KEY_FILE="+keyFile)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("run %v: %v", args, err)
		}
		return stdout.String(), stderr.String(), code
	}
	mustClient := func(t *testing.T, data, natsURL, keyFile, want string, args ...string) string {
		t.Helper()
		out, errOut, code := client(t, data, natsURL, keyFile, args...)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("ebb %s: exit %d, stdout %q (want %q), stderr %q", strings.Join(args, " "), code, out, want, errOut)
		}
		return out
	}

	// run writes through a client and a server with keyFile (none if
	// empty), syncs, stops the server, and returns the two data dirs.
	run := func(t *testing.T, keyFile string) (server, clientDir string) {
		server, clientDir = filepath.Join(t.TempDir(), "server"), filepath.Join(t.TempDir(), "client")
		var args []string
		if keyFile != "" {
			args = []string{"--key-file", keyFile}
		}
		srv := serveInProcess(t, server, args...)
		mustClient(t, clientDir, srv.nats, keyFile, "synced", "put", "notes", "n1", `{"text":"`+marker+`"}`)
		mustClient(t, clientDir, srv.nats, keyFile, "synced", "put", "todos", "t1", `{"title":"`+marker+` one"}`)
		mustClient(t, clientDir, srv.nats, keyFile, "synced", "patch", "todos", "t1", `{"title":"`+marker+` two"}`)
		mustClient(t, clientDir, srv.nats, keyFile, "", "sync", "--timeout", "20s")
		if err := srv.stop(); err != nil {
			t.Fatalf("stop server: %v", err)
		}
		return server, clientDir
	}

	// The control: without keys the marker is on disk in each store.
	plainServer, plainClient := run(t, "")
	for _, p := range []string{filepath.Join(plainServer, "jetstream"), filepath.Join(plainServer, viewFile), plainClient} {
		if hits, _ := grepTree(t, p, []byte(marker)); len(hits) == 0 {
			t.Fatalf("control: marker not found under %s; the search proves nothing", p)
		}
	}

	server, clientDir := run(t, keyFile)
	for _, dir := range []string{server, clientDir} {
		hits, files := grepTree(t, dir, []byte(marker))
		if len(hits) > 0 {
			t.Fatalf("marker in plain text in %v", hits)
		}
		t.Logf("marker absent from all %d files under %s", files, dir)
	}

	// The right key reads the document back, offline.
	const offline = "nats://127.0.0.1:1"
	if out := mustClient(t, clientDir, offline, keyFile, marker, "get", "notes", "n1"); !strings.Contains(out, marker) {
		t.Fatalf("get: %q", out)
	}

	// Another key, or none, fails clearly: non-zero exit, one line naming
	// the key problem, and the store is not touched.
	for name, kf := range map[string]string{"another key": otherKey, "no key": ""} {
		t.Run("client "+name, func(t *testing.T) {
			out, errOut, code := client(t, clientDir, offline, kf, "get", "notes", "n1")
			if code == 0 || strings.Contains(out, marker) {
				t.Fatalf("exit %d, stdout %q", code, out)
			}
			if lines := strings.Split(strings.TrimSpace(errOut), "\n"); len(lines) != 1 || !strings.Contains(errOut, "wrong encryption key") {
				t.Fatalf("stderr %q: want one line naming the wrong key", errOut)
			}
			t.Logf("refused: %s", strings.TrimSpace(errOut))
		})
	}
	mustClient(t, clientDir, offline, keyFile, marker, "get", "notes", "n1")

	// A key whose check file is gone (copied store, lost files) is still
	// refused by the store's own check value.
	t.Run("client another key without check file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "copy")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(clientDir, "ebb.db"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ebb.db"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := client(t, dir, offline, otherKey, "get", "notes", "n1")
		if code == 0 || !strings.Contains(errOut, "wrong encryption key") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		out, errOut, code = client(t, dir, offline, "", "get", "notes", "n1")
		if code == 0 || !strings.Contains(errOut, "wrong encryption key") {
			t.Fatalf("no key: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})

	// The server's view: verify opens it (and JetStream) with the key, and
	// refuses without it.
	mustCLI(t, nil, "verify", "--data", server, "--key-file", keyFile)
	for name, args := range map[string][]string{"another key": {"--key-file", otherKey}, "no key": nil} {
		t.Run("verify "+name, func(t *testing.T) {
			_, errOut, err := cli(nil, append([]string{"verify", "--data", server}, args...)...)
			if err == nil || ExitCode(err) == 0 || !strings.Contains(errOut, "wrong encryption key") {
				t.Fatalf("verify: %v, stderr %q", err, errOut)
			}
		})
	}
}
