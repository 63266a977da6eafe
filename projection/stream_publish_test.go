package projection_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// refuseJS is the real JetStream, except that a publish refuse picks fails
// at once with the error it returns, as nats.go refuses a message over
// the server's maximum payload.
type refuseJS struct {
	jetstream.JetStream
	refuse  atomic.Pointer[func(m *nats.Msg) error]
	refused atomic.Int64
}

func (j *refuseJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if f := j.refuse.Load(); f != nil {
		if err := (*f)(m); err != nil {
			j.refused.Add(1)
			return nil, err
		}
	}
	return j.JetStream.PublishMsgAsync(m, opts...)
}

func (j *refuseJS) set(f func(m *nats.Msg) error) { j.refuse.Store(&f) }

// TestProjector_PermanentPublishErrorDeadLetters: the change of one
// document is refused for good (maximum payload exceeded). The projector
// must not retry it forever, stalling every tenant: it dead-letters it
// with the reason, drops it from the outbox, and goes on.
func TestProjector_PermanentPublishErrorDeadLetters(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	w := newWriter("acme", "phone", 0)
	big := w.event("notes", "big", events.OpPut, 0, map[string]any{"n": 1})
	publish(t, e.js, eventMsg(t, big), big.ID)
	evs, last := publishPuts(t, e, w, 5)
	bigSubject := events.ChangeSubject("acme", "notes", "big")
	js := &refuseJS{JetStream: e.js}
	js.set(func(m *nats.Msg) error {
		if m.Subject == bigSubject {
			return nats.ErrMaxPayload
		}
		return nil
	})
	p, err := projection.New(js, store, projection.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	waitCheckpoint(t, p, last)
	for _, ev := range evs {
		if c := lastChange(t, e.js, ev.Address()); c.Event != ev.ID {
			t.Errorf("CHANGES of %s: event %s, want %s", ev.Doc, c.Event, ev.ID)
		}
	}
	waitFor(t, 10*time.Second, "a dead letter", func() bool { return msgCount(t, e.js, events.StreamDead) == 1 })
	dl, err := events.DecodeDeadLetter(readAll(t, e.js, events.StreamDead)[0].Data())
	if err != nil {
		t.Fatal(err)
	}
	if dl.Subject != bigSubject || !strings.Contains(dl.Reason, "maximum payload") || dl.Tenant != "acme" {
		t.Errorf("dead letter %+v, want the refused change with its reason", dl)
	}
	waitFor(t, 10*time.Second, "an empty outbox", func() bool {
		out, err := store.Outbox(context.Background(), 0)
		return err == nil && len(out) == 0
	})
	if refused := js.refused.Load(); refused != 1 {
		t.Errorf("the refused change was published %d times, want once", refused)
	}
	if err := p.Ready(); err != nil {
		t.Errorf("Ready() = %v, want nil once the projector has gone on", err)
	}
}

// TestProjector_ReadyWhilePublishFails: while publishing fails (a
// transient error, retried) for longer than StallTimeout, Ready names the
// failure; once it passes, Ready is nil again and nothing was dropped.
func TestProjector_ReadyWhilePublishFails(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	js := &refuseJS{JetStream: e.js}
	p, err := projection.New(js, store, projection.Config{StallTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(); err == nil {
		t.Fatal("Ready() = nil before Start")
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	waitFor(t, 10*time.Second, "ready while idle", func() bool { return p.Ready() == nil })

	js.set(func(*nats.Msg) error { return errServerDown })
	evs, last := publishPuts(t, e, newWriter("acme", "phone", 0), 3)
	waitFor(t, 10*time.Second, "not ready while publishing fails", func() bool {
		err := p.Ready()
		return err != nil && strings.Contains(err.Error(), errServerDown.Error())
	})
	js.set(func(*nats.Msg) error { return nil })
	waitCheckpoint(t, p, last)
	waitFor(t, 10*time.Second, "ready again", func() bool { return p.Ready() == nil })
	for _, ev := range evs {
		if c := lastChange(t, e.js, ev.Address()); c.Event != ev.ID {
			t.Errorf("CHANGES of %s: event %s, want %s", ev.Doc, c.Event, ev.ID)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(); err == nil {
		t.Fatal("Ready() = nil after Close")
	}
	if _, err := projection.New(e.js, store, projection.Config{StallTimeout: -time.Second}); !errors.Is(err, projection.ErrInvalidConfig) {
		t.Fatalf("negative StallTimeout: %v, want ErrInvalidConfig", err)
	}
}

// TestProjector_ReadyWhileConsumerKeepsFailing: a delivery that is lost
// every time makes the projector recreate its consumer again and again
// without progress: Ready must say so rather than report ready.
func TestProjector_ReadyWhileConsumerKeepsFailing(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	js := &lossyJS{JetStream: e.js, drop: func(md *jetstream.MsgMetadata) bool { return md.Sequence.Stream == 1 }}
	publishPuts(t, e, newWriter("acme", "phone", 0), 1)
	p := startProjector(t, js, store, projection.Config{})
	waitFor(t, 30*time.Second, "not ready while the consumer keeps failing", func() bool {
		err := p.Ready()
		return err != nil && strings.Contains(err.Error(), "recreated")
	})
	if s := p.Stats(); s.Resets < 3 || s.Checkpoint != 0 {
		t.Fatalf("stats %+v, want at least 3 resets and no progress", s)
	}
}
