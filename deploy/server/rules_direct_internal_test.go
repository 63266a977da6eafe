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

// TestApplyRulesCheck_RetriesFailedDirectTurnOn: the interlock fails
// (allow_direct turned off), then passes while turning allow_direct back
// on fails once: the next passing check turns it on (services read
// CHANGES's last messages by DIRECT.GET only).
func TestApplyRulesCheck_RetriesFailedDirectTurnOn(t *testing.T) {
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
	defer s.stopFeed()

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
		t.Fatalf("allow_direct still off after %d passing checks: one failed turn-on leaves CHANGES's direct get off for good (failing=%v)", 4, s.rules.failing)
	}
	fails.Store(1) // a failing check whose turn-off fails once is retried too
	s.applyRulesCheck(ctx, errors.New("node n3: not in filtered reads mode"))
	if !allowDirect(t, real) {
		t.Fatal("the failing turn-off did not fail: the test proves nothing")
	}
	s.applyRulesCheck(ctx, errors.New("node n3: not in filtered reads mode"))
	if allowDirect(t, real) {
		t.Fatal("allow_direct still on after a second failing check: a failed turn-off is not retried")
	}
}

// TestApplyRulesCheck_LeavesOffWhatAnotherServerTurnedOff: allow_direct
// was turned off by another server (whose check may still fail); this
// server's passing checks leave it off (fail closed) and update nothing.
func TestApplyRulesCheck_LeavesOffWhatAnotherServerTurnedOff(t *testing.T) {
	cfg := Config{Data: filepath.Join(t.TempDir(), "data"), NATSListen: "127.0.0.1:-1", HTTPListen: "127.0.0.1:0"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	real := s.js
	st, err := real.Stream(ctx, events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	sc.AllowDirect = false
	if _, err := real.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	s.rules.feed = nil
	defer s.stopFeed()
	for range 3 {
		s.applyRulesCheck(ctx, nil)
	}
	if allowDirect(t, real) {
		t.Fatal("a passing check turned on the allow_direct another server turned off")
	}
}
