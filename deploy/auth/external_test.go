package auth_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
)

// TestNATSConfig_ExternalServer starts nats-server from the generated
// configuration (deploy/nats-auth.conf, as an operator would) and checks
// the client path works through the account imports while a reply
// subject a client names cannot reach the streams.
func TestNATSConfig_ExternalServer(t *testing.T) {
	conf, err := os.ReadFile(filepath.Join("..", "nats-auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("nats-auth.conf with responders", func(t *testing.T) { testExternalServer(t, string(conf), true) })
	t.Run("direct imports", func(t *testing.T) {
		u, err := auth.Load(filepath.Join("..", "users.example.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		conf, err := u.NATSConfigWith(false)
		if err != nil {
			t.Fatal(err)
		}
		testExternalServer(t, conf, false)
	})
}

func testExternalServer(t *testing.T, conf string, responders bool) {
	dir := t.TempDir()
	path := filepath.Join(dir, "server.conf")
	full := "listen: 127.0.0.1:-1\njetstream: {store_dir: " + `"` + filepath.Join(dir, "js") + `"` + "}\n" + conf
	if err := os.WriteFile(path, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses %s: %v", path, err)
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	// The bound covers two bcrypt logins (connectSlowBcrypt), which take
	// tens of seconds under -race on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ops := connectSlowBcrypt(t, ns.ClientURL(), nats.UserInfo("ops", "ops-secret"))
	defer ops.Close()
	ojs := embeddedtest.MustJetStream(t, ops)
	if responders {
		// One event per second: the second of alice's is refused.
		api, err := auth.StartAPI(ops, auth.NewMeter(auth.Quotas{Publish: auth.PublishLimit{EventsPerSecond: 1, Burst: time.Second}}), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = api.Close() })
	}
	st, err := ojs.CreateStream(ctx, jetstream.StreamConfig{Name: "CHANGES", Subjects: []string{"ebb.chg.>"}, AllowDirect: true, MaxMsgsPerSubject: 1})
	if err != nil {
		t.Fatalf("admin creates a stream in %s: %v", auth.StreamAccount, err)
	}
	if _, err := ojs.Publish(ctx, "ebb.chg.acme.todos.t1", []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := ojs.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"ebb.evt.>"}}); err != nil {
		t.Fatal(err)
	}

	alice := connectSlowBcrypt(t, ns.ClientURL(), nats.UserInfo("alice", "alice-secret"), nats.CustomInboxPrefix(auth.InboxPrefix("alice")))
	defer alice.Close()
	ajs := embeddedtest.MustJetStream(t, alice)
	if _, err := ajs.Publish(ctx, "ebb.evt.acme.alice.todos.t1", []byte("{}")); err != nil {
		t.Fatalf("alice publishes her event through the import: %v", err)
	}
	if responders {
		_, err := ajs.Publish(ctx, "ebb.evt.acme.alice.todos.t2", []byte("{}"))
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != auth.ErrCodePublishRate {
			t.Fatalf("alice's second event within a second: %v, want the publish rate refusal", err)
		}
	}
	ast, err := ajs.Stream(ctx, "CHANGES")
	if err != nil {
		t.Fatalf("alice reads stream info through the import: %v", err)
	}
	if m, err := ast.GetLastMsgForSubject(ctx, "ebb.chg.acme.todos.t1"); err != nil || string(m.Data) != `{"v":1}` {
		t.Fatalf("alice direct-gets her tenant's change: %v", err)
	}
	c, err := ajs.OrderedConsumer(ctx, "CHANGES", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"ebb.chg.acme.>"}})
	if err != nil {
		t.Fatalf("alice creates an ordered consumer: %v", err)
	}
	if _, err := c.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
		t.Fatalf("alice fetches: %v", err)
	}

	// The reply-subject attempt: the answer goes to alice's account.
	before, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.PublishRequest("$JS.API.STREAM.INFO.CHANGES", "ebb.chg.acme.todos.t2", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Request("$JS.API.STREAM.INFO.CHANGES", nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	after, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.State.LastSeq != before.State.LastSeq {
		t.Fatalf("CHANGES went from seq %d to %d after a stream info with a reply into it", before.State.LastSeq, after.State.LastSeq)
	}
	if !responders {
		return
	}
	push := `{"stream_name":"CHANGES","config":{"name":"p","deliver_subject":"ebb.evt.x.y.z.w","filter_subject":"ebb.chg.acme.>","ack_policy":"none"}}`
	resp, err := alice.Request("$JS.API.CONSUMER.CREATE.CHANGES.p.ebb.chg.acme.>", []byte(push), 5*time.Second)
	if err != nil || !strings.Contains(string(resp.Data), "push consumers") {
		t.Fatalf("push consumer through the responder: %v %s, want refused", err, resp.Data)
	}
	info, err := ast.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != 0 {
		t.Fatalf("stream info through the responder lists subjects: %v", info.State.Subjects)
	}
}

// connectSlowBcrypt connects with opts, trying again while the login fails
// by a timeout: nats-server checks the example's bcrypt hashes (cost 10)
// itself, which under -race on a loaded machine can outlast nats.go's 2 s
// handshake (an i/o timeout, or the server's first PING before the PONG).
func connectSlowBcrypt(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	var nc *nats.Conn
	var err error
	embeddedtest.WaitFor(t, time.Minute, "a login that does not time out", func() bool {
		nc, err = nats.Connect(url, opts...)
		if errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("connect: %v", err)
		}
		return err == nil
	})
	t.Cleanup(nc.Close)
	return nc
}
