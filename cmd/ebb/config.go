package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/deploy/server"
)

// serveFile is the configuration of `ebb serve`: the shape of its YAML
// config file, of EBB_SERVE_* variables, and of --print-config. Settings
// are layered, each over the one before: the defaults (defaultServeFile),
// the file (--config, env EBB_CONFIG), the environment (EBB_SERVE_ plus the
// key in capitals with "_" for ".", such as EBB_SERVE_LISTEN_HTTP), then the
// flags given on the command line.
type serveFile struct {
	Data      string          `yaml:"data" json:"data"` // data directory: JetStream storage, the view, recorded policies
	Listen    listenConfig    `yaml:"listen" json:"listen"`
	NATS      natsConfig      `yaml:"nats" json:"nats"`
	View      viewConfig      `yaml:"view" json:"view"`
	Projector projectorConfig `yaml:"projector" json:"projector"`
	Policies  policyConfig    `yaml:"policies" json:"policies"`
	Auth      authConfig      `yaml:"auth" json:"auth"`
	Rules     string          `yaml:"rules" json:"rules"` // sync rules file (projection/rules); needs auth
	TLS       tlsConfig       `yaml:"tls" json:"tls"`
	Keys      keysConfig      `yaml:"keys" json:"keys"`
	Limits    limitsConfig    `yaml:"limits" json:"limits"`
	Telemetry telemetryConfig `yaml:"telemetry" json:"telemetry"`
	Log       logConfig       `yaml:"log" json:"log"`
}

type listenConfig struct {
	NATS string `yaml:"nats" json:"nats"` // the embedded NATS server's client listener
	HTTP string `yaml:"http" json:"http"` // health, metrics, gateway
}

type natsConfig struct {
	// URLs of an existing NATS JetStream server or cluster; empty runs the
	// embedded server in the data directory.
	URLs []string `yaml:"urls" json:"urls" secret:"url"`
	// Replicas is how many copies of each stream a cluster keeps; 0 means 1.
	Replicas int `yaml:"replicas" json:"replicas"`
	// FsyncInterval of the embedded JetStream; 0 fsyncs every write before acking.
	FsyncInterval duration `yaml:"fsync_interval" json:"fsync_interval"`
}

type viewConfig struct {
	// Path of the bbolt view; empty means view.db in the data directory.
	Path string `yaml:"path" json:"path"`
	// PostgresURL puts the view in PostgreSQL (documents as JSONB in the
	// schema "ebb"); Path must then be empty.
	PostgresURL string `yaml:"postgres_url" json:"postgres_url" secret:"url"`
}

// projectorConfig runs the projector as a projection.Group: several ebb
// servers on one PostgreSQL view, one active projector per partition.
type projectorConfig struct {
	// Partitions splits the projector's work in this many partitions,
	// each applied by whichever server holds its KV lease; 0 runs one
	// projector with no lease (a single server). Every server of one view
	// must use the same number, and it is fixed once the view is
	// partitioned. Above 1 needs the PostgreSQL view.
	Partitions int `yaml:"partitions" json:"partitions"`
	// LeaseTTL is how long a partition's lease lives unrenewed: a dead
	// server's partitions are taken over within about LeaseTTL and a
	// quarter. 0 means projection.DefaultLeaseTTL (3s); every server must
	// use the same.
	LeaseTTL duration `yaml:"lease_ttl" json:"lease_ttl"`
}

type authConfig struct {
	File string    `yaml:"file" json:"file"` // YAML users file (deploy/auth); empty: no authentication
	JWT  jwtConfig `yaml:"jwt" json:"jwt"`   // login tokens from the app's identity provider
}

// jwtConfig turns on login with JWTs from the app's identity provider
// (deploy/auth/jwtlogin), beside the users file; empty issuer: off.
type jwtConfig struct {
	Issuer        string   `yaml:"issuer" json:"issuer"`                   // required "iss"
	Audience      string   `yaml:"audience" json:"audience"`               // required among "aud"
	JWKSURL       string   `yaml:"jwks_url" json:"jwks_url"`               // the provider's key set
	PublicKeyFile string   `yaml:"public_key_file" json:"public_key_file"` // or a PEM public key
	UserClaim     string   `yaml:"user_claim" json:"user_claim"`           // default sub
	TenantClaim   string   `yaml:"tenant_claim" json:"tenant_claim"`       // default tenant
	RolesClaim    string   `yaml:"roles_claim" json:"roles_claim"`         // default roles
	Leeway        duration `yaml:"leeway" json:"leeway"`                   // clock skew on exp/nbf; 0: 30s
	Refresh       duration `yaml:"refresh" json:"refresh"`                 // JWKS refresh; 0: 5m
}

type tlsConfig struct {
	Cert     string `yaml:"cert" json:"cert"`
	Key      string `yaml:"key" json:"key"`
	ClientCA string `yaml:"client_ca" json:"client_ca"`
}

type keysConfig struct {
	File string `yaml:"file" json:"file"` // key file encrypting JetStream and the view; empty: plaintext
}

type limitsConfig struct {
	HTTPMaxBody             int64    `yaml:"http_max_body" json:"http_max_body"`
	HTTPMaxLongPolls        int      `yaml:"http_max_long_polls" json:"http_max_long_polls"`
	HTTPMaxLongPollsPerUser int      `yaml:"http_max_long_polls_per_user" json:"http_max_long_polls_per_user"`
	HTTPHeaderTimeout       duration `yaml:"http_header_timeout" json:"http_header_timeout"`
	// The gateway's per-identity write logs: how many open at once, and
	// how long one stays open idle (negative: closed only to keep the
	// bound).
	HTTPMaxWriteLogs int      `yaml:"http_max_write_logs" json:"http_max_write_logs"`
	HTTPWriteLogIdle duration `yaml:"http_write_log_idle" json:"http_write_log_idle"`
	// With --auth: per-user publish rate and per-tenant storage quotas
	// (see deploy/auth's Quotas); zero takes the users file's limits,
	// else auth's defaults.
	PublishEventsPerSecond float64 `yaml:"publish_events_per_second" json:"publish_events_per_second"`
	PublishBytesPerSecond  int64   `yaml:"publish_bytes_per_second" json:"publish_bytes_per_second"`
	TenantStorageBytes     int64   `yaml:"tenant_storage_bytes" json:"tenant_storage_bytes"`
}

// telemetryConfig sets the OpenTelemetry variables of the same meaning
// (OTEL_SERVICE_NAME, OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER,
// OTEL_EXPORTER_OTLP_ENDPOINT); a variable set in the environment wins.
type telemetryConfig struct {
	ServiceName     string `yaml:"service_name" json:"service_name"`
	TracesExporter  string `yaml:"traces_exporter" json:"traces_exporter"`
	MetricsExporter string `yaml:"metrics_exporter" json:"metrics_exporter"`
	OTLPEndpoint    string `yaml:"otlp_endpoint" json:"otlp_endpoint"`
}

type logConfig struct {
	Format string `yaml:"format" json:"format"` // text, json or auto
	Level  string `yaml:"level" json:"level"`   // debug, info, warn, error
}

// defaultServeFile is the configuration with nothing given.
func defaultServeFile() serveFile {
	return serveFile{
		Data:   "./ebb-data",
		Listen: listenConfig{NATS: embedded.DefaultListen, HTTP: "127.0.0.1:8080"},
		Limits: limitsConfig{
			HTTPMaxBody:             8 << 20,
			HTTPMaxLongPolls:        gateway.DefaultMaxLongPolls,
			HTTPMaxLongPollsPerUser: gateway.DefaultMaxLongPollsPerUser,
			HTTPHeaderTimeout:       duration(10 * time.Second),
			HTTPMaxWriteLogs:        gateway.DefaultMaxOpenLogs,
			HTTPWriteLogIdle:        duration(gateway.DefaultIdleClose),
		},
		Telemetry: telemetryConfig{ServiceName: "ebb"},
		Log:       logConfig{Format: "auto", Level: "info"},
	}
}

// duration is a time.Duration written as "10s" in YAML and JSON.
type duration time.Duration

func (d duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as 10s or 1m30s, got %q", b)
	}
	*d = duration(v)
	return nil
}

// errConfig marks a configuration file or variable that could not be used.
// It is a usage error: exit 2.
var errConfig = errors.New("bad configuration")

// configError is an errConfig naming where: the file and line, or the
// variable.
type configError struct {
	where string // "ebb.yaml:12" or "EBB_SERVE_LISTEN_HTTP"
	msg   string
}

func (e *configError) Error() string { return e.where + ": " + e.msg }

func (e *configError) Is(target error) bool { return target == errConfig || target == ErrUsage }

// loadServeFile decodes the YAML config file at path over c. An unknown
// key, or a value of the wrong type, is a *configError naming the key and
// its line; it reports the first.
func loadServeFile(path string, c *serveFile) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return &configError{where: path, msg: fmt.Sprintf("read config: %v", errors.Unwrap(err))}
	}
	return decodeServeFile(path, b, c)
}

func decodeServeFile(name string, b []byte, c *serveFile) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file changes nothing
		}
		return &configError{where: name, msg: oneLine(err.Error())}
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	if err := checkKeys(name, root, reflect.TypeOf(*c), ""); err != nil {
		return err
	}
	if err := root.Decode(c); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) && len(te.Errors) > 0 {
			return &configError{where: name, msg: oneLine(te.Errors[0])}
		}
		return &configError{where: name, msg: oneLine(err.Error())}
	}
	return nil
}

// checkKeys walks the mapping n against the struct type t and reports the
// first key t has no field for, with its line and the keys it knows.
func checkKeys(name string, n *yaml.Node, t reflect.Type, prefix string) error {
	if t.Kind() != reflect.Struct || n.Kind != yaml.MappingNode {
		return nil // scalars, lists and maps are checked by decoding
	}
	fields := map[string]reflect.Type{}
	var known []string
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = t.Field(i).Type
		known = append(known, tag)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		ft, ok := fields[k.Value]
		if !ok {
			return &configError{where: fmt.Sprintf("%s:%d", name, k.Line),
				msg: fmt.Sprintf("unknown key %q (known under %s: %s)", prefix+k.Value, orTop(prefix), strings.Join(known, ", "))}
		}
		if err := checkKeys(name, v, ft, prefix+k.Value+"."); err != nil {
			return err
		}
	}
	return nil
}

func orTop(prefix string) string {
	if prefix == "" {
		return "the top level"
	}
	return strings.TrimSuffix(prefix, ".")
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "yaml: ", "")), " ")
}

// configKey is one setting: its dotted key and where it is stored.
type configKey struct {
	key    string // "listen.http"
	value  reflect.Value
	secret string // "url": a URL whose password is redacted when printed
}

// env is the name of the variable that sets k.
func (k configKey) env() string {
	return "EBB_SERVE_" + strings.ToUpper(strings.ReplaceAll(k.key, ".", "_"))
}

// keysOf lists the settings of c (a pointer to a struct), depth first.
func keysOf(c any) []configKey {
	var out []configKey
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			f := v.Field(i)
			if f.Kind() == reflect.Struct {
				walk(f, prefix+tag+".")
				continue
			}
			out = append(out, configKey{key: prefix + tag, value: f, secret: t.Field(i).Tag.Get("secret")})
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

// applyEnv sets each setting of c whose EBB_SERVE_* variable is set.
// Lists are comma-separated; maps are KEY=VALUE pairs, comma-separated.
func applyEnv(c *serveFile, getenv func(string) string) error {
	for _, k := range keysOf(c) {
		s := getenv(k.env())
		if s == "" {
			continue
		}
		if err := setString(k.value, s); err != nil {
			return &configError{where: k.env(), msg: err.Error()}
		}
	}
	return nil
}

// setString parses s into v by v's type.
func setString(v reflect.Value, s string) error {
	if u, ok := v.Addr().Interface().(interface{ UnmarshalText([]byte) error }); ok {
		return u.UnmarshalText([]byte(s))
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("want an integer, got %q", s)
		}
		v.SetInt(n)
	case reflect.Slice:
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	case reflect.Map:
		m := map[string]string{}
		for _, p := range strings.Split(s, ",") {
			k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
			if !ok || k == "" || val == "" {
				return fmt.Errorf("want KEY=VALUE[,KEY=VALUE...], got %q", s)
			}
			m[k] = val
		}
		v.Set(reflect.ValueOf(m))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}

// redacted returns a copy of c fit to print: the password of every URL
// setting is replaced by "REDACTED".
func (c serveFile) redacted() serveFile {
	out := c
	out.NATS.URLs = slices.Clone(c.NATS.URLs)
	out.Policies.Collections = c.Policies.Collections
	for _, k := range keysOf(&out) {
		if k.secret != "url" {
			continue
		}
		switch k.value.Kind() {
		case reflect.String:
			k.value.SetString(redactURL(k.value.String()))
		case reflect.Slice:
			for i := 0; i < k.value.Len(); i++ {
				k.value.Index(i).SetString(redactURL(k.value.Index(i).String()))
			}
		}
	}
	return out
}

// redactURL hides the password or token in raw, one URL or several
// separated by commas, in every form nats.go takes (server.RedactURL).
func redactURL(raw string) string { return server.RedactURL(raw) }

// printConfig writes c, redacted, as YAML or JSON.
func printConfig(w io.Writer, c serveFile, asJSON bool) error {
	r := c.redacted()
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(r); err != nil {
		return err
	}
	return enc.Close()
}
