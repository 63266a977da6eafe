package server

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServer_StopsItselfWhenProjectorStops: a projector that stops on its
// own (here: closed behind the server's back) stops the whole server: Done
// closes, Wait names the cause, HTTP is down and the data directory free.
func TestServer_StopsItselfWhenProjectorStops(t *testing.T) {
	cfg := Config{Data: filepath.Join(t.TempDir(), "data"), NATSListen: "127.0.0.1:-1", HTTPListen: "127.0.0.1:0"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.proj.proj.Close(); err != nil {
		t.Fatalf("close the projector: %v", err)
	}
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("server still running after its projector stopped")
	}
	if err := s.Wait(); err == nil || !strings.Contains(err.Error(), "projector stopped") {
		t.Fatalf("wait: %v, want the projector's stop", err)
	}
	if _, err := http.Get(s.URL() + "/healthz"); err == nil {
		t.Fatal("HTTP still served after the server stopped itself")
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("close after the server stopped itself: %v", err)
	}
	again, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("restart on the same data directory: %v", err)
	}
	if err := again.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
