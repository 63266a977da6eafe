package consumer

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// TestPrepareChange_ReusesScratchAcrossBatches: preparing a batch of
// changes into a recycled batch (as the CHANGES follower does, two batches
// in turn for a whole catch-up) allocates only the head's own strings per
// document, not again the buffer the compact record is built in nor its
// field list (those live with the preparing goroutine, not with a delivery
// that reset clears), nor the tenant, collection and client it shares with
// the change before it.
func TestPrepareChange_ReusesScratchAcrossBatches(t *testing.T) {
	const n = 64
	type msg struct {
		subject string
		data    []byte
	}
	msgs := make([]msg, n)
	for i := range msgs {
		ch := testChange("t1", "c", fmt.Sprintf("doc-%05d", i), 3, i)
		ch.Event, ch.Client = "01JDEV000000000000000000EV", "writer"
		for f := range 6 {
			ch.Fields[fmt.Sprint("f", f)] = json.RawMessage(fmt.Sprint(f * i))
		}
		b, err := events.EncodeChange(ch)
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = msg{events.ChangeSubject(ch.Tenant, ch.Collection, ch.Doc), b}
	}
	prepare := newChangePreparer()
	b := &batch[change]{ds: make([]delivery[change], 0, n)}
	round := func() {
		for _, m := range msgs {
			b.ds = append(b.ds, delivery[change]{})
			prepare.data(m.subject, m.data, nil, &b.ds[len(b.ds)-1].v, &b.arena)
		}
		for _, d := range b.ds {
			if d.v.err != nil {
				t.Fatal(d.v.err)
			}
		}
		b.reset()
	}
	round() // the buffers grow once
	perDoc := testing.AllocsPerRun(20, round) / n
	t.Logf("%.1f allocations per prepared change", perDoc)
	// The head's doc and event strings: tenant, collection and client
	// are the last change's.
	if perDoc > 2 {
		t.Errorf("%.1f allocations per prepared change, want at most 2 (the head's doc and event)", perDoc)
	}
}
