package auth_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"github.com/ebbsync/ebb/deploy/auth"
)

var update = flag.Bool("update", false, "rewrite deploy/nats-auth.conf from deploy/users.example.yaml")

func TestParse_Invalid(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // each must appear in the error
	}{
		{"empty", ``, []string{"no users"}},
		{"unknown key", "users: [{name: a, password: p, tenant: t, role: client, colour: red}]", []string{"colour"}},
		{"no password", "users: [{name: a, tenant: t, role: client}]", []string{"set password or password_hash"}},
		{"both passwords", "users: [{name: a, password: p, password_hash: h, tenant: t, role: client}]", []string{"only one"}},
		{"hash not bcrypt", "users: [{name: a, password_hash: md5, tenant: t, role: client}]", []string{"not a bcrypt hash"}},
		{"client without tenant", "users: [{name: a, password: p, role: client}]", []string{"needs a tenant"}},
		{"bad role", "users: [{name: a, password: p, tenant: t, role: root}]", []string{`role "root"`}},
		{"reserved name", "users: [{name: _ebbx, password: p, role: admin}]", []string{"reserved"}},
		{"durables of a client", "users: [{name: a, password: p, tenant: t, role: client, durables: [d]}]", []string{"durables are for role service"}},
		{"durable owned twice", "users: [{name: a, password: p, tenant: t, role: service, durables: [d]}, {name: b, password: p, tenant: t, role: service, durables: [d]}]",
			[]string{`durable "d" is already owned by "a"`}},
		{"durable not a token", "users: [{name: a, password: p, tenant: t, role: service, durables: [a.b]}]", []string{`durable "a.b"`}},
		{"empty group", "users: [{name: a, password: p, tenant: t, role: client, groups: ['']}]", []string{`user 1 ("a")`, "group", "must not be empty"}},
		{"group with a control character", "users: [{name: a, password: p, tenant: t, role: client, groups: [\"te\\x01am\"]}]", []string{"group", "control character"}},
		{"group twice", "users: [{name: a, password: p, tenant: t, role: client, groups: [team, team]}]", []string{`group "team" listed twice`}},
		{"groups not a list", "users: [{name: a, password: p, tenant: t, role: client, groups: {a: b}}]", []string{"cannot unmarshal"}},
		{"negative limits", "limits: {max_connections: -1, login: {burst: -2}}\nusers: [{name: a, password: p, role: admin}]", []string{"max_connections -1", "login burst -2"}},
		{"duplicate and empty, all at once", "users: [{name: a, password: p, role: admin}, {name: a, password: p, role: admin}, {name: '', password: p, role: admin}]",
			[]string{"duplicate name", "user 3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.Parse([]byte(tt.yaml))
			if !errors.Is(err, auth.ErrInvalidUsers) {
				t.Fatalf("err = %v, want ErrInvalidUsers", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestAuthenticate(t *testing.T) {
	u, err := auth.Load(filepath.Join("..", "users.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := auth.Parse([]byte("users: [{name: bob, password: pw, tenant: acme, role: client}]"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		users    *auth.Users
		user, pw string
		wantErr  error
		wantRole auth.Role
	}{
		{"bcrypt ok", u, "alice", "alice-secret", nil, auth.RoleClient},
		{"bcrypt ok again (cached)", u, "alice", "alice-secret", nil, auth.RoleClient},
		{"bcrypt wrong", u, "alice", "alice-secret2", auth.ErrBadCredentials, ""},
		{"unknown user", u, "mallory", "x", auth.ErrBadCredentials, ""},
		{"plain ok", plain, "bob", "pw", nil, auth.RoleClient},
		{"plain wrong", plain, "bob", "pW", auth.ErrBadCredentials, ""},
		{"plain empty", plain, "bob", "", auth.ErrBadCredentials, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			usr, err := tt.users.Authenticate(tt.user, tt.pw)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if usr.Role != tt.wantRole {
				t.Fatalf("role %q, want %q", usr.Role, tt.wantRole)
			}
		})
	}
}

func TestPermissions_Confined(t *testing.T) {
	alice := auth.User{Name: "alice", Tenant: "acme", Role: auth.RoleClient}
	p := alice.Permissions()
	for _, want := range []string{"ebb.evt.acme.alice.>", "$JS.API.CONSUMER.CREATE.CHANGES.*.ebb.chg.acme.>",
		"$JS.API.CONSUMER.CREATE.RECEIPTS.*.ebb.rcpt.acme.alice", "$JS.API.DIRECT.GET.CHANGES.ebb.chg.acme.>"} {
		if !slices.Contains(p.Publish, want) {
			t.Errorf("client may not publish %s", want)
		}
	}
	if slices.Contains(p.Publish, "ebb.evt.acme.>") {
		t.Errorf("client may publish as any client of its tenant: %v", p.Publish)
	}
	if !slices.Equal(p.Subscribe, []string{"_INBOX_alice.>"}) {
		t.Errorf("client subscribe %v, want only its inbox", p.Subscribe)
	}
	for _, s := range p.Publish {
		if strings.Contains(s, ">") && !strings.Contains(s, ".acme.") || s == ">" || strings.HasPrefix(s, "$JS.API.STREAM.") && !strings.HasPrefix(s, "$JS.API.STREAM.INFO.") {
			t.Errorf("client permission %q is not confined", s)
		}
	}
	svc := auth.User{Name: "billing", Tenant: "acme", Role: auth.RoleService, Durables: []string{"billing"}}.Permissions()
	if slices.ContainsFunc(svc.Publish, func(s string) bool { return strings.HasPrefix(s, "ebb.evt.") }) || !slices.Contains(svc.Publish, "$JS.ACK.CHANGES.billing.>") {
		t.Errorf("service publish %v: want acks of its durable, no events", svc.Publish)
	}
	if slices.Contains(svc.Publish, "$JS.ACK.CHANGES.>") {
		t.Errorf("service may ack for every consumer: %v", svc.Publish)
	}
	// A name that is not a plain token gets an encoded, private inbox.
	if got := auth.InboxPrefix("a.b"); got != "_INBOX_~YS5i" {
		t.Errorf("InboxPrefix(a.b) = %q", got)
	}
	if !(auth.User{Name: "ops", Role: auth.RoleAdmin}).Permissions().All() {
		t.Error("admin is confined")
	}
}

// TestNATSConfig_Golden keeps deploy/nats-auth.conf generated from
// deploy/users.example.yaml by this package, and checks nats-server
// accepts it. Run with -update after changing the permissions.
func TestNATSConfig_Golden(t *testing.T) {
	u, err := auth.Load(filepath.Join("..", "users.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	conf, err := u.NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("..", "nats-auth.conf")
	if *update {
		if err := os.WriteFile(golden, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	have, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(have) != conf {
		t.Fatalf("%s is stale; run go test ./deploy/auth -run Golden -update", golden)
	}
	// nats-server parses it into the same users and permissions.
	full := filepath.Join(t.TempDir(), "server.conf")
	if err := os.WriteFile(full, []byte("jetstream: enabled\n"+conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(full)
	if err != nil {
		t.Fatalf("nats-server refuses the generated config: %v", err)
	}
	want := slices.DeleteFunc(u.NATSUsers(), func(w *server.User) bool { return w.Username == auth.InternalUser })
	if len(opts.Users) != len(want) {
		t.Fatalf("config has %d users, want %d", len(opts.Users), len(want))
	}
	byName := map[string]*server.User{}
	for _, u := range opts.Users {
		byName[u.Username] = u
	}
	for i, w := range want {
		got := byName[w.Username]
		if got == nil {
			t.Fatalf("user %d %s is not in the config", i, w.Username)
		}
		if got.Account == nil || w.Account == nil || got.Account.Name != w.Account.Name {
			t.Errorf("user %s: account %v, want %v", w.Username, got.Account, w.Account)
		}
		if got.Username != w.Username || got.Password != w.Password {
			t.Errorf("user %d: %s, want %s with the same hash", i, got.Username, w.Username)
		}
		if (got.Permissions == nil) != (w.Permissions == nil) {
			t.Fatalf("user %s: permissions %v, want %v", w.Username, got.Permissions, w.Permissions)
		}
		if w.Permissions != nil && (!slices.Equal(got.Permissions.Publish.Allow, w.Permissions.Publish.Allow) ||
			!slices.Equal(got.Permissions.Subscribe.Allow, w.Permissions.Subscribe.Allow)) {
			t.Errorf("user %s: permissions differ from NATSUsers", w.Username)
		}
	}
}

// TestAuthenticate_UnknownCostsLikeKnown: a failure for an unknown name
// costs what a wrong password of a real (bcrypt) user costs, so timing
// does not tell which names exist.
func TestAuthenticate_UnknownCostsLikeKnown(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), 8)
	if err != nil {
		t.Fatal(err)
	}
	u, err := auth.New([]auth.User{{Name: "carol", PasswordHash: string(hash), Tenant: "acme", Role: auth.RoleClient}})
	if err != nil {
		t.Fatal(err)
	}
	cost := func(name string) time.Duration {
		var ds []time.Duration
		for range 5 {
			start := time.Now()
			if _, err := u.Authenticate(name, "guess"); !errors.Is(err, auth.ErrBadCredentials) {
				t.Fatalf("%s: %v", name, err)
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	known, unknown := cost("carol"), cost("mallory")
	t.Logf("wrong password %s, unknown user %s", known, unknown)
	if unknown < known/3 || unknown > known*3 {
		t.Fatalf("unknown user costs %s, a wrong password %s: not the same order", unknown, known)
	}
}

// TestParse_Groups: a user's groups (issue 18, sync rules) are read from
// the users file and given back by Lookup and Identity.
func TestParse_Groups(t *testing.T) {
	u, err := auth.Parse([]byte("users:\n  - {name: alice, password: p, tenant: acme, role: client, groups: [team-a, \"ops team\"]}\n  - {name: bob, password: p, tenant: acme, role: client}\n"))
	if err != nil {
		t.Fatal(err)
	}
	alice, ok := u.Identity("alice")
	if !ok || !slices.Equal(alice.Groups, []string{"team-a", "ops team"}) {
		t.Fatalf("Identity(alice) = %+v, %v", alice, ok)
	}
	if bob, ok := u.Identity("bob"); !ok || len(bob.Groups) != 0 {
		t.Fatalf("Identity(bob) = %+v, %v", bob, ok)
	}
	if _, ok := u.Identity("carol"); ok {
		t.Fatal("Identity of an unknown user")
	}
	var _ auth.Directory = u
}
