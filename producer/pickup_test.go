package producer

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// heldJS acknowledges no publish until release: every publish is recorded
// and its future resolves (in publish order, stream sequences from 1) only
// then.
type heldJS struct {
	mu   sync.Mutex
	futs []*doneFuture
	held bool
}

func (h *heldJS) PublishMsgAsync(m *nats.Msg, _ ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := &doneFuture{msg: m, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	h.futs = append(h.futs, f)
	if !h.held {
		f.ok <- &jetstream.PubAck{Stream: "EVENTS", Sequence: uint64(len(h.futs))}
	}
	return f, nil
}

func (h *heldJS) published() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.futs)
}

// release acknowledges every publish held so far and those sent after.
func (h *heldJS) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held = false
	for i, f := range h.futs {
		select {
		case f.ok <- &jetstream.PubAck{Stream: "EVENTS", Sequence: uint64(i + 1)}:
		default:
		}
	}
}

// TestPublisher_SendsAppendsWhileAwaitingAcks: an entry appended while
// the publisher waits for the ack of an earlier one (of another document)
// is sent at once, not after that ack: at 500 writes a second with the
// server fsyncing each message, waiting cost every write the ack time of
// the one before it.
func TestPublisher_SendsAppendsWhileAwaitingAcks(t *testing.T) {
	l := tempLog(t)
	js := &heldJS{held: true}
	p := mustPublisher(t, l, js, nil, PublisherConfig{AckTimeout: time.Minute})
	mustAppend(t, l, put("c", "a", 1))
	waitFor(t, 10*time.Second, "the first entry published", func() bool { return js.published() == 1 })
	mustAppend(t, l, put("c", "b", 1))
	waitFor(t, 5*time.Second, "the second entry published while the first awaits its ack", func() bool { return js.published() == 2 })
	js.release()
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Counts follow the commit just after it.
	waitFor(t, 10*time.Second, "both counted published", func() bool { c := l.Counts(); return c.Pending == 0 && c.Published() == 2 })
}
