package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ebbsync/ebb/deploy/gateway"
)

// printConfigOf runs `ebb serve --print-config` with env and args and
// returns the configuration it printed (YAML), decoded.
func printConfigOf(t *testing.T, env map[string]string, args ...string) serveFile {
	t.Helper()
	out, stderr, code := runIn(t, env, append([]string{"serve", "--print-config"}, args...)...)
	if code != 0 {
		t.Fatalf("serve --print-config %v: exit %d: %s", args, code, stderr)
	}
	var c serveFile
	if err := yaml.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("print-config is not YAML: %v\n%s", err, out)
	}
	return c
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ebb.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const sampleConfig = `# a server for the tests
data: /var/lib/ebb
listen:
  nats: 127.0.0.1:4333
  http: 127.0.0.1:8181
nats:
  urls: [nats://127.0.0.1:4222]
  replicas: 3
  fsync_interval: 2s
policies:
  default: merge
  collections:
    todos: manual
limits:
  http_max_body: 1024
  http_header_timeout: 3s
log:
  format: json
`

// Each layer overrides the one before: defaults, file, EBB_SERVE_*, flags.
func TestServeConfig_Layers(t *testing.T) {
	path := writeConfig(t, sampleConfig)
	c := printConfigOf(t, nil, "--config", path)
	if c.Data != "/var/lib/ebb" || c.Listen.HTTP != "127.0.0.1:8181" || c.NATS.Replicas != 3 ||
		time.Duration(c.NATS.FsyncInterval) != 2*time.Second || c.Policies.Default != "merge" || c.Policies.Collections["todos"] != "manual" ||
		c.Limits.HTTPMaxBody != 1024 || c.Log.Format != "json" {
		t.Fatalf("file not applied: %+v", c)
	}
	if c.Log.Level != "info" || c.Limits.HTTPMaxLongPolls == 0 {
		t.Fatalf("defaults lost under the file: %+v", c)
	}

	env := map[string]string{"EBB_CONFIG": path, "EBB_SERVE_LISTEN_HTTP": "127.0.0.1:9090", "EBB_SERVE_LIMITS_HTTP_MAX_BODY": "2048",
		"EBB_SERVE_POLICIES_COLLECTIONS": "notes=reject"}
	c = printConfigOf(t, env)
	if c.Listen.HTTP != "127.0.0.1:9090" || c.Limits.HTTPMaxBody != 2048 || c.Policies.Collections["notes"] != "reject" || c.Data != "/var/lib/ebb" {
		t.Fatalf("environment not applied over the file: %+v", c)
	}

	c = printConfigOf(t, env, "--http-listen", "127.0.0.1:7070", "--policy", "lists=lww", "--replicas", "1")
	if c.Listen.HTTP != "127.0.0.1:7070" || c.Limits.HTTPMaxBody != 2048 || c.NATS.Replicas != 1 ||
		c.Policies.Collections["lists"] != "lww" || c.Policies.Collections["notes"] != "reject" {
		t.Fatalf("flags not applied over the environment: %+v", c)
	}
}

func TestServeConfig_UnknownKeysAndBadValues(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"unknown top-level key", "data: x\nlisten:\n  http: :1\nfrobs: 1\n", `ebb.yaml:4: unknown key "frobs" (known under the top level: data, listen,`},
		{"unknown nested key", "listen:\n  http: :1\n  htpp: :2\n", `ebb.yaml:3: unknown key "listen.htpp" (known under listen: nats, http)`},
		{"wrong type", "nats:\n  replicas: three\n", "line 2"},
		{"bad duration", "limits:\n  http_header_timeout: soon\n", "want a duration"},
		{"postgres url not a url", "view:\n  postgres_url: db.example/ebb\n", "want postgres://"},
		{"view path and postgres", "view:\n  path: v.db\n  postgres_url: postgres://u:p@db/ebb\n", "not both"},
		{"not YAML", "listen: [\n", "ebb.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runIn(t, nil, "serve", "--print-config", "--config", writeConfig(t, tt.body))
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 saying %q", code, stderr, tt.want)
			}
			if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 {
				t.Fatalf("want one line on stderr, got %d:\n%s", n+1, stderr)
			}
		})
	}
	_, stderr, code := runIn(t, map[string]string{"EBB_SERVE_NATS_REPLICAS": "x"}, "serve", "--print-config")
	if code != 2 || !strings.Contains(stderr, "EBB_SERVE_NATS_REPLICAS: want an integer") {
		t.Fatalf("bad variable: %d %q", code, stderr)
	}
}

// --print-config hides passwords in URLs, in YAML and in JSON.
func TestServeConfig_PrintRedactsSecrets(t *testing.T) {
	args := []string{"serve", "--print-config", "--nats", "nats://svc:hunter2@10.0.0.1:4222,nats://10.0.0.2:4222"}
	out, _, code := runIn(t, nil, args...)
	if code != 0 || strings.Contains(out, "hunter2") || !strings.Contains(out, "svc:REDACTED@10.0.0.1") || !strings.Contains(out, "nats://10.0.0.2:4222") {
		t.Fatalf("yaml: exit %d\n%s", code, out)
	}
	out, _, code = runIn(t, nil, append(args, "--json")...)
	var c serveFile
	if code != 0 || json.Unmarshal([]byte(out), &c) != nil || strings.Contains(out, "hunter2") || len(c.NATS.URLs) != 2 {
		t.Fatalf("json: exit %d\n%s", code, out)
	}
}

// The example configuration the README shows is accepted as it stands
// and names every setting there is.
func TestServeConfig_ExampleFile(t *testing.T) {
	c := printConfigOf(t, nil, "--config", filepath.Join("testdata", "ebb.example.yaml"))
	if c.Data != "/var/lib/ebb" || c.Policies.Collections["notes"] != "merge" || c.Listen.HTTP != "0.0.0.0:8080" {
		t.Fatalf("example not applied: %+v", c)
	}
	b, err := os.ReadFile(filepath.Join("testdata", "ebb.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keysOf(&c) {
		leaf := k.key[strings.LastIndex(k.key, ".")+1:]
		if !strings.Contains(string(b), leaf+":") {
			t.Errorf("the example does not show %s", k.key)
		}
	}
}

// view.path moves the view out of the data directory, for serve and for
// verify reading the same file.
func TestServeConfig_ViewPathServedAndVerified(t *testing.T) {
	data := t.TempDir()
	view := filepath.Join(t.TempDir(), "elsewhere.db")
	cfg := writeConfig(t, "data: "+data+"\nview:\n  path: "+view+"\npolicies:\n  collections:\n    todos: manual\n")
	s := serveInProcess(t, data, "--config", cfg)
	writeOne(t, newPhone(t, s.http, "c1"), "todos", "t1", 0, `{"title":"milk"}`)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(view); err != nil {
		t.Fatalf("view not at view.path: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, viewFile)); !os.IsNotExist(err) {
		t.Fatalf("a view was made in the data directory too: %v", err)
	}
	out, stderr, code := runIn(t, nil, "verify", "--config", cfg, "--json")
	var rec verifyRecord
	if code != 0 || json.Unmarshal([]byte(out), &rec) != nil || !rec.OK || rec.Docs != 1 {
		t.Fatalf("verify --config: %d %s %s", code, out, stderr)
	}
}

func TestServeConfig_TelemetryDefaultsForOTELVariables(t *testing.T) {
	tc := telemetryConfig{TracesExporter: "otlp", OTLPEndpoint: "http://collector:4318"}
	env := map[string]string{"OTEL_TRACES_EXPORTER": "console"}
	get := tc.otelGetenv(func(k string) string { return env[k] })
	if get("OTEL_TRACES_EXPORTER") != "console" || get("OTEL_EXPORTER_OTLP_ENDPOINT") != "http://collector:4318" || get("OTEL_METRICS_EXPORTER") != "" {
		t.Fatalf("otel variables: %q %q %q", get("OTEL_TRACES_EXPORTER"), get("OTEL_EXPORTER_OTLP_ENDPOINT"), get("OTEL_METRICS_EXPORTER"))
	}
}

// The gateway writer's bounds on its open logs come from flags or the
// file, reach the server's config, and refuse values that mean nothing.
func TestServeConfig_WriteLogLimits(t *testing.T) {
	c := printConfigOf(t, nil, "--http-max-write-logs", "12", "--http-write-log-idle", "-1s")
	if c.Limits.HTTPMaxWriteLogs != 12 || time.Duration(c.Limits.HTTPWriteLogIdle) != -time.Second {
		t.Fatalf("flags not applied: %+v", c.Limits)
	}
	if got := c.serveConfig(false).writeLogs; got.MaxOpenLogs != 12 || got.IdleClose != -time.Second {
		t.Fatalf("server's write-log limits %+v, want 12 and -1s", got)
	}
	if d := defaultServeFile(); d.Limits.HTTPMaxWriteLogs != gateway.DefaultMaxOpenLogs || time.Duration(d.Limits.HTTPWriteLogIdle) != gateway.DefaultIdleClose {
		t.Fatalf("defaults %+v, want the gateway's", d.Limits)
	}
	for _, args := range [][]string{{"--http-max-write-logs", "0"}, {"--http-max-write-logs", "-3"}, {"--http-write-log-idle", "0s"}} {
		_, stderr, code := runIn(t, nil, append([]string{"serve", "--print-config"}, args...)...)
		if code != 2 || !strings.Contains(stderr, args[0]) {
			t.Errorf("serve %v: exit %d, %q; want a usage error naming %s", args, code, stderr, args[0])
		}
	}
}
