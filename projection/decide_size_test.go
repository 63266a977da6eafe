package projection

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// natsMaxPayload is the NATS default max_payload every published message
// must fit in (the change, receipt or dead letter with its headers).
const natsMaxPayload = 1 << 20

// bigValue is a JSON string of about n bytes.
func bigValue(n int) string { return `"` + strings.Repeat("x", n-2) + `"` }

// Issue 11 item 10 / issue 13 item 3: a document grown past the message
// limit by patches, each under the event limit, stopped the projector for
// good (its change could never be published). The patch that would cross
// Config.MaxDocBytes is rejected, naming the limit, and the view is
// untouched.
func TestApplier_DocumentSizeLimit(t *testing.T) {
	r := newApplierRun(t, Config{})
	put := seqEvent("A", 1, "big", "f0", bigValue(200<<10))
	r.event(put)
	var last *events.Event
	for i := 1; i <= 5; i++ {
		p := mkEvent(events.OpPatch, uint64(i), 0, "A", "f"+strconv.Itoa(i), bigValue(200<<10))
		p.Seq, p.Doc = uint64(i+1), "big"
		r.event(p)
		last = p
		if r.outcome(p.ID) == events.OutcomeRejected {
			break
		}
	}
	rc := r.receipts[last.ID][0]
	if rc.Outcome != events.OutcomeRejected || !strings.Contains(rc.Reason, "MaxDocBytes") {
		t.Fatalf("patch growing the document to about %d KiB: %s %q, want rejected naming MaxDocBytes", (int(last.Seq))*200, rc.Outcome, rc.Reason)
	}
	d, err := r.store.Get(t.Context(), put.Address())
	if err != nil {
		t.Fatal(err)
	}
	if d.Version != last.Seq-1 {
		t.Errorf("document at v%d after the rejected patch, want v%d (untouched)", d.Version, last.Seq-1)
	}
	for _, e := range r.entries {
		if n := len(e.Data); n > DefaultMaxDocBytes+64<<10 {
			t.Errorf("outbox message on %s of %d bytes", e.Subject, n)
		}
	}
}

// A dead letter stays far under the message limit however large the
// message it refuses: a reference to EVENTS and a bounded prefix, not a
// base64 copy.
func TestApplier_DeadLetterBounded(t *testing.T) {
	r := newApplierRun(t, Config{})
	garbage := append([]byte(`{"id":"`+strings.Repeat("A", 100<<10)+`",`), bytes.Repeat([]byte{0xff}, natsMaxPayload-(120<<10))...)
	s := r.add(events.EventSubject("t", "A", "c", "d"), garbage)
	dl := r.dead[s]
	if dl == nil {
		t.Fatal("no dead letter")
	}
	for _, e := range r.entries {
		if strings.HasPrefix(e.Subject, "ebb.dead") && len(e.Data) > 16<<10 {
			t.Errorf("dead letter of %d bytes for a %d-byte message", len(e.Data), len(garbage))
		}
	}
	if dl.Subject == "" || dl.Stream != s || dl.Size != len(garbage) || len(dl.Data) == 0 || !bytes.HasPrefix(garbage, dl.Data) {
		t.Errorf("dead letter refers to subject %q seq %d size %d with %d bytes of prefix; want the message's subject, seq %d, size %d and a prefix",
			dl.Subject, dl.Stream, dl.Size, len(dl.Data), s, len(garbage))
	}
	if dl.Event != "" {
		t.Errorf("dead letter names event %.40q... read from garbage", dl.Event)
	}
	// A readable payload with an id that is no event id: not copied.
	s = r.add(events.EventSubject("t", "A", "c", "d"), []byte(`{"id":"`+strings.Repeat("A", 100<<10)+`","seq":1}`))
	if dl := r.dead[s]; dl == nil || len(dl.Event) > 26 {
		t.Errorf("dead letter of a payload with a 100 KiB id names event of %d bytes", len(dl.Event))
	}
}
