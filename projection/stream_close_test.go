package projection_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// downPubJS is the real JetStream, except that every asynchronous publish
// fails with err, as while the servers refuse it.
type downPubJS struct {
	jetstream.JetStream
	err      error
	attempts atomic.Int64
}

func (j *downPubJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	j.attempts.Add(1)
	return nil, j.err
}

var errServerDown = errors.New("server down")

// TestProjector_CloseDuringStartRetry: a Start that is retrying the outbox
// left from an earlier run (its publishes failing) must not keep Close
// waiting: Close returns within a deadline, and so does Start, with an
// error.
func TestProjector_CloseDuringStartRetry(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	left := &projection.Batch{Checkpoint: 0, Outbox: []projection.OutboxEntry{{
		Subject: events.ReceiptSubject("acme", "phone"), MsgID: "rcpt:left-over", Data: []byte(`{}`)}}}
	if err := store.Commit(context.Background(), left); err != nil {
		t.Fatal(err)
	}
	js := &downPubJS{JetStream: e.js, err: errServerDown}
	p, err := projection.New(js, store, projection.Config{})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- p.Start(context.Background()) }()
	waitFor(t, 10*time.Second, "Start retrying the outbox", func() bool { return js.attempts.Load() >= 2 })

	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close still waiting 5s after it was called, behind a Start retrying its outbox")
	}
	select {
	case err := <-started:
		if err == nil {
			t.Fatal("Start succeeded although Close stopped it before any publish went through")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Start still retrying 5s after Close returned")
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
