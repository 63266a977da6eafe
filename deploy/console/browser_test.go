package console_test

import (
	"bytes"
	"context"
	"encoding/json"

	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/deploy/console"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// stack is an ebb server in process: embedded NATS, the projector on a
// bbolt view, the gateway on / and the console on /ui/, served on an
// address that can be stopped and served again (same origin for the
// browser's IndexedDB).
type stack struct {
	nats  *embedded.Server
	js    jetstream.JetStream
	store projection.Store
	addr  string
	h     http.Handler
	creds [2]string // user and password push sends under auth

	mu  sync.Mutex
	srv *http.Server
}

func newStack(t *testing.T) *stack { return newStackWith(t, nil) }

// newStackWith is newStack with the gateway and the console under auth by
// users (nil: open); push then needs st.creds.
func newStackWith(t *testing.T, users *auth.Users) *stack {
	t.Helper()
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, s))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	store, err := projection.OpenBolt(filepath.Join(t.TempDir(), "view.db"), projection.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := projection.New(js, store, projection.Config{Policies: projection.Policies{
		Collections: map[string]projection.Resolver{"notes": projection.Manual}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(); _ = store.Close() })
	g, err := gateway.New(gateway.Config{JetStream: js, Users: users})
	if err != nil {
		t.Fatal(err)
	}
	c, err := console.New(console.Config{JetStream: js, Store: store, Users: users, TraceURL: "http://tracing.invalid/trace/{trace}"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", g)
	mux.Handle(console.Prefix+"/", c)
	mux.Handle(console.Prefix, c)
	st := &stack{nats: s, js: js, store: store, h: mux, addr: "127.0.0.1:0"}
	st.start(t)
	t.Cleanup(st.stop)
	return st
}

// start serves on st.addr (the first time on a free port, then on the same one).
func (st *stack) start(t *testing.T) {
	t.Helper()
	var ln net.Listener
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ln, err = net.Listen("tcp", st.addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // retrying a bind, not synchronising
	}
	if err != nil {
		t.Fatalf("listen %s: %v", st.addr, err)
	}
	st.mu.Lock()
	st.addr = ln.Addr().String()
	st.srv = &http.Server{Handler: st.h, ReadHeaderTimeout: 5 * time.Second}
	srv := st.srv
	st.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// stop closes the server and every connection: the browser is offline.
func (st *stack) stop() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.srv != nil {
		_ = st.srv.Close()
		st.srv = nil
	}
}

func (st *stack) url(path string) string { return "http://" + st.addr + path }

// push posts events through the gateway and fails unless all are accepted.
func (st *stack) push(t *testing.T, tenant string, evs ...events.Event) {
	t.Helper()
	st.pushTraced(t, tenant, "", evs...)
}

// pushTraced is push with a traceparent request header (when not empty).
func (st *stack) pushTraced(t *testing.T, tenant, traceparent string, evs ...events.Event) {
	t.Helper()
	body, _ := json.Marshal(evs)
	req, err := http.NewRequest(http.MethodPost, st.url("/v1/"+tenant+"/events"), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if traceparent != "" {
		req.Header.Set("traceparent", traceparent)
	}
	if st.creds[0] != "" {
		req.SetBasicAuth(st.creds[0], st.creds[1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Results []struct{ ID, Status, Error string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("push to %s: HTTP %d: %v", tenant, resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK || len(out.Results) != len(evs) {
		t.Fatalf("push to %s: HTTP %d with %d results for %d events", tenant, resp.StatusCode, len(out.Results), len(evs))
	}
	for _, r := range out.Results {
		if r.Status != "accepted" {
			t.Fatalf("push %s: %s %s", r.ID, r.Status, r.Error)
		}
	}
}

func (st *stack) get(t *testing.T, tenant, coll, id string) projection.Doc {
	t.Helper()
	d, err := st.store.Get(t.Context(), events.DocAddress{Tenant: tenant, Collection: coll, Doc: id})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// mustBrowser starts headless Chromium with a fresh profile. Without a
// chromium binary the test is skipped, except under CI=true, where it fails.
func mustBrowser(t *testing.T) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no chromium on PATH; CI must install it (.ci/run)")
		}
		t.Skip("no chromium on PATH")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true), chromedp.Flag("no-sandbox", true), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run runs browser actions with a deadline.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// screenshot saves the page as name.png under EBB_SCREENSHOTS (default a
// temp dir) and logs where.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("EBB_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "ebb-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", path)
}

// textOf returns the text of the first node matching sel.
func textOf(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(cctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// waitJS waits until the JavaScript expression is true.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	embeddedtest.WaitFor(t, 20*time.Second, what, func() bool {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ok, err := chromedp.Run(cctx, chromedp.Evaluate[bool](expr))
		return err == nil && ok
	})
}

// evalString evaluates a JavaScript expression (awaiting a promise) to a string.
func evalString(t *testing.T, ctx context.Context, expr string) string {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(cctx, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return s
}
