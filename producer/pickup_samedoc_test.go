package producer

import (
	"testing"
	"time"
)

// TestPublisher_SameDocHeldWhileInFlight: with pickup, a second write of a
// document whose first publish awaits its ack is not sent until that ack;
// writes of other documents still go. Then both go in log order.
func TestPublisher_SameDocHeldWhileInFlight(t *testing.T) {
	l := tempLog(t)
	js := &heldJS{held: true}
	p := mustPublisher(t, l, js, nil, PublisherConfig{AckTimeout: time.Minute})
	mustAppend(t, l, put("c", "a", 1))
	waitFor(t, 10*time.Second, "first published", func() bool { return js.published() == 1 })
	mustAppend(t, l, put("c", "a", 2))
	mustAppend(t, l, put("c", "b", 1))
	// The publisher goes through the log in order, so by the time b#1
	// (appended after a#2) is sent, a#2 was passed over: the second publish
	// must be b's, and no third may come before a#1's ack.
	waitFor(t, 5*time.Second, "the other document's write sent", func() bool { return js.published() == 2 })
	js.mu.Lock()
	first, second, n := js.futs[0].msg.Subject, js.futs[1].msg.Subject, len(js.futs)
	js.mu.Unlock()
	if second == first || n != 2 {
		t.Fatalf("while a#1 awaits its ack: %d publishes, the second on %s; want 2, the second b's", n, second)
	}
	js.release()
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	js.mu.Lock()
	defer js.mu.Unlock()
	if len(js.futs) != 3 || js.futs[2].msg.Subject != js.futs[0].msg.Subject || second == js.futs[0].msg.Subject {
		t.Fatalf("publish order wrong: %d publishes", len(js.futs))
	}
}
