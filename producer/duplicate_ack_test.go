package producer

import (
	"slices"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// TestPublisher_OnDuplicateNamesEventsStoredBefore: an event an earlier
// publish stored (its ack lost) is acknowledged as a duplicate; the
// publisher reports it, and only it, to OnDuplicate once it is marked
// published, since its receipt may be long gone.
func TestPublisher_OnDuplicateNamesEventsStoredBefore(t *testing.T) {
	s := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	mustEnsureStreams(t, js, events.StreamOptions{})
	l := tempLog(t)
	evs := mustAppend(t, l, put("c", "d1", 1), put("c", "d2", 2))
	// The first event's earlier publish, whose ack never arrived.
	data, err := events.EncodeEvent(evs[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), evs[0].Subject(), data, jetstream.WithMsgID(evs[0].ID)); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var dups []string
	var states []State
	p := mustPublisher(t, l, js, nc, PublisherConfig{OnDuplicate: func(id string) {
		mu.Lock()
		defer mu.Unlock()
		dups = append(dups, id)
		states = append(states, stateOf(t, l, id))
	}})
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(dups, []string{evs[0].ID}) {
		t.Fatalf("OnDuplicate got %v, want only %s", dups, evs[0].ID)
	}
	if states[0] != StatePublished {
		t.Fatalf("OnDuplicate saw %s as %s, want it published", dups[0], states[0])
	}
}
