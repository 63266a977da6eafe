package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// publishRaw stores data on subject as is, as a hostile or broken writer
// with no auth would.
func publishRaw(t *testing.T, e *env, subject string, data []byte) uint64 {
	t.Helper()
	ack, err := e.js.Publish(context.Background(), subject, data)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func mustEncodeChange(t *testing.T, c events.Change) []byte {
	t.Helper()
	c.Schema = 1
	data, err := events.EncodeChange(&c)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// pullAll pages through a tenant's changes and returns each document's
// version as pulled; it fails the test on any answer but 200.
func pullAll(t *testing.T, e *env, tenant string) (map[string]uint64, uint64) {
	t.Helper()
	docs := map[string]uint64{}
	after := uint64(0)
	for {
		code, body := e.do(t, "GET", fmt.Sprintf("/v1/%s/changes?after=%d&limit=2", tenant, after), nil)
		if code != 200 {
			t.Fatalf("pull after %d: %d %s", after, code, body)
		}
		var resp gateway.ChangesResponse
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.Changes {
			if c.Change.Tenant != tenant {
				t.Fatalf("pull of %s served a change of tenant %q: %+v", tenant, c.Change.Tenant, c.Change)
			}
			docs[c.Change.Collection+"/"+c.Change.Doc] = c.Change.Version
		}
		if resp.LastSeq < after {
			t.Fatalf("last_seq went back: %d after %d", resp.LastSeq, after)
		}
		after = resp.LastSeq
		if !resp.More {
			return docs, after
		}
	}
}

// TestPull_PoisonedChangesSkipped: messages on a tenant's change subjects
// that are not that document's change (garbage, another tenant's payload,
// another document's payload) are skipped, not served and not fatal: the
// pull, the list and the conflict list answer 200 with every other
// document, and a later valid change of a poisoned document comes through.
func TestPull_PoisonedChangesSkipped(t *testing.T) {
	e := newEnv(t)
	good := func(doc string, v uint64) events.Change {
		return events.Change{Tenant: "acme", Collection: "notes", Doc: doc, Version: v, Event: "e", Client: "c",
			Fields: events.Fields{"v": json.RawMessage(fmt.Sprint(v))}}
	}
	for _, d := range []string{"n1", "n2", "n3", "n4"} {
		publishChange(t, e.js, good(d, 1))
	}
	// n1: garbage. n2: another tenant's document. n3: acme's n4 written
	// onto n3's subject (a same-tenant overwrite).
	publishRaw(t, e, events.ChangeSubject("acme", "notes", "n1"), []byte("not json at all"))
	foreign := good("n2", 7)
	foreign.Tenant = "evil"
	publishRaw(t, e, events.ChangeSubject("acme", "notes", "n2"), mustEncodeChange(t, foreign))
	publishRaw(t, e, events.ChangeSubject("acme", "notes", "n3"), mustEncodeChange(t, good("n4", 9)))

	docs, last := pullAll(t, e, "acme")
	if want := map[string]uint64{"notes/n4": 1}; fmt.Sprint(docs) != fmt.Sprint(want) {
		t.Fatalf("pulled %v, want %v (poisoned subjects skipped)", docs, want)
	}
	code, body := e.do(t, "GET", "/v1/acme/docs/notes", nil)
	var list gateway.DocsResponse
	json.Unmarshal(body, &list)
	if code != 200 || len(list.Docs) != 1 || list.Docs[0].ID != "n4" || list.Docs[0].Version != 1 {
		t.Fatalf("list: %d %s", code, body)
	}
	for _, d := range []string{"n1", "n2", "n3"} {
		if code, body := e.do(t, "GET", "/v1/acme/docs/notes/"+d, nil); code != 404 {
			t.Fatalf("get poisoned %s: %d %s, want 404", d, code, body)
		}
	}
	if code, body := e.do(t, "GET", "/v1/acme/conflicts", nil); code != 200 {
		t.Fatalf("conflicts: %d %s", code, body)
	}
	// 3 by the pull, 3 by the list, 3 by the gets, 3 by the conflict list.
	if n := e.gw.Skipped(); n != 12 {
		t.Fatalf("skipped %d messages, want 12", n)
	}

	// Valid changes of the poisoned documents come through afterwards.
	for _, d := range []string{"n1", "n2", "n3"} {
		publishChange(t, e.js, good(d, 2))
	}
	code, body = e.do(t, "GET", fmt.Sprintf("/v1/acme/changes?after=%d", last), nil)
	var resp gateway.ChangesResponse
	json.Unmarshal(body, &resp)
	if code != 200 || len(resp.Changes) != 3 {
		t.Fatalf("pull after the repair: %d %s", code, body)
	}
	if code, body := e.do(t, "GET", "/v1/acme/docs/notes/n3", nil); code != 200 {
		t.Fatalf("get repaired n3: %d %s", code, body)
	}
}

// TestPull_PoisonedReceiptsSkipped: a receipt subject holding garbage or
// another client's (or tenant's) receipt does not stop the client's
// receipts: the pull skips them, long-polls included, and moves on.
func TestPull_PoisonedReceiptsSkipped(t *testing.T) {
	e := newEnv(t)
	subj := events.ReceiptSubject("acme", "alice")
	put := func(r events.Receipt) []byte {
		r.Schema = 1
		data, err := events.EncodeReceipt(&r)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	mine := events.Receipt{Event: "e1", Tenant: "acme", Client: "alice", Seq: 1, Outcome: events.OutcomeApplied}
	publishRaw(t, e, subj, []byte{0xff, 0x00})
	publishRaw(t, e, subj, put(events.Receipt{Event: "x", Tenant: "acme", Client: "bob", Seq: 1, Outcome: events.OutcomeApplied}))
	publishRaw(t, e, subj, put(events.Receipt{Event: "y", Tenant: "evil", Client: "alice", Seq: 1, Outcome: events.OutcomeApplied}))
	publishRaw(t, e, subj, put(mine))

	code, body := e.do(t, "GET", "/v1/acme/receipts/alice?after=0", nil)
	var resp gateway.ReceiptsResponse
	json.Unmarshal(body, &resp)
	if code != 200 || len(resp.Receipts) != 1 || resp.Receipts[0].Receipt.Event != "e1" || resp.LastSeq != resp.Receipts[0].Seq {
		t.Fatalf("receipts: %d %s", code, body)
	}
	if n := e.gw.Skipped(); n != 3 {
		t.Fatalf("skipped %d receipts, want 3", n)
	}
	// A long-poll whose first message is poison returns it skipped, with
	// last_seq past it, so the client does not ask for it again.
	bad := publishRaw(t, e, subj, []byte("{}"))
	code, body = e.do(t, "GET", fmt.Sprintf("/v1/acme/receipts/alice?after=%d&wait=2s", resp.LastSeq), nil)
	json.Unmarshal(body, &resp)
	if code != 200 || len(resp.Receipts) != 0 || resp.LastSeq != bad {
		t.Fatalf("long-poll over poison: %d %s, want no receipts and last_seq %d", code, body, bad)
	}
}
