package main

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/keys"
)

func TestSecurity_TLS(t *testing.T) {
	certs := embeddedtest.MustCerts(t)
	srv := serveInProcess(t, "", "--tls-cert", certs.ServerCert, "--tls-key", certs.ServerKey)
	if !strings.HasPrefix(srv.nats, "tls://") || !strings.HasPrefix(srv.http, "https://") {
		t.Fatalf("ready line shows %s and %s, want tls:// and https://", srv.nats, srv.http)
	}
	base := map[string]string{"EBB_NATS": srv.nats, "EBB_TENANT": "acme"}
	alice := with(base, "EBB_DATA", filepath.Join(t.TempDir(), "alice"), "EBB_TLS_CA", certs.CA)
	bob := with(base, "EBB_DATA", filepath.Join(t.TempDir(), "bob"), "EBB_TLS_CA", certs.CA)

	for name, env := range map[string]map[string]string{
		"no CA":    with(alice, "EBB_TLS_CA", ""),
		"wrong CA": with(alice, "EBB_TLS_CA", certs.OtherCA),
	} {
		t.Run(name, func(t *testing.T) {
			_, stderr, err := cli(env, "sync", "--timeout", "10s")
			if !errors.Is(err, errRefused) {
				t.Fatalf("sync without the server's CA: %v, want a refusal", err)
			}
			if !strings.Contains(stderr, "certificate signed by unknown authority") {
				t.Errorf("stderr %q does not say why", stderr)
			}
		})
	}
	if out := mustCLI(t, alice, "put", "todos", "t1", `{"title":"over tls"}`); !strings.Contains(out, "synced") {
		t.Fatalf("alice put: %q", out)
	}
	if out := mustCLI(t, bob, "sync", "--timeout", "20s"); !strings.Contains(out, "pulled 1") {
		t.Fatalf("bob sync: %q", out)
	}
	if out := mustCLI(t, bob, "get", "todos", "t1"); !strings.Contains(out, "over tls") {
		t.Fatalf("bob get: %q", out)
	}

	t.Run("https", func(t *testing.T) {
		if _, err := http.Get(srv.http + "/healthz"); err == nil {
			t.Fatal("https without the CA succeeded")
		}
		tc, err := embedded.LoadClientTLS(certs.CA, "", "")
		if err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
		resp, err := c.Get(srv.http + "/v1/acme/docs/todos/t1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET doc over https: %d", resp.StatusCode)
		}
	})
}

func TestSecurity_TLSClientCertificates(t *testing.T) {
	certs := embeddedtest.MustCerts(t)
	srv := serveInProcess(t, "", "--tls-cert", certs.ServerCert, "--tls-key", certs.ServerKey, "--tls-client-ca", certs.CA)
	env := map[string]string{"EBB_NATS": srv.nats, "EBB_TENANT": "acme", "EBB_DATA": filepath.Join(t.TempDir(), "c"), "EBB_TLS_CA": certs.CA}
	if _, _, err := cli(env, "sync", "--timeout", "10s"); !errors.Is(err, errRefused) || !errors.Is(err, embedded.ErrClientCertRequired) {
		t.Fatalf("sync without a client certificate: %v, want refused for want of a certificate", err)
	}
	env = with(env, "EBB_TLS_CERT", certs.ClientCert, "EBB_TLS_KEY", certs.ClientKey)
	if out := mustCLI(t, env, "sync", "--timeout", "20s"); !strings.Contains(out, "pushed 0") {
		t.Fatalf("sync with a client certificate: %q", out)
	}
	tc, _ := embedded.LoadClientTLS(certs.CA, "", "")
	if resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tc}}).Get(srv.http + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("https without a client certificate succeeded")
	}
	tc, _ = embedded.LoadClientTLS(certs.CA, certs.ClientCert, certs.ClientKey)
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tc}}).Get(srv.http + "/healthz")
	if err != nil {
		t.Fatalf("https with a client certificate: %v", err)
	}
	resp.Body.Close()
}

// grepTree returns the files under dir whose bytes contain marker.
func grepTree(t *testing.T, dir string, marker []byte) (hits []string, files int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, marker) {
			hits = append(hits, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits, files
}

func TestSecurity_EncryptedJetStream(t *testing.T) {
	const marker = "ebb-marker-5c1f9e2a"
	keyFile := writeFile(t, "key", "a long passphrase nobody guesses\n")
	run := func(t *testing.T, data string, args ...string) {
		srv := serveInProcess(t, data, args...)
		env := map[string]string{"EBB_NATS": srv.nats, "EBB_TENANT": "acme", "EBB_DATA": filepath.Join(t.TempDir(), "c")}
		if out := mustCLI(t, env, "put", "notes", "n1", `{"text":"`+marker+`"}`); !strings.Contains(out, "synced") {
			t.Fatalf("put: %q", out)
		}
		if out := mustCLI(t, env, "sync", "--timeout", "20s"); !strings.Contains(out, "conflicts 0") {
			t.Fatalf("sync: %q", out)
		}
		if err := srv.stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
	}

	// The control: without a key the marker is on disk, so the search works.
	plain := t.TempDir()
	run(t, plain)
	if hits, _ := grepTree(t, filepath.Join(plain, "jetstream"), []byte(marker)); len(hits) == 0 {
		t.Fatal("control: marker not found in an unencrypted store; the search proves nothing")
	}

	// Only the jetstream directory here; TestSecurity_AtRest searches the
	// whole data directory, the encrypted view.db included.
	data := t.TempDir()
	run(t, data, "--key-file", keyFile)
	hits, files := grepTree(t, filepath.Join(data, "jetstream"), []byte(marker))
	if len(hits) > 0 {
		t.Fatalf("marker in plain text in %v", hits)
	}
	t.Logf("marker absent from %d files under %s", files, filepath.Join(data, "jetstream"))

	// Restarting with the same key works (the salt and check stay put).
	srv := serveInProcess(t, data, "--key-file", keyFile)
	if err := srv.stop(); err != nil {
		t.Fatalf("restart with the same key: %v", err)
	}

	for name, args := range map[string][]string{
		"another key": {"--key-file", writeFile(t, "key2", "another passphrase")},
		"no key":      nil,
	} {
		t.Run(name, func(t *testing.T) {
			m := &Main{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
			err := m.Run(t.Context(), append([]string{"serve", "--data", data, "--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0"}, args...))
			if !errors.Is(err, keys.ErrWrongKey) {
				t.Fatalf("serve: %v, want ErrWrongKey", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

func TestSecurity_SlowlorisCut(t *testing.T) {
	srv := serveInProcess(t, "", "--http-header-timeout", "500ms")
	addr := strings.TrimPrefix(srv.http, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	// Dribble one header byte at a time; the server must cut the
	// connection although bytes keep coming.
	cut := make(chan error, 1)
	go func() {
		_, err := bufio.NewReader(conn).ReadString('\n')
		cut <- err
	}()
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case err := <-cut:
			t.Logf("slow client cut after %s (%d bytes dribbled): %v", time.Since(start).Round(time.Millisecond), i, err)
			return
		case <-tick.C:
			if i >= 200 {
				t.Fatal("slow client still connected after 200 dribbled bytes")
			}
			_, _ = conn.Write([]byte("X"))
			// Everyone else is served meanwhile.
			if i%5 == 0 {
				if code, _ := httpGet(t, srv.http+"/healthz"); code != 200 {
					t.Fatalf("healthz during the slow client: %d", code)
				}
			}
		}
	}
}

func TestSecurity_ServeFlagErrors(t *testing.T) {
	certs := embeddedtest.MustCerts(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"cert without key", []string{"--tls-cert", certs.ServerCert}, "need both a certificate and a key"},
		{"missing client CA", []string{"--tls-cert", certs.ServerCert, "--tls-key", certs.ServerKey, "--tls-client-ca", "/nonexistent"}, "client ca"},
		{"bad users file", []string{"--auth", writeFile(t, "u.yaml", "users: [{name: a, role: root}]")}, `role "root"`},
		{"key file with external nats", []string{"--nats", "nats://127.0.0.1:1", "--key-file", writeFile(t, "k", "x")}, "--key-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			m := &Main{Stdout: &bytes.Buffer{}, Stderr: &stderr, Getenv: func(string) string { return "" }}
			err := m.Run(t.Context(), append([]string{"serve", "--data", t.TempDir(), "--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0"}, tt.args...))
			if !errors.Is(err, ErrUsage) || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("serve %v: %v, want a usage error saying %q", tt.args, err, tt.want)
			}
		})
	}
}
