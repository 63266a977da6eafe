package producer

import (
	"testing"
	"time"

	"github.com/ebbsync/ebb/events"
)

// TestPublisher_PublishedCountsASettleBeforeItsAck: online, an entry's
// receipt often settles it before the publisher's ack mark commits. Flush
// then returns (nothing is pending), and Status().Published must already
// count the entry, which its receipt proves was published; its late ack
// must not count it again. (Sync reports Pushed from this count: it read 0
// for a write it had pushed.)
func TestPublisher_PublishedCountsASettleBeforeItsAck(t *testing.T) {
	l := tempLog(t)
	js := &heldJS{held: true}
	p := mustPublisher(t, l, js, nil, PublisherConfig{AckTimeout: time.Minute})
	e := mustAppend(t, l, put("c", "a", 1))[0]
	waitFor(t, 10*time.Second, "the entry sent", func() bool { return js.published() == 1 })
	if err := l.Update(t.Context(), func(tx *Tx) error {
		return tx.Settle(&events.Receipt{Event: e.ID, Tenant: e.Tenant, Client: e.Client, Seq: e.Seq, Outcome: events.OutcomeApplied, Version: 1})
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := p.Status().Published; n != 1 {
		t.Fatalf("after Flush returned: Published %d, want 1 (settled by its receipt before its ack)", n)
	}
	js.release()
	waitFor(t, 10*time.Second, "the late ack stored", func() bool {
		es, err := l.Entries(t.Context())
		return err == nil && len(es) == 1 && !es[0].PublishedAt.IsZero()
	})
	if n := p.Status().Published; n != 1 {
		t.Fatalf("after the late ack: Published %d, want 1 (counted once)", n)
	}
}
