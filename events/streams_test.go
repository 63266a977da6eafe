package events_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/cluster/clustertest"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

func TestEnsureStreams_IdempotentAndConfigured(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, s))

	opts := events.StreamOptions{DedupeWindow: time.Minute, ReceiptsMaxAge: time.Hour}
	for i := range 2 {
		if err := events.EnsureStreams(ctx, js, opts); err != nil {
			t.Fatalf("EnsureStreams run %d: %v", i+1, err)
		}
	}
	want := map[string]func(c jetstream.StreamConfig) bool{
		events.StreamEvents: func(c jetstream.StreamConfig) bool {
			return c.Subjects[0] == "ebb.evt.>" && c.MaxAge == 0 && c.MaxMsgsPerSubject <= 0
		},
		events.StreamChanges: func(c jetstream.StreamConfig) bool {
			return c.Subjects[0] == "ebb.chg.>" && c.MaxMsgsPerSubject == 1 && c.AllowDirect
		},
		events.StreamReceipts: func(c jetstream.StreamConfig) bool {
			return c.Subjects[0] == "ebb.rcpt.>" && c.MaxAge == time.Hour
		},
		events.StreamDead: func(c jetstream.StreamConfig) bool {
			return c.Subjects[0] == "ebb.dead.>" && c.MaxAge == events.DefaultDeadMaxAge
		},
	}
	for name, ok := range want {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		c := st.CachedInfo().Config
		if c.Storage != jetstream.FileStorage || c.Retention != jetstream.LimitsPolicy || c.Duplicates != time.Minute || c.Replicas != 1 {
			t.Errorf("stream %s: storage %v retention %v dupes %v replicas %d", name, c.Storage, c.Retention, c.Duplicates, c.Replicas)
		}
		if !ok(c) {
			t.Errorf("stream %s has unexpected config %+v", name, c)
		}
		if d := events.StreamDiff(c, configOf(t, name, opts)); len(d) != 0 {
			t.Errorf("stream %s differs from its definition in %v", name, d)
		}
	}

	// A changed mutable setting is applied in place.
	opts.ReceiptsMaxAge = 2 * time.Hour
	if err := events.EnsureStreams(ctx, js, opts); err != nil {
		t.Fatalf("update receipts max age: %v", err)
	}
	st, _ := js.Stream(ctx, events.StreamReceipts)
	if got := st.CachedInfo().Config.MaxAge; got != 2*time.Hour {
		t.Fatalf("receipts max age = %v after update, want 2h", got)
	}

	// A setting that cannot change in place is a clear mismatch.
	opts.Storage = jetstream.MemoryStorage
	err := events.EnsureStreams(ctx, js, opts)
	if !errors.Is(err, events.ErrStreamMismatch) {
		t.Fatalf("storage change: err = %v, want ErrStreamMismatch", err)
	}
}

func configOf(t *testing.T, name string, o events.StreamOptions) jetstream.StreamConfig {
	t.Helper()
	for _, c := range events.Streams(o) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no stream %s", name)
	return jetstream.StreamConfig{}
}

// An operator's hand-made changes to settings the options leave at their
// defaults survive a restart of ebb (today's EnsureStreams call), and are
// reported as kept.
func TestEnsureStreams_KeepsOperatorSettings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, s))
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	edit := func(name string, f func(*jetstream.StreamConfig)) {
		t.Helper()
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		c := st.CachedInfo().Config
		f(&c)
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatalf("operator edit of %s: %v", name, err)
		}
	}
	edit(events.StreamEvents, func(c *jetstream.StreamConfig) {
		c.MaxAge, c.MaxBytes, c.Discard, c.Description = 90*24*time.Hour, 1<<30, jetstream.DiscardNew, "ours"
	})
	edit(events.StreamReceipts, func(c *jetstream.StreamConfig) { c.Duplicates, c.MaxAge = 5*time.Minute, time.Hour })

	changes, err := events.ReconcileStreams(ctx, js, events.StreamOptions{})
	if err != nil {
		t.Fatalf("ReconcileStreams: %v", err)
	}
	evt, _ := js.Stream(ctx, events.StreamEvents)
	if c := evt.CachedInfo().Config; c.MaxAge != 90*24*time.Hour || c.MaxBytes != 1<<30 || c.Discard != jetstream.DiscardNew || c.Description != "ours" {
		t.Errorf("EVENTS after restart: max age %v, max bytes %d, discard %v, description %q; want the operator's", c.MaxAge, c.MaxBytes, c.Discard, c.Description)
	}
	rcpt, _ := js.Stream(ctx, events.StreamReceipts)
	if c := rcpt.CachedInfo().Config; c.Duplicates != 5*time.Minute || c.MaxAge != time.Hour {
		t.Errorf("RECEIPTS after restart: dupes %v, max age %v; want the operator's 5m, 1h", c.Duplicates, c.MaxAge)
	}
	kept := map[string]bool{}
	for _, c := range changes {
		if !c.Kept {
			t.Errorf("unexpected change %s", c)
		}
		kept[c.Stream+" "+c.Setting] = true
	}
	for _, want := range []string{"EVENTS max_age", "EVENTS max_bytes", "EVENTS discard", "RECEIPTS duplicate_window", "RECEIPTS max_age"} {
		if !kept[want] {
			t.Errorf("no kept difference reported for %s; got %v", want, changes)
		}
	}

	// Asking for a setting applies it, and only it.
	changes, err = events.ReconcileStreams(ctx, js, events.StreamOptions{EventsMaxAge: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	evt, _ = js.Stream(ctx, events.StreamEvents)
	if c := evt.CachedInfo().Config; c.MaxAge != 30*24*time.Hour || c.MaxBytes != 1<<30 || c.Description != "ours" {
		t.Errorf("EVENTS after asking for max age 30d: max age %v, max bytes %d, description %q", c.MaxAge, c.MaxBytes, c.Description)
	}
	if !hasChange(changes, events.StreamEvents, "max_age", false) {
		t.Errorf("changing max age not reported: %v", changes)
	}
}

func hasChange(cs []events.StreamChange, stream, setting string, kept bool) bool {
	for _, c := range cs {
		if c.Stream == stream && c.Setting == setting && c.Kept == kept {
			return true
		}
	}
	return false
}

func replicasOf(t *testing.T, ctx context.Context, js jetstream.JetStream) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, name := range []string{events.StreamEvents, events.StreamChanges, events.StreamReceipts, events.StreamDead} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		got[name] = st.CachedInfo().Config.Replicas
	}
	return got
}

// In a cluster, streams made R1 are raised to R3 when asked, and the raise
// is reported.
func TestEnsureStreams_RaisesReplicasInCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := clustertest.MustStart(t)
	js := mustClusterJetStream(t, c)
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	changes, err := events.ReconcileStreams(ctx, js, events.StreamOptions{Replicas: 3})
	if err != nil {
		t.Fatalf("raise to R3: %v", err)
	}
	for name, r := range replicasOf(t, ctx, js) {
		if r != 3 {
			t.Errorf("stream %s has %d replicas, want 3", name, r)
		}
		if !hasChange(changes, name, "replicas", false) {
			t.Errorf("raise of %s not reported: %v", name, changes)
		}
	}
}

// Replicas are never lowered: not by a start that asks for nothing (it
// used to rewrite R3 to R1), and not by one that asks for fewer, which is
// refused before any stream is touched.
func TestEnsureStreams_NeverLowersReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := clustertest.MustStart(t)
	js := mustClusterJetStream(t, c)
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	// The operator raises DEAD alone to R3 by hand.
	st, err := js.Stream(ctx, events.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Replicas = 3
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	changes, err := events.ReconcileStreams(ctx, js, events.StreamOptions{})
	if err != nil {
		t.Fatalf("start asking for nothing: %v", err)
	}
	if got := replicasOf(t, ctx, js)[events.StreamDead]; got != 3 {
		t.Fatalf("DEAD has %d replicas after a start asking for nothing, want the operator's 3", got)
	}
	if !hasChange(changes, events.StreamDead, "replicas", true) {
		t.Errorf("kept replicas of DEAD not reported: %v", changes)
	}

	err = events.EnsureStreams(ctx, js, events.StreamOptions{Replicas: 2})
	if !errors.Is(err, events.ErrReplicasLowered) {
		t.Fatalf("asking R2 with DEAD at R3: err = %v, want ErrReplicasLowered", err)
	}
	want := map[string]int{events.StreamEvents: 1, events.StreamChanges: 1, events.StreamReceipts: 1, events.StreamDead: 3}
	if got := replicasOf(t, ctx, js); !maps.Equal(got, want) {
		t.Fatalf("replicas after a refused downgrade = %v, want unchanged %v", got, want)
	}
}

// Without quorum the error says JetStream is unavailable and why, instead
// of a bare deadline.
func TestEnsureStreams_NoQuorumNamesTheCause(t *testing.T) {
	c := clustertest.MustStart(t)
	// Kill the meta leader and one other node; the client's node is left.
	leader := c.MetaLeader()
	left := (leader + 1) % clustertest.Size
	c.Kill(leader)
	c.Kill((leader + 2) % clustertest.Size)
	js := mustClusterJetStream(t, c, left)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	err := events.EnsureStreams(ctx, js, events.StreamOptions{Replicas: 3})
	if !errors.Is(err, events.ErrJetStreamUnavailable) {
		t.Fatalf("EnsureStreams without quorum: err = %v, want ErrJetStreamUnavailable", err)
	}
	t.Logf("error without quorum: %v", err)
}

// mustClusterJetStream connects to node i of c, or to any node.
func mustClusterJetStream(t *testing.T, c *clustertest.Cluster, i ...int) jetstream.JetStream {
	t.Helper()
	url := c.URLs()
	if len(i) > 0 {
		url = c.Node(i[0]).ClientURL()
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
