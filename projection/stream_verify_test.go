package projection_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestVerify_MissingHistory: Verify (and the Rebuild under it) fails, fast,
// with ErrHistoryGone and a message saying what is missing, whenever
// EVENTS cannot give back the history up to the view's checkpoint; it
// never waits for events that will not come.
func TestVerify_MissingHistory(t *testing.T) {
	cases := []struct {
		name string
		// break removes part of the history of a view projected from 20
		// events (EVENTS 1..20, checkpoint 20).
		breakIt func(t *testing.T, e *env)
		want    string // in the error
	}{
		{"stream deleted", func(t *testing.T, e *env) {
			if err := e.js.DeleteStream(context.Background(), events.StreamEvents); err != nil {
				t.Fatal(err)
			}
		}, "EVENTS"},
		{"stream purged", func(t *testing.T, e *env) {
			s, err := e.js.Stream(context.Background(), events.StreamEvents)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Purge(context.Background()); err != nil {
				t.Fatal(err)
			}
		}, "starts at sequence 21"},
		{"first events expired", func(t *testing.T, e *env) {
			s, err := e.js.Stream(context.Background(), events.StreamEvents)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Purge(context.Background(), jetstream.WithPurgeSequence(5)); err != nil {
				t.Fatal(err)
			}
		}, "starts at sequence 5"},
		{"tail deleted", func(t *testing.T, e *env) {
			s, err := e.js.Stream(context.Background(), events.StreamEvents)
			if err != nil {
				t.Fatal(err)
			}
			for seq := uint64(16); seq <= 20; seq++ {
				if err := s.DeleteMsg(context.Background(), seq); err != nil {
					t.Fatal(err)
				}
			}
		}, "checkpoint 20"},
		{"stream recreated shorter", func(t *testing.T, e *env) {
			recreateStream(t, e, events.StreamEvents)
			publishPuts(t, e, newWriter("acme", "other", 0), 5)
		}, "checkpoint 20"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			store := mustOpenBolt(t, "")
			_, last := publishPuts(t, e, newWriter("acme", "phone", 0), 20)
			p := startProjector(t, e.js, store, projection.Config{})
			waitCheckpoint(t, p, last)
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			c.breakIt(t, e)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			_, err := projection.Verify(ctx, e.js, store, projection.Config{})
			if !errors.Is(err, projection.ErrHistoryGone) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Verify = %v after %s, want ErrHistoryGone mentioning %q", err, time.Since(start).Round(time.Millisecond), c.want)
			}
		})
	}
}

// TestVerify_Reanchored: a view re-anchored on a new EVENTS holds what the
// old one applied: Verify refuses it rather than report a divergence or
// pass on the part it can see.
func TestVerify_Reanchored(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	w := newWriter("acme", "phone", 0)
	_, last := publishPuts(t, e, w, 20)
	p := startProjector(t, e.js, store, projection.Config{})
	waitCheckpoint(t, p, last)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	recreateStream(t, e, events.StreamEvents)
	_, last = publishPuts(t, e, w, 30) // past the old checkpoint
	p = startProjector(t, e.js, store, projection.Config{})
	waitCheckpoint(t, p, last)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := projection.Verify(ctx, e.js, store, projection.Config{})
	if !errors.Is(err, projection.ErrHistoryGone) || !strings.Contains(err.Error(), "re-anchored") {
		t.Fatalf("Verify of a re-anchored view = %v, want ErrHistoryGone saying it was re-anchored", err)
	}
}
