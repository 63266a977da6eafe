package embedded_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
)

// waitTimeout bounds every wait on a condition in these tests.
const waitTimeout = 20 * time.Second

func mustCreateStream(t *testing.T, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     "T",
		Subjects: []string{"t.>"},
		Storage:  jetstream.FileStorage,
	})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	return st
}

func mustPublish(t *testing.T, js jetstream.JetStream, subj, data string) *jetstream.PubAck {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	ack, err := js.Publish(ctx, subj, []byte(data))
	if err != nil {
		t.Fatalf("publish %s: %v", subj, err)
	}
	return ack
}

func mustGetMsg(t *testing.T, st jetstream.Stream, seq uint64) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		t.Fatalf("get msg %d: %v", seq, err)
	}
	return string(m.Data)
}

func TestStart_DontListenInProcess(t *testing.T) {
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	if got := s.ClientURL(); got != "" {
		t.Errorf("ClientURL() = %q, want empty with DontListen", got)
	}
	if got := s.Addr(); got != "" {
		t.Errorf("Addr() = %q, want empty with DontListen", got)
	}
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, s))
	st := mustCreateStream(t, js)

	ack := mustPublish(t, js, "t.a", "hello")
	if ack.Stream != "T" || ack.Sequence != 1 {
		t.Fatalf("ack = %+v, want stream T seq 1", ack)
	}
	if got := mustGetMsg(t, st, 1); got != "hello" {
		t.Errorf("read back %q, want %q", got, "hello")
	}
}

func TestStart_RandomPortAndShutdownTwice(t *testing.T) {
	s, err := embedded.Start(t.Context(), embedded.Config{Dir: t.TempDir(), Listen: "127.0.0.1:-1"})
	if err != nil {
		t.Fatal(err)
	}
	url := s.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":-1") || strings.HasSuffix(url, ":0") {
		t.Fatalf("ClientURL() = %q, want nats://127.0.0.1:<bound port>", url)
	}
	if want := "nats://" + s.Addr(); url != want {
		t.Errorf("ClientURL() = %q, Addr() gives %q", url, want)
	}

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("dial ClientURL: %v", err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("first Shutdown: %v", err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if s.NATS().Running() {
		t.Error("server still running after Shutdown")
	}
}

func TestStart_RestartSameDirAndPort(t *testing.T) {
	s := embeddedtest.MustStart(t)

	disconnected := make(chan struct{}, 1)
	reconnected := make(chan struct{}, 1)
	nc := embeddedtest.MustConnect(t, s,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond),
		nats.DisconnectErrHandler(func(*nats.Conn, error) {
			select {
			case disconnected <- struct{}{}:
			default:
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			select {
			case reconnected <- struct{}{}:
			default:
			}
		}),
	)
	js := embeddedtest.MustJetStream(t, nc)
	mustCreateStream(t, js)
	const n = 10
	for i := range n {
		mustPublish(t, js, "t.a", string(rune('a'+i)))
	}
	before := s.Addr()

	s2 := embeddedtest.MustRestart(t, s)
	wait(t, disconnected, "client to notice the shutdown")

	if got := s2.Addr(); got != before {
		t.Fatalf("restarted on %q, want same address %q", got, before)
	}
	wait(t, reconnected, "client to reconnect by itself")

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.State.Msgs != n {
		t.Fatalf("after restart stream holds %d messages, want %d", info.State.Msgs, n)
	}
	if got := mustGetMsg(t, st, n); got != string(rune('a'+n-1)) {
		t.Errorf("message %d = %q after restart", n, got)
	}
	if ack := mustPublish(t, js, "t.a", "after"); ack.Sequence != n+1 {
		t.Errorf("publish after restart got seq %d, want %d", ack.Sequence, n+1)
	}
}

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
	}
}

func TestStart_InvalidConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name      string
		cfg       embedded.Config
		wantField []string // each must appear in the error text
	}{
		{name: "empty dir", cfg: embedded.Config{Listen: "127.0.0.1:-1"}, wantField: []string{"Dir"}},
		{name: "listen without port", cfg: embedded.Config{Dir: dir, Listen: "localhost"}, wantField: []string{`Listen "localhost"`}},
		{name: "listen port not a number", cfg: embedded.Config{Dir: dir, Listen: "127.0.0.1:http"}, wantField: []string{`Listen "127.0.0.1:http"`}},
		{name: "listen port out of range", cfg: embedded.Config{Dir: dir, Listen: "127.0.0.1:70000"}, wantField: []string{`Listen "127.0.0.1:70000"`}},
		{name: "listen with dont listen", cfg: embedded.Config{Dir: dir, Listen: "127.0.0.1:-1", DontListen: true}, wantField: []string{"Listen", "DontListen"}},
		{name: "negative sync interval", cfg: embedded.Config{Dir: dir, DontListen: true, Sync: embedded.SyncPolicy{Interval: -time.Second}}, wantField: []string{"Sync.Interval"}},
		{name: "all at once", cfg: embedded.Config{Listen: "nope", ReadyTimeout: -1, MaxPayload: -1}, wantField: []string{"Dir", `Listen "nope"`, "ReadyTimeout", "MaxPayload"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := embedded.Start(t.Context(), tt.cfg)
			if err == nil {
				_ = s.Shutdown(context.Background())
				t.Fatal("Start succeeded, want error")
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, embedded.ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			for _, f := range tt.wantField {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("error %q does not name %s", err, f)
				}
			}
		})
	}
}

func TestStart_PortInUse(t *testing.T) {
	first := embeddedtest.MustStart(t)
	start := time.Now()
	s, err := embedded.Start(t.Context(), embedded.Config{
		Dir:          t.TempDir(),
		Listen:       first.Addr(),
		ReadyTimeout: time.Minute,
	})
	if err == nil {
		_ = s.Shutdown(context.Background())
		t.Fatal("second server on a taken port started")
	}
	t.Logf("error: %v", err)
	if !errors.Is(err, embedded.ErrNotReady) {
		t.Errorf("error %v does not wrap ErrNotReady", err)
	}
	// The listen failure is reported at once, not after ReadyTimeout.
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %s to report a taken port", d)
	}
}

func TestStart_SyncPolicy(t *testing.T) {
	tests := []struct {
		name         string
		sync         embedded.SyncPolicy
		wantAlways   bool
		wantInterval time.Duration
	}{
		{name: "default fsyncs every write", wantAlways: true, wantInterval: embedded.NATSDefaultSyncInterval},
		{name: "interval", sync: embedded.SyncPolicy{Interval: time.Second}, wantInterval: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := embeddedtest.MustStart(t, embeddedtest.InProcess(), func(c *embedded.Config) { c.Sync = tt.sync })
			jc := s.NATS().JetStreamConfig()
			if jc == nil {
				t.Fatal("JetStream not enabled")
			}
			if jc.SyncAlways != tt.wantAlways || jc.SyncInterval != tt.wantInterval {
				t.Errorf("SyncAlways=%v SyncInterval=%s, want %v %s", jc.SyncAlways, jc.SyncInterval, tt.wantAlways, tt.wantInterval)
			}
			if got := s.Config().Sync.Always(); got != tt.wantAlways {
				t.Errorf("Config().Sync.Always() = %v", got)
			}
		})
	}
}

func TestStart_LogsToSlog(t *testing.T) {
	var out embeddedtest.Buffer
	logger := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	embeddedtest.MustStart(t, embeddedtest.InProcess(), func(c *embedded.Config) { c.Logger = logger })
	got := out.String()
	if !strings.Contains(got, "component=nats") || !strings.Contains(got, "level=INFO") {
		t.Fatalf("no nats info lines with component=nats in log:\n%s", got)
	}
	if strings.Contains(got, "level=DEBUG") {
		t.Errorf("debug lines logged although the handler is at info")
	}
}
