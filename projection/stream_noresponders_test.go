package projection_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// TestProjector_NoRespondersNeverDropsAChange: CHANGES stays the same stream
// but the projector's publishes to it get "no responders" (its server cut
// off from the stream's peers, say) for longer than StallTimeout. The
// update of an existing document used to be dead-lettered and dropped from
// the outbox, so CHANGES kept the older state for good. It is retried
// (Ready says why it is stalled) and lands once CHANGES answers again.
func TestProjector_NoRespondersNeverDropsAChange(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	js := &refuseJS{JetStream: e.js}
	p := startProjector(t, js, store, projection.Config{StallTimeout: 300 * time.Millisecond})
	w := newWriter("acme", "phone", 0)
	v1 := w.event("notes", "a", events.OpPut, 0, map[string]any{"n": 1})
	s1 := publish(t, e.js, eventMsg(t, v1), v1.ID)
	waitCheckpoint(t, p, s1)
	if c := lastChange(t, e.js, v1.Address()); c.Event != v1.ID {
		t.Fatalf("CHANGES has %s, want v1 %s", c.Event, v1.ID)
	}
	chg := events.ChangeSubject("acme", "notes", "a")
	cut := time.Now()
	js.set(func(m *nats.Msg) error {
		if m.Subject == chg {
			return nats.ErrNoResponders
		}
		return nil
	})
	v2 := w.event("notes", "a", events.OpPut, 1, map[string]any{"n": 2})
	s2 := publish(t, e.js, eventMsg(t, v2), v2.ID)
	// The outage lasts well past StallTimeout, with publishes refused all
	// along; the projector says it is stalled, and why.
	waitFor(t, 20*time.Second, "refused publishes for three stall timeouts", func() bool {
		return js.refused.Load() >= 2 && time.Since(cut) > 3*300*time.Millisecond
	})
	if p.Ready() == nil {
		t.Fatal("Ready is nil while every publish of the change is refused")
	}
	if n := msgCount(t, e.js, events.StreamDead); n != 0 {
		t.Fatalf("DEAD holds %d messages: the change was given up on", n)
	}
	js.set(func(*nats.Msg) error { return nil }) // CHANGES answers again
	waitCheckpoint(t, p, s2)
	waitFor(t, 20*time.Second, "CHANGES to hold v2", func() bool { return lastChange(t, e.js, v1.Address()).Event == v2.ID })
	waitFor(t, 20*time.Second, "Ready again", func() bool { return p.Ready() == nil })
}
