package producer

import (
	"path/filepath"
	"testing"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
)

// TestPublisher_RecordsDuplicateAck: an entry whose publish JetStream
// answered as a duplicate (an earlier publish reached EVENTS and its ack
// was lost) says so (Entry.Duplicate): that publish reached no projector,
// so no receipt answers it, and a replica that stepped over the earlier
// publish's receipt must know (consumer, issue 11 scenario 4). A first
// publish is not a duplicate.
func TestPublisher_RecordsDuplicateAck(t *testing.T) {
	s := embeddedtest.MustStart(t)
	nc := embeddedtest.MustConnect(t, s)
	js := embeddedtest.MustJetStream(t, nc)
	mustEnsureStreams(t, js, events.StreamOptions{})
	path := filepath.Join(t.TempDir(), "log.db")
	l := mustOpen(t, path)
	p := mustPublisher(t, l, js, nc, PublisherConfig{})

	e := mustAppend(t, l, put("c", "d1", 1))[0]
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if first := entryByID(t, l, e.ID); first.State != StatePublished || first.Duplicate {
		t.Fatalf("first publish: %+v, want published, not a duplicate", first)
	}
	p = restartWithLostAck(t, p, l, js, nc, e.Seq)
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if again := entryByID(t, l, e.ID); again.State != StatePublished || !again.Duplicate {
		t.Fatalf("publish after a lost ack: %+v, want published as a duplicate", again)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// The record survives a reopen of the log.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, path)
	if again := entryByID(t, l, e.ID); !again.Duplicate {
		t.Fatalf("after reopen: %+v, want the duplicate ack kept", again)
	}
}
