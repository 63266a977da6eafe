package projection

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// countingJS counts the publishes that got through.
type countingJS struct {
	GroupJetStream
	n int
}

func (j *countingJS) PublishMsgAsync(*nats.Msg, ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	j.n++
	return nil, nil
}

// A held partition's projector publishes while its lease is provably
// held, and never once the lease ran out: a holder paused past its TTL
// does not publish on resuming.
func TestLeasedJS_NoPublishPastTheLease(t *testing.T) {
	inner := &countingJS{}
	j := &leasedJS{GroupJetStream: inner}
	if _, err := j.PublishMsgAsync(&nats.Msg{Subject: "x"}); !errors.Is(err, ErrFenced) {
		t.Fatalf("publish before any lease: %v, want ErrFenced", err)
	}
	j.until(time.Now().Add(time.Minute))
	if _, err := j.PublishMsgAsync(&nats.Msg{Subject: "x"}); err != nil || inner.n != 1 {
		t.Fatalf("publish under a held lease: %v, %d through; want it through", err, inner.n)
	}
	j.until(time.Now().Add(-time.Millisecond))
	for _, pub := range []func() error{
		func() error { _, err := j.PublishMsgAsync(&nats.Msg{Subject: "x"}); return err },
		func() error { _, err := j.PublishAsync("x", nil); return err },
		func() error { _, err := j.PublishMsg(t.Context(), &nats.Msg{Subject: "x"}); return err },
		func() error { _, err := j.Publish(t.Context(), "x", nil); return err },
	} {
		if err := pub(); !errors.Is(err, ErrFenced) {
			t.Fatalf("publish past the lease: %v, want ErrFenced", err)
		}
	}
	if inner.n != 1 {
		t.Fatalf("%d publishes got through, want 1", inner.n)
	}
}
