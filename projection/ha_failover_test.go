package projection_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// failoverBound is how long the projector may take, after its consumer
// or server went away under it, to apply the next event: generous, since
// the machine is shared and a loaded cluster takes its time to elect
// leaders; the figure measured is logged (5-15 s on a quiet machine).
// At 25 s, below nats.go's default heartbeat detection (30 s), it failed
// the frozen-leader case before the projector's 1 s heartbeat; under a full
// CI run elections alone took longer than that, so CI bounds it at 50 s.
const failoverBound = 50 * time.Second

// timeToApply publishes one event and returns how long until the
// projector's checkpoint covers it, failing after failoverBound.
func timeToApply(t *testing.T, js jetstream.JetStream, p *projection.Projector, w *writer) time.Duration {
	t.Helper()
	start := time.Now()
	ev := w.event("notes", "after-failover", events.OpPut, 0, map[string]any{"n": w.seq})
	var seq uint64
	// The server may still be starting: retry the publish until it is stored.
	waitFor(t, failoverBound, "the event stored", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ack, err := js.PublishMsg(ctx, eventMsg(t, ev), jetstream.WithMsgID(ev.ID))
		if err != nil {
			return false
		}
		seq = ack.Sequence
		return true
	})
	waitFor(t, failoverBound, "the event after the failover applied", func() bool {
		select {
		case <-p.Done():
			t.Fatalf("projector stopped: %v", p.Err())
		default:
		}
		return p.Stats().Checkpoint >= seq
	})
	return time.Since(start)
}

// The durable deleted under the projector (an operator, another ebb serve
// of an older build): recreated at the checkpoint, the next event applied.
func TestProjector_FailoverConsumerDeleted(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	p := startProjector(t, e.js, store, projection.Config{})
	w := newWriter("acme", "dev1", 0)
	_, last := publishPuts(t, e, w, 3)
	waitCheckpoint(t, p, last)
	if err := e.js.DeleteConsumer(context.Background(), events.StreamEvents, projection.DefaultDurable); err != nil {
		t.Fatal(err)
	}
	d := timeToApply(t, e.js, p, w)
	t.Logf("consumer deleted: next event applied after %s (resets %d)", d, p.Stats().Resets)
}

// The single embedded server restarted under the projector: it
// reconnects, recreates its consumer, and applies the next event.
func TestProjector_FailoverServerRestart(t *testing.T) {
	srv := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, srv, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	js := embeddedtest.MustJetStream(t, nc)
	if err := events.EnsureStreams(context.Background(), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	e := &env{srv: srv, nc: nc, js: js}
	store := mustOpenBolt(t, "")
	p := startProjector(t, js, store, projection.Config{Logger: testLogger(t)})
	w := newWriter("acme", "dev1", 0)
	_, last := publishPuts(t, e, w, 3)
	waitCheckpoint(t, p, last)
	embeddedtest.MustRestart(t, srv)
	d := timeToApply(t, js, p, w)
	t.Logf("server restarted: next event applied after %s (resets %d)", d, p.Stats().Resets)
}

// testLogger writes the projector's logs to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// TestProjector_FailoverClusterKills kills, with SIGKILL, the node that
// leads the projector's consumer: once while the projector is connected
// to another node (its pull request dies with the leader, and the new
// leader holds none), once while it is connected to the leader itself (it
// reconnects at once and pulls again while the consumer has no leader, so
// that pull is lost too). Either way no error need reach the projector
// but missed heartbeats, and the next event must be applied within
// failoverBound.
func TestProjector_FailoverClusterKills(t *testing.T) {
	for _, tc := range []struct {
		name      string
		connected bool // kill the node the projector is connected to
		freeze    bool // SIGSTOP rather than SIGKILL
	}{{"leader frozen", false, true}, {"leader killed", false, false}, {"connected leader killed", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustStartCluster(t)
			nc, js := c.connect(t, 0)
			c.ensureStreams(t, js)
			store := mustOpenBolt(t, "")
			p := startProjector(t, js, store, projection.Config{Logger: testLogger(t)})
			w := newWriter("acme", "dev1", 0)
			var last uint64
			for range 3 {
				ev := w.event("notes", fmt.Sprintf("d%d", w.seq), events.OpPut, 0, map[string]any{"n": 1})
				last = publish(t, js, eventMsg(t, ev), ev.ID)
			}
			waitCheckpoint(t, p, last)
			ctx := context.Background()
			var leader string
			waitFor(t, 60*time.Second, "the consumer's leader where the case wants it", func() bool {
				cons, err := js.Consumer(ctx, events.StreamEvents, projection.DefaultDurable)
				if err != nil || cons.CachedInfo().Cluster == nil || cons.CachedInfo().Cluster.Leader == "" {
					return false
				}
				leader = cons.CachedInfo().Cluster.Leader
				if (leader == c.names[0]) != tc.connected {
					nc.Request("$JS.API.CONSUMER.LEADER.STEPDOWN."+events.StreamEvents+"."+projection.DefaultDurable, nil, 2*time.Second)
					return false
				}
				return true
			})
			waitCheckpoint(t, p, last)
			t.Logf("killing %s", leader)
			if tc.freeze {
				c.freeze(t, leader)
			} else {
				c.kill(leader)
			}
			d := timeToApply(t, js, p, w)
			t.Logf("consumer leader %s %s: next event applied after %s (resets %d)", leader, tc.name, d, p.Stats().Resets)
		})
	}
}

// TestProjector_ReadyWithoutQuorum freezes two of three nodes: the
// projector cannot commit anything, and Ready must say so within seconds
// (not only after StallTimeout), naming ErrUnavailable; with the nodes
// back, the next event is applied and Ready is nil again.
func TestProjector_ReadyWithoutQuorum(t *testing.T) {
	c := mustStartCluster(t)
	_, js := c.connect(t, 0)
	c.ensureStreams(t, js)
	store := mustOpenBolt(t, "")
	p := startProjector(t, js, store, projection.Config{Logger: testLogger(t)})
	w := newWriter("acme", "dev1", 0)
	ev := w.event("notes", "d0", events.OpPut, 0, map[string]any{"n": 1})
	waitCheckpoint(t, p, publish(t, js, eventMsg(t, ev), ev.ID))
	waitFor(t, 10*time.Second, "the projector ready", func() bool { return p.Ready() == nil })
	start := time.Now()
	c.freeze(t, c.names[1])
	c.freeze(t, c.names[2])
	var why error
	waitFor(t, 30*time.Second, "Ready to report the lost quorum", func() bool {
		why = p.Ready()
		return why != nil
	})
	t.Logf("quorum lost: Ready reported after %s: %v", time.Since(start), why)
	if !errors.Is(why, projection.ErrUnavailable) {
		t.Errorf("Ready = %v, want an error wrapping ErrUnavailable", why)
	}
	c.thaw(t, c.names[1])
	c.thaw(t, c.names[2])
	d := timeToApply(t, js, p, w)
	t.Logf("quorum back: next event applied after %s", d)
	waitFor(t, 10*time.Second, "the projector ready again", func() bool { return p.Ready() == nil })
}
