package projection_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// failCreateJS is the real JetStream, except that its first n consumer
// creates fail with a server-side API error, as nats-server answers one
// that races another server's delete of the same durable (code 500,
// "open .../meta.inf.tmp: no such file or directory").
type failCreateJS struct {
	jetstream.JetStream
	n atomic.Int64
}

func (j *failCreateJS) CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if j.n.Add(-1) >= 0 {
		return nil, &jetstream.APIError{Code: 500, ErrorCode: 10012, Description: "open obs/ebb-projector/meta.inf.tmp: no such file or directory"}
	}
	return j.JetStream.CreateOrUpdateConsumer(ctx, stream, cfg)
}

// TestProjector_StartRetriesServerErrorOnConsumer: a consumer create the
// server fails on its side (a 5xx API error) at start is retried with
// backoff, as the same create is after a reset; the start goes on and
// applies. It failed the start: two ebb serve starting on one NATS raced
// in TestRulesExternal_DirectOffUntilAServerStarts under load.
func TestProjector_StartRetriesServerErrorOnConsumer(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	w := newWriter("acme", "phone", 0)
	_, last := publishPuts(t, e, w, 3)
	js := &failCreateJS{JetStream: e.js}
	js.n.Store(2)
	p := startProjector(t, js, store, projection.Config{})
	waitCheckpoint(t, p, last)
	if n := msgCount(t, e.js, events.StreamChanges); n != 3 {
		t.Fatalf("CHANGES holds %d changes, want 3", n)
	}
}
