package server_test

import (
	"bytes"
	"context"
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

// RV-HD-1: the filtered-reads interlock is checked once, at Start. An
// operator who later reloads the external server with accounts written
// without --rules (a routine `ebb nats-config --auth users.yaml` after
// adding a user) leaves ebb serve running with sync rules, ready, while a
// client reads every change of its tenant straight from CHANGES: the
// consumer create responder, which still runs on ebb's connection, creates
// ann's consumer on CHANGES (it knows nothing of rules mode) and her
// account now imports DIRECT.GET.
func TestRVHD_ReloadToUnfilteredKeepsRulesServerRunning(t *testing.T) {
	users := externalRulesUsers(t)
	ns, path := startReloadableNATS(t, users, true)
	addr := ns.Addr().String()
	if err := os.WriteFile(path+".port", []byte(addr[strings.LastIndex(addr, ":")+1:]), 0o600); err != nil {
		t.Fatal(err)
	}
	clientURL := ns.ClientURL()
	adminURL := strings.Replace(clientURL, "nats://", "nats://ops:ops-secret@", 1)
	srv := mustStart(t, externalRulesConfig(t, users, adminURL))
	w := &rulesWorld{t: t, srv: srv, natsURL: clientURL}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bob := w.replica("bob")
	if _, err := bob.Put(ctx, "lists", "l-bob", fields("owner", "bob", "team", "blue", "title", "secret plans")); err != nil {
		t.Fatal(err)
	}
	syncOK(t, bob)

	// The operator regenerates the accounts without --rules and reloads.
	writeConf(t, path, filepath.Dir(path), users, false)
	if err := ns.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := srv.Ready(ctx); err != nil {
		t.Logf("server not ready after reload: %v", err)
	} else {
		t.Logf("ebb serve --rules still ready after the external server dropped filtered reads")
	}
	js, err := jetstream.New(w.conn("ann"))
	if err != nil {
		t.Fatal(err)
	}
	c, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	oc, err := js.OrderedConsumer(c, events.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.TenantChanges("acme")}})
	if err != nil {
		t.Logf("ann's ordered consumer refused: %v", err)
	} else {
		msg, err := oc.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err == nil && bytes.Contains(msg.Data(), []byte("secret plans")) {
			t.Errorf("ann (group red) read bob's l-bob (team blue) directly from CHANGES while ebb serve runs with sync rules: %s", msg.Data())
		} else {
			t.Logf("ordered consumer next: %v", err)
		}
	}
	m, err := w.conn("ann").RequestWithContext(c, "$JS.API.DIRECT.GET."+events.StreamChanges+"."+events.ChangeSubject("acme", "lists", "l-bob"), nil)
	if err == nil && bytes.Contains(m.Data, []byte("secret plans")) {
		t.Errorf("ann direct-got bob's l-bob while ebb serve runs with sync rules: %s", m.Data)
	} else {
		t.Logf("direct get: %v", err)
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

// RV-HD-2: "the server shows external NATS URLs only with the password
// redacted" fails for URLs nats.go accepts: host:port with user info (no
// scheme; nats.go prefixes nats://) is shown whole in the "ebb ready" log
// line and NATSURL, and a URL url.Parse refuses is quoted whole, password
// included, in Start's error (nats.go's parse error, wrapped).
func TestRVHD_PasswordShownForURLsNatsAccepts(t *testing.T) {
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
	if err != nil && strings.Contains(err.Error(), "s3cr") {
		t.Errorf("Start's error shows the password: %v", err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// RV-HD-3: in a cluster the check sees only the node ebb serve's
// connection landed on. Nodes n1 and n2 run the filtered accounts, n3 the
// accounts written without --rules (not yet updated, or a reload that
// failed there): ebb serve --rules connected to n1 starts, and ann,
// connected to n3, reads bob's list directly from CHANGES.
func TestRVHD_ClusterOneNodeUnfiltered(t *testing.T) {
	users := externalRulesUsers(t)
	dir := t.TempDir()
	names := []string{"n1", "n2", "n3"}
	routePorts := []int{freePort(t), freePort(t), freePort(t)}
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(p))
	}
	var nodes []*natsserver.Server
	for i, n := range names {
		accounts, err := users.WithFilteredReads(n != "n3").NATSConfig()
		if err != nil {
			t.Fatal(err)
		}
		conf := "server_name: " + n + "\nlisten: 127.0.0.1:-1\njetstream: {store_dir: " + strconv.Quote(filepath.Join(dir, n)) + "}\n" +
			"cluster: {name: ebb, listen: 127.0.0.1:" + strconv.Itoa(routePorts[i]) + ", routes: [" + strings.Join(routes, ", ") + "]}\n" + accounts
		path := filepath.Join(dir, n+".conf")
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
		nodes = append(nodes, ns)
	}
	for _, ns := range nodes {
		if !ns.ReadyForConnections(20 * time.Second) {
			t.Fatal("node not ready")
		}
	}
	// wait for a JetStream meta leader
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := false
		for _, ns := range nodes {
			if ns.JetStreamIsLeader() {
				ok = true
			}
		}
		if ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	adminURL := strings.Replace(nodes[0].ClientURL(), "nats://", "nats://ops:ops-secret@", 1)
	var srv *server.Server
	var err error
	for i := 0; i < 20; i++ { // JetStream may still be settling
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		srv, err = server.Start(ctx, externalRulesConfig(t, users, adminURL))
		cancel()
		if err == nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("ebb serve --rules on n1 (filtered): %v", err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })

	w := &rulesWorld{t: t, srv: srv, natsURL: nodes[0].ClientURL()}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bob := w.replica("bob")
	if _, err := bob.Put(ctx, "lists", "l-bob", fields("owner", "bob", "team", "blue", "title", "secret plans")); err != nil {
		t.Fatal(err)
	}
	syncOK(t, bob)

	w3 := &rulesWorld{t: t, srv: srv, natsURL: nodes[2].ClientURL()}
	c, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	m, err := w3.conn("ann").RequestWithContext(c, "$JS.API.DIRECT.GET."+events.StreamChanges+"."+events.ChangeSubject("acme", "lists", "l-bob"), nil)
	if err == nil && bytes.Contains(m.Data, []byte("secret plans")) {
		t.Errorf("ann on n3 direct-got bob's l-bob while ebb serve (on n1) runs with sync rules: %s", m.Data)
	} else {
		t.Logf("direct get on n3: %v %v", err, m)
	}
}

// RV-HD-4: the marker is one mapping in EBB, whatever the user accounts
// say. The external server runs filtered accounts written from an older
// users file in which ann was a service (tenant-wide direct CHANGES reads);
// ebb serve --rules runs the current file, where ann is a client whom the
// rules confine. The check passes and ann reads bob's list directly.
func TestRVHD_MarkerPassesWithStaleAccounts(t *testing.T) {
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
	clientURL, adminURL := startExternalNATS(t, oldUsers, true)
	srv := mustStart(t, externalRulesConfig(t, current, adminURL))
	w := &rulesWorld{t: t, srv: srv, natsURL: clientURL}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bob := w.replica("bob")
	if _, err := bob.Put(ctx, "lists", "l-bob", fields("owner", "bob", "team", "blue", "title", "secret plans")); err != nil {
		t.Fatal(err)
	}
	syncOK(t, bob)
	c, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	m, err := w.conn("ann").RequestWithContext(c, "$JS.API.DIRECT.GET."+events.StreamChanges+"."+events.ChangeSubject("acme", "lists", "l-bob"), nil)
	if err == nil && bytes.Contains(m.Data, []byte("secret plans")) {
		t.Errorf("client ann direct-got bob's l-bob; the filtered-reads check passed: %s", m.Data)
	} else {
		t.Logf("direct get: %v", err)
	}
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

// RV-HD-6: a leaf node. The hub runs the filtered accounts (the check on
// ebb serve's connection to the hub passes); a leaf node, connected to the
// hub as the admin and binding its EBB account to the hub's, runs the
// accounts written without --rules. ann, connected to the leaf, reads
// bob's list directly from the hub's CHANGES.
func TestRVHD_LeafNodeUnfiltered(t *testing.T) {
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
	deadline := time.Now().Add(10 * time.Second)
	for leaf.NumLeafNodes() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	adminURL := strings.Replace(hub.ClientURL(), "nats://", "nats://ops:ops-secret@", 1)
	srv := mustStart(t, externalRulesConfig(t, users, adminURL))
	w := &rulesWorld{t: t, srv: srv, natsURL: hub.ClientURL()}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bob := w.replica("bob")
	if _, err := bob.Put(ctx, "lists", "l-bob", fields("owner", "bob", "team", "blue", "title", "secret plans")); err != nil {
		t.Fatal(err)
	}
	syncOK(t, bob)
	time.Sleep(300 * time.Millisecond) // interest over the leaf connection
	wl := &rulesWorld{t: t, srv: srv, natsURL: leaf.ClientURL()}
	c, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	m, err := wl.conn("ann").RequestWithContext(c, "$JS.API.DIRECT.GET."+events.StreamChanges+"."+events.ChangeSubject("acme", "lists", "l-bob"), nil)
	if err == nil && bytes.Contains(m.Data, []byte("secret plans")) {
		t.Errorf("ann on the leaf node direct-got bob's l-bob while ebb serve runs with sync rules: %s", m.Data)
	} else {
		t.Logf("direct get on the leaf: %v %v", err, m)
	}
	js, err := jetstream.New(wl.conn("ann"))
	if err != nil {
		t.Fatal(err)
	}
	oc, err := js.OrderedConsumer(c, events.StreamChanges, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.TenantChanges("acme")}})
	if err != nil {
		t.Logf("ann's ordered consumer on the leaf: %v", err)
		return
	}
	t.Errorf("ebb's consumer create responder made client ann a consumer on CHANGES (%s) while serving sync rules", oc.CachedInfo().Name)
	for i := 0; i < 3; i++ {
		nc := wl.conn("ann")
		inbox := nc.NewRespInbox()
		ch := make(chan *nats.Msg, 4)
		_, _ = nc.ChanSubscribe(inbox, ch)
		_ = nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.CHANGES."+oc.CachedInfo().Name, inbox, []byte(`{"batch":1,"expires":2000000000}`))
		select {
		case rm := <-ch:
			t.Logf("raw fetch reply: subj=%s hdr=%v data=%.200s", rm.Subject, rm.Header, rm.Data)
		case <-time.After(3 * time.Second):
			t.Logf("raw fetch: nothing")
		}
	}
	msg, err := oc.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err == nil && bytes.Contains(msg.Data(), []byte("secret plans")) {
		t.Errorf("ann on the leaf node read bob's l-bob from CHANGES through ebb's own responders while ebb serve runs with sync rules: %s", msg.Data())
	} else {
		t.Logf("next on the leaf: %v", err)
	}
}

// RV-HD-2b: /readyz, open to anyone, names the NATS URL while the
// connection is down; with the host:port form ebb passes the password
// through unredacted.
func TestRVHD_ReadyzShowsNATSPassword(t *testing.T) {
	users := externalRulesUsers(t).WithFilteredReads(false)
	ns, _ := startReloadableNATS(t, users, false)
	cfg := testConfig(t)
	cfg.Users = users
	cfg.NATSURLs = []string{"ops:ops-secret@" + strings.TrimPrefix(ns.ClientURL(), "nats://")}
	s := mustStart(t, cfg)
	ns.Shutdown()
	ns.WaitForShutdown()
	time.Sleep(300 * time.Millisecond)
	resp, err := http.Get(s.URL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), "ops-secret") {
		t.Errorf("unauthenticated GET /readyz: %d %s", resp.StatusCode, body)
	}
}
