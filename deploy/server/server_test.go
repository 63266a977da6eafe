package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/datadir"
	"github.com/ebbsync/ebb/deploy/server"
	"github.com/ebbsync/ebb/projection"
)

// testConfig is a server on free loopback ports in a fresh data directory.
func testConfig(t *testing.T) server.Config {
	t.Helper()
	return server.Config{Data: filepath.Join(t.TempDir(), "data"), NATSListen: "127.0.0.1:-1", HTTPListen: "127.0.0.1:0"}
}

// mustStart starts a server on cfg, closed when the test ends.
func mustStart(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := server.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestStart_RefusesInvalidConfig(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	for _, tt := range []struct {
		name string
		cfg  server.Config
	}{
		{"no data directory", server.Config{}},
		{"replicas on the embedded server", server.Config{Data: data, Replicas: 3}},
		{"replicas above JetStream's limit", server.Config{Data: data, NATSURLs: []string{"nats://127.0.0.1:1"}, Replicas: 7}},
		{"partitions on a bbolt view", server.Config{Data: data, Partitions: 2}},
		{"lease ttl without partitions", server.Config{Data: data, LeaseTTL: time.Minute}},
		{"key file with an external server", server.Config{Data: data, NATSURLs: []string{"nats://127.0.0.1:1"}, KeyFile: "k"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := server.Start(t.Context(), tt.cfg)
			if !errors.Is(err, server.ErrInvalidConfig) {
				if s != nil {
					s.Close(context.Background())
				}
				t.Fatalf("start: %v, want ErrInvalidConfig", err)
			}
			if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a refused config touched the data directory: %v", err)
			}
		})
	}
}

// TestServer_HoldsDataDirectoryUntilClose: a second server on the same
// data directory is refused while the first runs and does not disturb it;
// after Close (twice: safe) the directory is free and keeps the view.
func TestServer_HoldsDataDirectoryUntilClose(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := server.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Ready(ctx); err != nil {
		t.Fatalf("ready: %v", err)
	}
	if _, err := server.Start(ctx, cfg); !errors.Is(err, datadir.ErrLocked) {
		t.Fatalf("second server on the same data directory: %v, want datadir.ErrLocked", err)
	}
	if code, body := get(t, first.URL()+"/readyz"); code != 200 {
		t.Fatalf("first server after the refused one: %d %s", code, body)
	}
	if err := first.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := first.Close(ctx); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := first.Wait(); err != nil {
		t.Fatalf("wait after close: %v", err)
	}
	if _, err := http.Get(first.URL() + "/healthz"); err == nil {
		t.Fatal("HTTP still served after Close")
	}
	again := mustStart(t, cfg)
	if err := again.Ready(ctx); err != nil {
		t.Fatalf("restarted server: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Data, server.ViewFile)); err != nil {
		t.Fatalf("view not in the data directory: %v", err)
	}
}

// TestStart_FailureStopsWhatItStarted: a start that fails late (the HTTP
// port is taken, after NATS, the streams and the projector are up) names
// what failed and leaves nothing running: the same data directory starts
// at once.
func TestStart_FailureStopsWhatItStarted(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t)
	bad := cfg
	bad.HTTPListen = busy.Addr().String()
	if s, err := server.Start(t.Context(), bad); err == nil || !strings.Contains(err.Error(), "http listen on "+bad.HTTPListen) {
		if s != nil {
			s.Close(context.Background())
		}
		t.Fatalf("start on a taken HTTP port: %v", err)
	}
	mustStart(t, cfg)
}

// TestStart_CancelledContextAborts: a start whose ctx is cancelled fails
// with the context's error and releases the data directory.
func TestStart_CancelledContextAborts(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if s, err := server.Start(ctx, cfg); !errors.Is(err, context.Canceled) {
		if s != nil {
			s.Close(context.Background())
		}
		t.Fatalf("start with a cancelled ctx: %v, want context.Canceled", err)
	}
	mustStart(t, cfg)
}

// TestServer_ReadyFollowsProjectorReady: Ready and /readyz report the
// projector's cause from Config.ProjectorReady, and are ready again when
// it is gone.
func TestServer_ReadyFollowsProjectorReady(t *testing.T) {
	var cause atomic.Pointer[error]
	cfg := testConfig(t)
	cfg.ProjectorReady = func(p *projection.Projector) error {
		if e := cause.Load(); e != nil {
			return *e
		}
		return p.Ready()
	}
	s := mustStart(t, cfg)
	if err := s.Ready(t.Context()); err != nil {
		t.Fatalf("ready: %v", err)
	}
	stalled := errors.New("projector: no progress for 30s at EVENTS sequence 7")
	cause.Store(&stalled)
	if err := s.Ready(t.Context()); !errors.Is(err, stalled) {
		t.Fatalf("Ready with a stalled projector: %v", err)
	}
	code, body := get(t, s.URL()+"/readyz")
	var resp struct{ Causes []string }
	if err := json.Unmarshal([]byte(body), &resp); err != nil || code != 503 || len(resp.Causes) != 1 || resp.Causes[0] != stalled.Error() {
		t.Fatalf("readyz with a stalled projector: %d %s", code, body)
	}
	cause.Store(nil)
	if code, body := get(t, s.URL()+"/readyz"); code != 200 {
		t.Fatalf("readyz after recovery: %d %s", code, body)
	}
}
