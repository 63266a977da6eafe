package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/events"
)

// cli runs an ebb client command in process with env.
func cli(env map[string]string, args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}
	err = m.Run(context.Background(), args)
	return out.String(), errOut.String(), err
}

func mustCLI(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	out, errOut, err := cli(env, args...)
	if err != nil {
		t.Fatalf("ebb %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

const usersYAML = `users:
  - {name: alice, password: alice-pw, tenant: acme, role: client}
  - {name: bob, password: bob-pw, tenant: acme, role: client}
  - {name: eve, password: eve-pw, tenant: evil, role: client}
  - {name: svc, password: svc-pw, tenant: acme, role: service, durables: [acme-billing, acme-billing2, acme-subscriber]}
  - {name: root, password: root-pw, role: admin}
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// connectAs dials the server as user, the way the CLI does.
func connectAs(t *testing.T, url, user, password string, errs chan<- error) *nats.Conn {
	t.Helper()
	opts := []nats.Option{nats.UserInfo(user, password), nats.CustomInboxPrefix(auth.InboxPrefix(user))}
	if errs != nil {
		opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	return info.State.Msgs
}

func httpDo(t *testing.T, method, url, user, password string, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// refusal runs one request that auth must refuse, on its own connection,
// and checks it fails and the connection reports a permission violation
// naming the subject.
type refusal struct {
	name    string
	subject string // what the violation must name
	do      func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) error
}

func TestSecurity_TenantIsolation(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML))
	base := map[string]string{"EBB_NATS": srv.nats, "EBB_TENANT": "acme"}
	alice := with(base, "EBB_DATA", filepath.Join(t.TempDir(), "alice"), "EBB_USER", "alice", "EBB_PASSWORD", "alice-pw")
	bob := with(base, "EBB_DATA", filepath.Join(t.TempDir(), "bob"), "EBB_USER", "bob", "EBB_PASSWORD", "bob-pw")
	root := connectAs(t, srv.nats, "root", "root-pw", nil)
	rjs, _ := jetstream.New(root)

	// Every JetStream API request a confined client makes, for the record
	// (deploy/auth's doc lists them).
	var mu sync.Mutex
	seen := map[string]bool{}
	sub, err := root.Subscribe("$JS.API.>", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		seen[m.Subject] = true
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Flush(); err != nil {
		t.Fatal(err)
	}

	// A tenant-A client CAN run a full replica Sync under auth.
	if out := mustCLI(t, alice, "put", "todos", "t1", `{"title":"acme secret"}`); !strings.Contains(out, "synced") {
		t.Fatalf("alice put: %q, want synced", out)
	}
	if out := mustCLI(t, bob, "sync", "--timeout", "20s"); !strings.Contains(out, "pulled 1") {
		t.Fatalf("bob sync: %q, want pulled 1", out)
	}
	if out := mustCLI(t, bob, "get", "todos", "t1"); !strings.Contains(out, "acme secret") {
		t.Fatalf("bob get: %q", out)
	}
	_ = sub.Unsubscribe()
	mu.Lock()
	for s := range seen {
		t.Logf("client used %s", s)
	}
	mu.Unlock()

	events0 := streamMsgs(t, rjs, events.StreamEvents)
	consumers0 := streamConsumers(t, rjs)

	// Tenant B (evil) cannot touch tenant A (acme) over NATS.
	smuggled := &events.Event{Schema: 1, ID: events.NewIDSource(nil).New().String(), Tenant: "acme", Collection: "todos",
		Doc: "t1", Op: events.OpPut, Fields: events.Fields{"title": []byte(`"pwned"`)}, HLC: events.NewClock(nil, 0).Now(), Client: "eve", Seq: 1}
	payload, err := events.EncodeEvent(smuggled)
	if err != nil {
		t.Fatal(err)
	}
	refusals := []refusal{
		{"publish to tenant A", "ebb.evt.acme.alice.todos.t1", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, events.EventSubject("acme", "alice", "todos", "t1"), payload)
			return err
		}},
		{"consumer on A's changes", "$JS.API.CONSUMER.CREATE.CHANGES", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.OrderedConsumer(ctx, events.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.TenantChanges("acme")}})
			return err
		}},
		// No filter: created on the subject without one, which the consumer
		// create responder answers (every filter checked; none is the
		// whole stream): an API error 403, not a permissions violation.
		{"consumer on every change", "", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.OrderedConsumer(ctx, events.StreamChanges, jetstream.OrderedConsumerConfig{})
			if apiErr := (*jetstream.APIError)(nil); errors.As(err, &apiErr) && apiErr.Code == 403 {
				return err
			}
			return fmt.Errorf("want the responder's 403, got %v", err)
		}},
		{"consumer on A's receipts", "$JS.API.CONSUMER.CREATE.RECEIPTS", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.OrderedConsumer(ctx, events.StreamReceipts, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.ReceiptSubject("acme", "alice")}})
			return err
		}},
		{"direct get of A's document", "$JS.API.DIRECT.GET.CHANGES", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			st, err := js.Stream(ctx, events.StreamChanges)
			if err != nil {
				return err
			}
			_, err = st.GetLastMsgForSubject(ctx, events.ChangeSubject("acme", "todos", "t1"))
			return err
		}},
		{"get by sequence", "$JS.API.DIRECT.GET.CHANGES", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			st, err := js.Stream(ctx, events.StreamChanges)
			if err != nil {
				return err
			}
			_, err = st.GetMsg(ctx, 1)
			return err
		}},
		{"purge a stream", "$JS.API.STREAM.PURGE.CHANGES", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			st, err := js.Stream(ctx, events.StreamChanges)
			if err != nil {
				return err
			}
			return st.Purge(ctx)
		}},
		{"delete a stream", "$JS.API.STREAM.DELETE.EVENTS", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			return js.DeleteStream(ctx, events.StreamEvents)
		}},
		{"list consumers", "$JS.API.CONSUMER.NAMES.CHANGES", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			st, err := js.Stream(ctx, events.StreamChanges)
			if err != nil {
				return err
			}
			names := st.ConsumerNames(ctx)
			for range names.Name() {
			}
			return names.Err()
		}},
		{"subscribe to everything", ">", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			return subscribeRefused(ctx, nc, ">")
		}},
		{"subscribe to A's inbox", "_INBOX_alice.>", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			return subscribeRefused(ctx, nc, "_INBOX_alice.>")
		}},
		{"subscribe to the shared inbox", "_INBOX.>", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			return subscribeRefused(ctx, nc, "_INBOX.>")
		}},
	}
	// nats-server (v2.15.2) fills a stream import's reverse subject
	// transform lazily, unlocked (client.addShadowSub): the first
	// subscriptions of one account made at once on several connections
	// race there, which -race reports. One subscription of eve's before the
	// parallel refusals fills it.
	warm := connectAs(t, srv.nats, "eve", "eve-pw", nil)
	if _, err := warm.SubscribeSync(auth.InboxPrefix("eve") + ".warm"); err != nil {
		t.Fatal(err)
	}
	if err := warm.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Run("nats", func(t *testing.T) {
		for _, r := range refusals {
			t.Run(r.name, func(t *testing.T) {
				t.Parallel()
				errs := make(chan error, 8)
				nc := connectAs(t, srv.nats, "eve", "eve-pw", errs)
				js, err := jetstream.New(nc)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
				defer cancel()
				if err := r.do(ctx, nc, js); err == nil {
					t.Fatal("succeeded, want refused")
				} else if r.subject == "" {
					if !strings.Contains(err.Error(), "whole stream") {
						t.Fatalf("refused with %v, want the responder's 403 naming the whole stream", err)
					}
					return
				}
				select {
				case err := <-errs:
					if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), r.subject) {
						t.Fatalf("async error %v, want a permission violation naming %s", err, r.subject)
					}
					t.Logf("refused: %v", err)
				case <-time.After(5 * time.Second):
					t.Fatal("no permission violation reported on the connection")
				}
			})
		}
	})
	// Nothing was half applied: no event stored, no consumer left behind,
	// every stream still there.
	if n := streamMsgs(t, rjs, events.StreamEvents); n != events0 {
		t.Errorf("EVENTS holds %d messages after the refusals, want %d", n, events0)
	}
	if n := streamConsumers(t, rjs); n > consumers0 {
		t.Errorf("CHANGES has %d consumers after the refusals, want at most %d", n, consumers0)
	}

	t.Run("service durable", func(t *testing.T) {
		errs := make(chan error, 8)
		nc := connectAs(t, srv.nats, "svc", "svc-pw", errs)
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// One filter subject: the create subject carries it, so it is
		// confined, and the service may ack.
		cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamChanges, jetstream.ConsumerConfig{
			Durable: "acme-billing", FilterSubject: events.TenantChanges("acme"), AckPolicy: jetstream.AckExplicitPolicy,
		})
		if err != nil {
			t.Fatalf("service durable on its tenant: %v", err)
		}
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
		// consumer.Subscribe sends its one filter as FilterSubject, so a
		// service subscription works under auth.
		got := make(chan *events.Change, 1)
		sub, err := consumer.Subscribe(ctx, js, consumer.SubscribeConfig{Tenant: "acme", Durable: "acme-subscriber",
			Handler: func(_ context.Context, ch *events.Change) error {
				select {
				case got <- ch:
				default:
				}
				return nil
			}})
		if err != nil {
			t.Fatalf("consumer.Subscribe under auth: %v", err)
		}
		select {
		case ch := <-got:
			if ch.Tenant != "acme" {
				t.Fatalf("service got a change of tenant %q", ch.Tenant)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no change reached the service's subscription")
		}
		sub.Stop()
		// FilterSubjects (several collections) travel in the body of a
		// create on $JS.API.CONSUMER.CREATE.<stream>.<name>; the consumer
		// create responder checks each of them, so an in-scope one works.
		multi, err := js.CreateOrUpdateConsumer(ctx, events.StreamChanges, jetstream.ConsumerConfig{
			Durable: "acme-billing2", FilterSubjects: []string{events.CollectionChanges("acme", "todos"), events.CollectionChanges("acme", "notes")},
			AckPolicy: jetstream.AckExplicitPolicy,
		})
		if err != nil {
			t.Fatalf("a durable with FilterSubjects in the service's tenant: %v", err)
		}
		if f := multi.CachedInfo().Config.FilterSubjects; len(f) != 2 {
			t.Fatalf("durable with FilterSubjects has filters %v", f)
		}
		// A service writes nothing.
		if err := nc.Publish(events.EventSubject("acme", "svc", "todos", "t9"), payload); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := <-errs; !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("service publish: async error %v, want a permission violation", err)
		}
	})

	t.Run("write as another client of the same tenant", func(t *testing.T) {
		errs := make(chan error, 8)
		nc := connectAs(t, srv.nats, "alice", "alice-pw", errs)
		forged := *smuggled
		forged.Client = "bob"
		data, err := events.EncodeEvent(&forged)
		if err != nil {
			t.Fatal(err)
		}
		events0 := streamMsgs(t, rjs, events.StreamEvents)
		if err := nc.Publish(events.EventSubject("acme", "bob", "todos", "t1"), data); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := <-errs; !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("alice publishing as bob: async error %v, want a permission violation", err)
		}
		if n := streamMsgs(t, rjs, events.StreamEvents); n != events0 {
			t.Fatalf("EVENTS grew from %d to %d", events0, n)
		}
	})

	t.Run("smuggle tenant A inside a tenant B subject", func(t *testing.T) {
		nc := connectAs(t, srv.nats, "eve", "eve-pw", nil)
		js, _ := jetstream.New(nc)
		dead0 := streamMsgs(t, rjs, events.StreamDead)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := js.Publish(ctx, events.EventSubject("evil", "eve", "todos", "t1"), payload, jetstream.WithMsgID(smuggled.ID)); err != nil {
			t.Fatalf("publish on eve's own subject: %v", err)
		}
		waitFor(t, 10*time.Second, "the smuggled event in DEAD", func() bool { return streamMsgs(t, rjs, events.StreamDead) > dead0 })
		st, err := rjs.Stream(ctx, events.StreamDead)
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetLastMsgForSubject(ctx, events.DeadPrefix+".>")
		if err != nil {
			t.Fatal(err)
		}
		dl, err := events.DecodeDeadLetter(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if dl.Event != smuggled.ID || !strings.Contains(dl.Reason, `writing evil/todos/t1 but the event is client "eve" writing acme/todos/t1`) {
			t.Errorf("dead letter for %s: %q, want event %s refused for its tenant", dl.Event, dl.Reason, smuggled.ID)
		}
		t.Logf("dead letter: %s", dl.Reason)
		if out := mustCLI(t, bob, "sync", "--timeout", "20s"); !strings.Contains(out, "pulled 0") {
			t.Errorf("bob sync after the smuggle: %q, want pulled 0", out)
		}
		if out := mustCLI(t, bob, "get", "todos", "t1", "--json"); !strings.Contains(out, "acme secret") || !strings.Contains(out, `"version":1`) {
			t.Errorf("acme's todos/t1 after the smuggle: %s", out)
		}
	})

	t.Run("cli", func(t *testing.T) {
		tests := []struct {
			name string
			env  map[string]string
			want string
		}{
			{"wrong password", with(alice, "EBB_PASSWORD", "nope"), "authorization violation"},
			{"unknown user", with(alice, "EBB_USER", "mallory", "EBB_DATA", filepath.Join(t.TempDir(), "mallory")), "authorization violation"},
			{"no credentials", with(alice, "EBB_USER", "", "EBB_PASSWORD", "", "EBB_DATA", filepath.Join(t.TempDir(), "anon")), "authorization violation"},
			{"another tenant", with(alice, "EBB_TENANT", "evil", "EBB_DATA", filepath.Join(t.TempDir(), "alice-evil")), `may not access tenant "evil"`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, stderr, err := cli(tt.env, "sync", "--timeout", "10s")
				if !errors.Is(err, errRefused) || ExitCode(err) != 1 {
					t.Fatalf("sync: %v (exit %d), want a refusal", err, ExitCode(err))
				}
				if !strings.Contains(strings.ToLower(stderr), tt.want) {
					t.Fatalf("stderr %q does not say %q", stderr, tt.want)
				}
			})
		}
	})

	t.Run("http", func(t *testing.T) {
		doc := srv.http + "/v1/acme/docs/todos/t1"
		tests := []struct {
			name, method, url, user, password, body string
			want                                    int
		}{
			{"owner reads", "GET", doc, "alice", "alice-pw", "", 200},
			{"service reads its tenant", "GET", doc, "svc", "svc-pw", "", 200},
			{"admin reads any tenant", "GET", doc, "root", "root-pw", "", 200},
			{"other tenant reads", "GET", doc, "eve", "eve-pw", "", 403},
			{"other tenant lists", "GET", srv.http + "/v1/acme/docs/todos", "eve", "eve-pw", "", 403},
			{"other tenant pulls changes", "GET", srv.http + "/v1/acme/changes", "eve", "eve-pw", "", 403},
			{"other tenant pushes", "POST", srv.http + "/v1/acme/events", "eve", "eve-pw", "[]", 403},
			{"service pushes", "POST", srv.http + "/v1/acme/events", "svc", "svc-pw", "[]", 403},
			{"client reads another client's receipts", "GET", srv.http + "/v1/acme/receipts/bob", "alice", "alice-pw", "", 403},
			{"client reads its receipts", "GET", srv.http + "/v1/acme/receipts/alice", "alice", "alice-pw", "", 200},
			{"no credentials", "GET", doc, "", "", "", 401},
			{"wrong password", "GET", doc, "alice", "bob-pw", "", 401},
			{"unknown user", "GET", doc, "mallory", "x", "", 401},
			{"healthz stays open", "GET", srv.http + "/healthz", "", "", "", 200},
			{"readyz stays open", "GET", srv.http + "/readyz", "", "", "", 200},
			{"metrics need credentials", "GET", srv.http + "/metrics", "", "", "", 401},
			{"metrics are for admins", "GET", srv.http + "/metrics", "alice", "alice-pw", "", 403},
			{"admin reads metrics", "GET", srv.http + "/metrics", "root", "root-pw", "", 200},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, body := httpDo(t, tt.method, tt.url, tt.user, tt.password, tt.body)
				if code != tt.want {
					t.Fatalf("%s %s as %q: %d %s, want %d", tt.method, tt.url, tt.user, code, body, tt.want)
				}
				if code >= 400 && !strings.Contains(body, `"error"`) {
					t.Errorf("refusal without a JSON error: %s", body)
				}
			})
		}
		t.Run("bearer token", func(t *testing.T) {
			req, _ := http.NewRequest("GET", doc, nil)
			req.Header.Set("Authorization", "Bearer "+base64.StdEncoding.EncodeToString([]byte("alice:alice-pw")))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("bearer: %d", resp.StatusCode)
			}
		})
		t.Run("push as another client of the tenant", func(t *testing.T) {
			ev := *smuggled
			ev.Tenant, ev.Client, ev.ID = "acme", "bob", events.NewIDSource(nil).New().String()
			b, _ := events.EncodeEvent(&ev)
			code, body := httpDo(t, "POST", srv.http+"/v1/acme/events", "alice", "alice-pw", "["+string(b)+"]")
			if code != 200 || !strings.Contains(body, `"status":"invalid"`) || !strings.Contains(body, `"field":"client"`) {
				t.Fatalf("push with client bob as alice: %d %s, want invalid client", code, body)
			}
		})
	})
	if n := streamMsgs(t, rjs, events.StreamEvents); n != events0+1 {
		t.Errorf("EVENTS holds %d messages, want %d (only the smuggled event added)", n, events0+1)
	}
}

// subscribeRefused subscribes to subject and returns the permission error
// the server sends back.
func subscribeRefused(ctx context.Context, nc *nats.Conn, subject string) error {
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.FlushWithContext(ctx); err != nil {
		return err
	}
	if err := nc.LastError(); err != nil {
		return err
	}
	return nil
}

func streamConsumers(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Consumers
}

// with returns a copy of env with the key-value pairs kv set.
func with(env map[string]string, kv ...string) map[string]string {
	out := make(map[string]string, len(env)+len(kv)/2)
	for k, v := range env {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// TestSecurity_WatchUnderAuth: `ebb watch` follows its tenant's changes
// through the account imports, from the current state and live.
func TestSecurity_WatchUnderAuth(t *testing.T) {
	srv := serveInProcess(t, "", "--auth", writeFile(t, "users.yaml", usersYAML))
	alice := map[string]string{"EBB_NATS": srv.nats, "EBB_TENANT": "acme", "EBB_DATA": filepath.Join(t.TempDir(), "alice"), "EBB_USER": "alice", "EBB_PASSWORD": "alice-pw"}
	mustCLI(t, alice, "put", "todos", "t1", `{"title":"before"}`)
	bob := with(alice, "EBB_USER", "bob", "EBB_PASSWORD", "bob-pw", "EBB_DATA", filepath.Join(t.TempDir(), "bob"))
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		m := &Main{Stdin: strings.NewReader(""), Stdout: out, Stderr: io.Discard, Getenv: func(k string) string { return bob[k] }}
		done <- m.Run(ctx, []string{"watch", "--all"})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watch: %v", err)
		}
	}()
	waitFor(t, 20*time.Second, "watch to print the current state", func() bool { return strings.Contains(out.String(), "before") })
	mustCLI(t, alice, "put", "todos", "t2", `{"title":"live"}`)
	waitFor(t, 20*time.Second, "watch to print a live change", func() bool { return strings.Contains(out.String(), "live") })
}
