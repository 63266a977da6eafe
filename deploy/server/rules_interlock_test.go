package server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/auth/authtest"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/server"
	"github.com/ebbsync/ebb/events"
)

// startReloadableNATS starts nats-server from users' accounts block (filtered
// or not) in a config file it returns, so the test can rewrite it and reload.
func startReloadableNATS(t *testing.T, users *auth.Users, filtered bool) (*natsserver.Server, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "nats-server.conf")
	writeConf(t, path, dir, users, filtered)
	opts, err := natsserver.ProcessConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs = true
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return ns, path
}

func writeConf(t *testing.T, path, dir string, users *auth.Users, filtered bool) {
	t.Helper()
	accounts, err := users.WithFilteredReads(filtered).NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	// port fixed after the first start so a reload keeps it
	port := "-1"
	if b, err := os.ReadFile(path + ".port"); err == nil {
		port = string(b)
	}
	conf := "listen: 127.0.0.1:" + port + "\njetstream: {store_dir: " + strconv.Quote(filepath.Join(dir, "js")) + "}\n" + accounts
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
}

// lockedBuf is a goroutine-safe log sink.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startConf(t *testing.T, path, conf string) *natsserver.Server {
	t.Helper()
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := natsserver.ProcessConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs = true
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	return ns
}

// directGet is ann's direct get of l-bob's last change on nc; it
// reports whether the answer holds bob's secret.
func directGetsSecret(t *testing.T, nc *nats.Conn) bool {
	t.Helper()
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	m, err := nc.RequestWithContext(c, "$JS.API.DIRECT.GET."+events.StreamChanges+"."+events.ChangeSubject("acme", "lists", "l-bob"), nil)
	return err == nil && bytes.Contains(m.Data, []byte("secret plans"))
}

// orderedReadsSecret reports whether ann's ordered consumer on her
// tenant's CHANGES, on nc, gets bob's l-bob; err is the create's refusal.
func orderedReadsSecret(t *testing.T, nc *nats.Conn) (bool, error) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	oc, err := js.OrderedConsumer(c, events.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.TenantChanges("acme")}})
	if err != nil {
		return false, err
	}
	msg, err := oc.Next(jetstream.FetchMaxWait(3 * time.Second))
	return err == nil && bytes.Contains(msg.Data(), []byte("secret plans")), nil
}

// bobWritesSecret has bob write his team's l-bob, "secret plans", and sync.
func bobWritesSecret(t *testing.T, w *rulesWorld) {
	t.Helper()
	bob := w.replica("bob")
	if _, err := bob.Put(t.Context(), "lists", "l-bob", fields("owner", "bob", "team", "blue", "title", "secret plans")); err != nil {
		t.Fatal(err)
	}
	syncOK(t, bob)
}

// startReloadable starts nats-server from users' filtered accounts in a
// config file the test rewrites (writeConf) and reloads.
func startReloadable(t *testing.T, users *auth.Users) (*natsserver.Server, string) {
	t.Helper()
	ns, path := startReloadableNATS(t, users, true)
	addr := ns.Addr().String()
	if err := os.WriteFile(path+".port", []byte(addr[strings.LastIndex(addr, ":")+1:]), 0o600); err != nil {
		t.Fatal(err)
	}
	return ns, path
}

// TestRulesExternal_RespondersRefuseClientsWhateverTheAccounts: once the
// external server is reloaded with accounts written without --rules, and
// before any re-check of them (RulesCheckInterval an hour), ebb's own
// consumer create and fetch responders refuse client ann's CHANGES
// reads: under sync rules they refuse every client's, not only the
// CHANGES-BY-RULES token the filtered accounts write.
func TestRulesExternal_RespondersRefuseClientsWhateverTheAccounts(t *testing.T) {
	users := externalRulesUsers(t)
	ns, path := startReloadable(t, users)
	adminURL := strings.Replace(ns.ClientURL(), "nats://", "nats://ops:ops-secret@", 1)
	cfg := externalRulesConfig(t, users, adminURL)
	cfg.RulesCheckInterval = time.Hour
	w := &rulesWorld{t: t, srv: mustStart(t, cfg), natsURL: ns.ClientURL()}
	bobWritesSecret(t, w)

	writeConf(t, path, filepath.Dir(path), users, false)
	if err := ns.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	got, err := orderedReadsSecret(t, w.conn("ann"))
	if got {
		t.Fatal("ann (group red) read bob's l-bob (team blue) from CHANGES through ebb's responders while ebb serve runs with sync rules")
	}
	if err == nil || !strings.Contains(err.Error(), "sync rules") {
		t.Fatalf("ann's ordered consumer on CHANGES: %v, want refused by sync rules", err)
	}
	// A fetch from a consumer someone else made (an admin's, no owner),
	// in ann's scope: refused too.
	js, err := jetstream.New(w.conn("ops"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(t.Context(), events.StreamChanges, jetstream.ConsumerConfig{Durable: "ops-acme", FilterSubject: events.TenantChanges("acme"), AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatal(err)
	}
	ann := w.conn("ann")
	inbox := ann.NewRespInbox()
	sub, err := ann.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := ann.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+events.StreamChanges+".ops-acme", inbox, []byte(`{"batch":1,"expires":2000000000}`)); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("ann's fetch got no answer: %v", err)
	}
	if bytes.Contains(m.Data, []byte("secret plans")) || m.Header.Get("Status") != "403" || !strings.Contains(m.Header.Get("Description"), "sync rules") {
		t.Fatalf("ann's fetch from ops-acme: status %q %q data %.100s, want 403 by sync rules", m.Header.Get("Status"), m.Header.Get("Description"), m.Data)
	}
}

// TestRulesExternal_ReloadToUnfilteredStopsChangeReads: after the
// external server is reloaded with accounts written without --rules,
// the next re-check (RulesCheckInterval) makes ebb serve not ready
// naming the cause, logs an error, stops the change feed and HTTP change
// reads, and turns CHANGES's direct get off, so client ann reads bob's
// list by no path; reloaded with the filtered accounts again, the server
// is ready, serves the feed again and CHANGES's allow_direct is back on.
func TestRulesExternal_ReloadToUnfilteredStopsChangeReads(t *testing.T) {
	users := externalRulesUsers(t)
	ns, path := startReloadable(t, users)
	adminURL := strings.Replace(ns.ClientURL(), "nats://", "nats://ops:ops-secret@", 1)
	var logs lockedBuf
	cfg := externalRulesConfig(t, users, adminURL)
	cfg.RulesCheckInterval = 100 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	srv := mustStart(t, cfg)
	w := &rulesWorld{t: t, srv: srv, natsURL: ns.ClientURL()}
	bobWritesSecret(t, w)
	if err := srv.Ready(t.Context()); err != nil {
		t.Fatalf("not ready before the reload: %v", err)
	}

	writeConf(t, path, filepath.Dir(path), users, false)
	if err := ns.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	// A check that runs while the server reloads may fail to connect (EOF):
	// not ready too, but the cause this test wants is the next check's.
	var notReady error
	embeddedtest.WaitFor(t, 30*time.Second, "the server not ready after the reload, for the accounts", func() bool {
		notReady = srv.Ready(t.Context())
		return errors.Is(notReady, auth.ErrNotFilteredReads)
	})
	if !errors.Is(notReady, auth.ErrNotFilteredReads) || !strings.Contains(notReady.Error(), "sync rules") {
		t.Fatalf("Ready: %v, want the interlock's cause (ErrNotFilteredReads)", notReady)
	}
	resp, err := http.Get(srv.URL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "filtered reads") {
		t.Errorf("/readyz: %d %s, want 503 naming the interlock", resp.StatusCode, body)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "sync rules interlock failed") {
		t.Errorf("no error logged for the failed check: %s", logs.String())
	}
	ann := w.conn("ann")
	embeddedtest.WaitFor(t, 30*time.Second, "CHANGES's direct get turned off", func() bool { return !directGetsSecret(t, ann) })
	if got, _ := orderedReadsSecret(t, ann); got {
		t.Error("ann read bob's l-bob from CHANGES while the interlock fails")
	}
	if code, body := w.http("ann", "GET", "/v1/acme/changes", ""); code != http.StatusServiceUnavailable {
		t.Errorf("ann's HTTP change read while the interlock fails: %d %s, want 503", code, body)
	}
	// The feed's responder is gone: asked in EBB on the subject ann's
	// filtered import maps to, nobody answers.
	feedSubject := auth.ChangesSubject + "." + events.EncodeToken("ann") + "." + events.EncodeToken("acme")
	c, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	_, err = w.conn("ops").RequestWithContext(c, feedSubject, []byte(`{}`))
	cancel()
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("a change feed request while the interlock fails: %v, want no responders (the feed stopped)", err)
	}

	writeConf(t, path, filepath.Dir(path), users, true)
	if err := ns.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	embeddedtest.WaitFor(t, 30*time.Second, "the server ready again", func() bool { return srv.Ready(t.Context()) == nil })
	if code, body := w.http("ann", "GET", "/v1/acme/changes", ""); code != http.StatusOK || strings.Contains(body, "secret plans") {
		t.Errorf("ann's HTTP change read after recovery: %d %s, want 200 without l-bob", code, body)
	}
	c, cancel = context.WithTimeout(t.Context(), 5*time.Second)
	_, err = w.conn("ops").RequestWithContext(c, feedSubject, []byte(`{}`))
	cancel()
	if errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("the change feed did not come back: %v", err)
	}
	if rep := syncOK(t, w.replica("ann")); rep.Pulled != 0 {
		t.Errorf("ann's fresh replica pulled %d changes after recovery, want 0 (l-bob is not hers)", rep.Pulled)
	}
	if directGetsSecret(t, ann) {
		t.Error("ann direct-got l-bob after recovery")
	}
	// CHANGES's direct get (services' last-message reads) is back on.
	js, err := jetstream.New(w.conn("ops"))
	if err != nil {
		t.Fatal(err)
	}
	embeddedtest.WaitFor(t, 30*time.Second, "CHANGES's allow_direct back on after recovery", func() bool {
		st, err := js.Stream(t.Context(), events.StreamChanges)
		return err == nil && st.CachedInfo().Config.AllowDirect
	})
}

// TestExternalNATS_URLPasswordNeverShown: a URL nats.go takes as
// host:port with user info (no scheme) is shown by NATSURL and the logs
// with its password redacted, and a URL that does not parse is not
// quoted by Start's error.
func TestExternalNATS_URLPasswordNeverShown(t *testing.T) {
	users := externalRulesUsers(t).WithFilteredReads(false)
	clientURL, _ := startExternalNATS(t, users, false)
	hostport := strings.TrimPrefix(clientURL, "nats://")

	var logs lockedBuf
	cfg := testConfig(t)
	cfg.Users = users
	cfg.NATSURLs = []string{"ops:ops-secret@" + hostport}
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := mustStart(t, cfg)
	if strings.Contains(s.NATSURL(), "ops-secret") {
		t.Errorf("NATSURL() = %q shows the admin's password", s.NATSURL())
	}
	if strings.Contains(logs.String(), "ops-secret") {
		t.Errorf("the server logged the admin's password: %s", logs.String())
	}

	cfg2 := testConfig(t)
	cfg2.Users = users
	cfg2.NATSURLs = []string{"nats://ops:s3cr%zz@" + hostport}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	s2, err := server.Start(ctx, cfg2)
	if s2 != nil {
		s2.Close(context.Background())
	}
	if err == nil {
		t.Fatal("Start with a URL that does not parse succeeded")
	}
	if strings.Contains(err.Error(), "s3cr") || strings.Contains(err.Error(), "%zz") {
		t.Errorf("Start's error shows the password: %v", err)
	}
}

// TestRulesExternal_ClusterNodeUnfiltered: in a 3-node cluster where n1
// and n2 run the filtered accounts and n3 the accounts written without
// --rules, ebb serve --rules connected to n1 checks every node and
// refuses to start, naming n3; with every node filtered it starts.
func TestRulesExternal_ClusterNodeUnfiltered(t *testing.T) {
	users := externalRulesUsers(t)
	filtered, err := users.NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := users.WithFilteredReads(false).NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		n3      string
		wantErr bool
	}{{"n3 unfiltered", plain, true}, {"all filtered", filtered, false}} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := authtest.MustStartCluster(t, []string{filtered, filtered, tc.n3})
			adminURL := strings.Replace(nodes[0].ClientURL(), "nats://", "nats://ops:ops-secret@", 1)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			srv, err := server.Start(ctx, externalRulesConfig(t, users, adminURL))
			if srv != nil {
				t.Cleanup(func() { srv.Close(context.Background()) })
			}
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("start on a cluster of filtered nodes: %v", err)
				}
				return
			}
			if !errors.Is(err, auth.ErrNotFilteredReads) {
				t.Fatalf("start with n3 unfiltered: %v, want ErrNotFilteredReads", err)
			}
			if !strings.Contains(err.Error(), "n3") || strings.Contains(err.Error(), "n1 (") || strings.Contains(err.Error(), "ops-secret") {
				t.Fatalf("the refusal should name n3 only, without the password: %v", err)
			}
		})
	}
}

// TestRulesExternal_StaleAccountsRefused: the external server runs
// filtered accounts written from an older users file in which ann was a
// service; ebb serve --rules with the current file, where ann is a
// client, refuses to start: the marker's fingerprint is another users
// file's.
func TestRulesExternal_StaleAccountsRefused(t *testing.T) {
	current := externalRulesUsers(t)
	var old []auth.User
	for _, u := range current.List() {
		if u.Name == "ann" {
			u.Role = auth.RoleService
		}
		old = append(old, u)
	}
	oldUsers, err := auth.New(old)
	if err != nil {
		t.Fatal(err)
	}
	_, adminURL := startExternalNATS(t, oldUsers, true)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	srv, err := server.Start(ctx, externalRulesConfig(t, current, adminURL))
	if srv != nil {
		srv.Close(context.Background())
	}
	if !errors.Is(err, auth.ErrOtherUsersFile) || !strings.Contains(err.Error(), "generated from another users file") ||
		!strings.Contains(err.Error(), "ebb nats-config") || !strings.Contains(err.Error(), "reload") {
		t.Fatalf("start on stale accounts: %v, want ErrOtherUsersFile naming the fix", err)
	}
}

// TestStart_NoRulesRefusedOnRulesAccounts: ebb serve --nats without
// rules against a server whose accounts carry the filtered-reads marker
// (a sync-rules fleet's NATS) refuses to start.
func TestStart_NoRulesRefusedOnRulesAccounts(t *testing.T) {
	users := externalRulesUsers(t)
	_, adminURL := startExternalNATS(t, users, true)
	cfg := testConfig(t)
	cfg.Users, cfg.NATSURLs = users.WithFilteredReads(false), []string{adminURL}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	srv, err := server.Start(ctx, cfg)
	if srv != nil {
		srv.Close(context.Background())
	}
	if !errors.Is(err, server.ErrNATSConfiguredForRules) || !strings.Contains(err.Error(), "configured for sync rules") {
		t.Fatalf("start without rules on a rules fleet's NATS: %v, want ErrNATSConfiguredForRules", err)
	}
}

// TestRulesExternal_LeafNodeClientCannotReadChanges: a leaf node (which
// no cluster tells ebb of, so it is not checked) runs the accounts
// written without --rules and binds its EBB account to the hub's. Client
// ann on the leaf cannot read bob's list: DIRECT.GET does not cross the
// leaf connection, and ebb's responders refuse her consumer on CHANGES.
// The leaf's own accounts are the operator's to keep in step (README).
func TestRulesExternal_LeafNodeClientCannotReadChanges(t *testing.T) {
	users := externalRulesUsers(t)
	dir := t.TempDir()
	filtered, err := users.NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	leafPort := freePort(t)
	hub := startConf(t, filepath.Join(dir, "hub.conf"), "server_name: hub\nlisten: 127.0.0.1:-1\njetstream: {store_dir: "+strconv.Quote(filepath.Join(dir, "hub"))+"}\n"+
		"leafnodes: {listen: 127.0.0.1:"+strconv.Itoa(leafPort)+"}\n"+filtered)
	plain, err := users.WithFilteredReads(false).NATSConfig()
	if err != nil {
		t.Fatal(err)
	}
	leaf := startConf(t, filepath.Join(dir, "leaf.conf"), "server_name: leaf\nlisten: 127.0.0.1:-1\n"+
		"leafnodes: {remotes: [{url: \"nats://ops:ops-secret@127.0.0.1:"+strconv.Itoa(leafPort)+"\", account: EBB}]}\n"+plain)
	embeddedtest.WaitFor(t, 10*time.Second, "the leaf connected", func() bool { return leaf.NumLeafNodes() > 0 })
	adminURL := strings.Replace(hub.ClientURL(), "nats://", "nats://ops:ops-secret@", 1)
	srv := mustStart(t, externalRulesConfig(t, users, adminURL))
	bobWritesSecret(t, &rulesWorld{t: t, srv: srv, natsURL: hub.ClientURL()})
	wl := &rulesWorld{t: t, srv: srv, natsURL: leaf.ClientURL()}
	ann := wl.conn("ann")
	if directGetsSecret(t, ann) {
		t.Error("ann on the leaf node direct-got bob's l-bob while ebb serve runs with sync rules")
	}
	// ebb's consumer create responder is on the hub; wait until its
	// interest reaches the leaf, then it must refuse.
	var got bool
	var cerr error
	embeddedtest.WaitFor(t, 10*time.Second, "an answer from ebb's consumer create responder over the leaf", func() bool {
		got, cerr = orderedReadsSecret(t, ann)
		return got || cerr == nil || !errors.Is(cerr, nats.ErrNoResponders)
	})
	if got || cerr == nil || !strings.Contains(cerr.Error(), "sync rules") {
		t.Fatalf("ann's ordered consumer on the leaf: read l-bob %v, err %v; want refused by sync rules", got, cerr)
	}
}

// TestExternalNATS_ReadyzRedactsURL: /readyz, open to anyone, names the
// NATS URL while the connection is down, with the password of the
// host:port form redacted.
func TestExternalNATS_ReadyzRedactsURL(t *testing.T) {
	users := externalRulesUsers(t).WithFilteredReads(false)
	ns, _ := startReloadableNATS(t, users, false)
	cfg := testConfig(t)
	cfg.Users = users
	cfg.NATSURLs = []string{"ops:ops-secret@" + strings.TrimPrefix(ns.ClientURL(), "nats://")}
	s := mustStart(t, cfg)
	ns.Shutdown()
	ns.WaitForShutdown()
	var body []byte
	embeddedtest.WaitFor(t, 10*time.Second, "/readyz naming the NATS connection down", func() bool {
		resp, err := http.Get(s.URL() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return bytes.Contains(body, []byte("nats connection to"))
	})
	if strings.Contains(string(body), "ops-secret") || !strings.Contains(string(body), "ops:REDACTED@") {
		t.Errorf("unauthenticated GET /readyz: %s", body)
	}
}
