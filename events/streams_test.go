package events_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
