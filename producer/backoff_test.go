package producer

import (
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// flakyJS is a hand-written JetStream that refuses the publishes at the
// call numbers in fail (retryable: no responders) and acks the rest at once.
// It records when each call happened.
type flakyJS struct {
	mu    sync.Mutex
	fail  map[int]bool
	calls []time.Time
	seq   uint64
}

func (f *flakyJS) PublishMsgAsync(m *nats.Msg, _ ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, time.Now())
	if f.fail[len(f.calls)] {
		return nil, jetstream.ErrNoStreamResponse
	}
	f.seq++
	fut := &doneFuture{msg: m, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	fut.ok <- &jetstream.PubAck{Stream: "EVENTS", Sequence: f.seq}
	return fut, nil
}

func (f *flakyJS) gaps() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var d []time.Duration
	for i := 1; i < len(f.calls); i++ {
		d = append(d, f.calls[i].Sub(f.calls[i-1]))
	}
	return d
}

type doneFuture struct {
	msg *nats.Msg
	ok  chan *jetstream.PubAck
	err chan error
}

func (f *doneFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *doneFuture) Err() <-chan error            { return f.err }
func (f *doneFuture) Msg() *nats.Msg               { return f.msg }

// TestPublisher_BackoffExponentialCappedAndReset runs the publisher in a
// synctest bubble (fake time, no real sleeping) against a JetStream that
// fails retryably: waits double from BackoffInitial up to BackoffMax, and
// start again from BackoffInitial after a success.
func TestPublisher_BackoffExponentialCappedAndReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		js := &flakyJS{fail: map[int]bool{1: true, 2: true, 3: true, 4: true, 5: true, 7: true, 8: true}}
		l := tempLog(t)
		p, err := NewPublisher(l, js, nil, PublisherConfig{
			BackoffInitial: 100 * time.Millisecond,
			BackoffMax:     400 * time.Millisecond,
			Jitter:         func(ceiling time.Duration) time.Duration { return ceiling }, // the top of full jitter
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer p.Close()

		mustAppend(t, l, put("c", "d1", 1))
		if err := p.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the committer has reported the recovery
		if st := p.Status(); st.Retrying || st.LastError == "" || st.Pending != 0 {
			t.Fatalf("status after recovery %+v", st)
		}
		mustAppend(t, l, put("c", "d1", 2))
		if err := p.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		ms := time.Millisecond
		// Calls 1-5 fail, 6 succeeds; then an append: 7, 8 fail, 9 succeeds.
		want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 400 * ms, 400 * ms, 0, 100 * ms, 200 * ms}
		got := js.gaps()
		if len(got) != len(want) {
			t.Fatalf("gaps %v, want %v", got, want)
		}
		for i := range want {
			if i == 5 {
				continue // the wait for the second append, not a backoff
			}
			if got[i] != want[i] {
				t.Fatalf("gap %d is %s, want %s (all: %v)", i, got[i], want[i], got)
			}
		}
	})
}

func TestBackoff_FullJitterBounds(t *testing.T) {
	b, err := PublisherConfig{BackoffInitial: time.Millisecond, BackoffMax: time.Second}.NewBackoff()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		d := b.Next()
		ceiling := min(time.Second, time.Millisecond<<min(i, 40))
		if d < 0 || d > ceiling {
			t.Fatalf("attempt %d: wait %s outside [0, %s]", i, d, ceiling)
		}
	}
	if _, err := (PublisherConfig{MaxInFlight: -1, BackoffInitial: time.Second, BackoffMax: time.Millisecond}).withDefaults(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("bad config: %v", err)
	}
	if _, err := (PublisherConfig{BackoffInitial: time.Second, BackoffMax: time.Millisecond}).NewBackoff(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("NewBackoff of a bad config: %v", err)
	}
	b.Reset()
	if d := b.Next(); d > time.Millisecond {
		t.Fatalf("after Reset: wait %s, want at most the initial 1ms", d)
	}
}

func (c PublisherConfig) mustDefaults(t *testing.T) PublisherConfig {
	t.Helper()
	c, err := c.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
