package gateway_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// cutProxy forwards TCP to target; cut closes every connection and
// refuses new ones until heal.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) heal() { p.mu.Lock(); p.down = false; p.mu.Unlock() }

// TestWriter_ReceiptStoredWhileDisconnectedSettles: a new write log follows its
// receipts with DeliverNewPolicy. nats.go's ordered consumer, reset before
// it delivered anything (a reconnect), is created again with the same
// DeliverNewPolicy, so a receipt stored meanwhile is never delivered: the
// write stays "published" (202) until the server restarts.
func TestWriter_ReceiptStoredWhileDisconnectedSettles(t *testing.T) {
	s := embeddedtest.MustStart(t, func(c *embedded.Config) { c.Sync.Interval = time.Minute; c.Listen = "127.0.0.1:-1" })
	e := &writeEnv{s: s, dir: filepath.Join(t.TempDir(), "gateway"), view: filepath.Join(t.TempDir(), "view.db")}
	e.nc = embeddedtest.MustConnect(t, s)
	e.js = embeddedtest.MustJetStream(t, e.nc)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, e.js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	px := newCutProxy(t, u.Host)
	wnc, err := nats.Connect("nats://"+px.ln.Addr().String(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wnc.Close)
	wjs := embeddedtest.MustJetStream(t, wnc)
	w, err := gateway.OpenWriter(ctx, gateway.WriterConfig{Dir: e.dir, JetStream: wjs, Conn: wnc})
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{JetStream: e.js, Writer: w, WriteWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.w, e.srv = w, httptest.NewServer(g)
	t.Cleanup(func() { e.closeWriter(t) })

	a := e.send(t, "PUT", "/v1/acme/docs/todos/a", `{"x":1}`).want(t, http.StatusAccepted) // no projector yet
	id := a.body.Event
	px.cut() // the writer's connection drops
	e.startProjector(t)
	waitUntil(t, 10*time.Second, func() bool { return e.count(t, events.StreamReceipts) == 1 })
	px.heal()
	waitUntil(t, 10*time.Second, func() bool { return wnc.Status() == nats.CONNECTED })
	embeddedtest.WaitFor(t, 8*time.Second, "the write applied after its receipt was stored while disconnected", func() bool {
		return e.send(t, "GET", "/v1/acme/writes/"+id, "").body.Status == "applied"
	})
}

func waitUntil(t *testing.T, d time.Duration, f func() bool) {
	t.Helper()
	embeddedtest.WaitFor(t, d, "condition", f)
}

func (e *writeEnv) count(t *testing.T, stream string) uint64 {
	st, err := e.js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
