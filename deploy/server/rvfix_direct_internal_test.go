package server

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
)

// flakyUpdateJS fails the next UpdateStream calls while failUpdates > 0
// (as JetStream does right after a cluster restart, "JetStream system
// temporarily unavailable").
type flakyUpdateJS struct {
	jetstream.JetStream
	failUpdates *atomic.Int32
}

func (f flakyUpdateJS) UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if f.failUpdates.Add(-1) >= 0 {
		return nil, errors.New("nats: JetStream system temporarily unavailable")
	}
	return f.JetStream.UpdateStream(ctx, cfg)
}

func allowDirect(t *testing.T, js jetstream.JetStream) bool {
	t.Helper()
	st, err := js.Stream(t.Context(), events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config.AllowDirect
}

// TestRVFix_DirectGetNeverRestoredAfterOneFailedTurnOn: the interlock
// fails (allow_direct turned off), then passes while turning allow_direct
// back on fails once. Every later passing check returns at once
// (was == nil), so CHANGES stays without direct get for good, and
// services (DIRECT.GET only, no STREAM.MSG.GET) cannot read it.
func TestRVFix_DirectGetNeverRestoredAfterOneFailedTurnOn(t *testing.T) {
	cfg := Config{Data: filepath.Join(t.TempDir(), "data"), NATSListen: "127.0.0.1:-1", HTTPListen: "127.0.0.1:0"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	real := s.js
	fails := &atomic.Int32{}
	s.js = flakyUpdateJS{JetStream: real, failUpdates: fails}
	s.rules.feed = nil

	s.applyRulesCheck(ctx, errors.New("node n3: not in filtered reads mode"))
	if allowDirect(t, real) {
		t.Fatal("allow_direct still on while failing")
	}
	fails.Store(1)              // the turn-on right after recovery fails once
	s.applyRulesCheck(ctx, nil) // passes: feed back, setDirect(true) fails (logged)
	for i := 0; i < 3; i++ {
		s.applyRulesCheck(ctx, nil) // later passing checks
	}
	if !allowDirect(t, real) {
		t.Fatalf("allow_direct still off after %d passing checks: one failed turn-on leaves CHANGES's direct get off for good (directed=%v, failing=%v)", 4, s.rules.directed, s.rules.failing)
	}
}
