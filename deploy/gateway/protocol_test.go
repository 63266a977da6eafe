package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/events/schema"
)

func encodeReceipt(t *testing.T, r events.Receipt) []byte {
	t.Helper()
	r.Schema = 1
	data, err := events.EncodeReceipt(&r)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func pullReceipts(t *testing.T, e *env, path string) gateway.ReceiptsResponse {
	t.Helper()
	code, body := e.do(t, "GET", path, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := schema.Validate(schema.ReceiptsPage, body); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	var resp gateway.ReceiptsResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func receiptEvents(resp gateway.ReceiptsResponse) []string {
	out := []string{}
	for _, r := range resp.Receipts {
		out = append(out, r.Receipt.Event)
	}
	return out
}

// TestPullReceipts_EveryDeviceOfTheClient: the receipts route serves the
// receipts of the client's legacy log and of each of its devices, each
// checked against its own subject, and ?device= narrows to one device.
// Another client's devices, and a payload stored on the wrong device's
// subject, are never served.
func TestPullReceipts_EveryDeviceOfTheClient(t *testing.T) {
	e := newEnv(t)
	const d1, d2 = "01KDVDNAZ900000000000000D1", "01KDVDNAZ900000000000000D2"
	rc := func(ev, client, device string) events.Receipt {
		return events.Receipt{Event: ev, Tenant: "acme", Client: client, Device: device, Seq: 1, Outcome: events.OutcomeApplied}
	}
	publishRaw(t, e, events.ReceiptSubject("acme", "alice"), encodeReceipt(t, rc("legacy", "alice", "")))
	publishRaw(t, e, events.DeviceReceiptSubject("acme", "alice", d1), encodeReceipt(t, rc("phone", "alice", d1)))
	publishRaw(t, e, events.DeviceReceiptSubject("acme", "bob", d1), encodeReceipt(t, rc("bobs", "bob", d1)))
	publishRaw(t, e, events.DeviceReceiptSubject("acme", "alice", d2), encodeReceipt(t, rc("laptop", "alice", d2)))
	// Poison: d2's receipt on d1's subject, a receipt of no device on a
	// device's subject, and bob's receipt on alice's device subject.
	publishRaw(t, e, events.DeviceReceiptSubject("acme", "alice", d1), encodeReceipt(t, rc("wrongdev", "alice", d2)))
	publishRaw(t, e, events.DeviceReceiptSubject("acme", "alice", d1), encodeReceipt(t, rc("nodev", "alice", "")))
	publishRaw(t, e, events.DeviceReceiptSubject("acme", "alice", d2), encodeReceipt(t, rc("bob-on-alice", "bob", d2)))

	all := pullReceipts(t, e, "/v1/acme/receipts/alice")
	if got, want := receiptEvents(all), []string{"legacy", "phone", "laptop"}; !slices.Equal(got, want) {
		t.Fatalf("alice's receipts %v, want %v", got, want)
	}
	if n := e.gw.Skipped(); n != 3 {
		t.Fatalf("skipped %d receipts, want 3 (the poisoned ones)", n)
	}
	if all.LastSeq != 7 || all.More {
		t.Fatalf("last_seq %d more %v, want 7 false (past the poisoned ones)", all.LastSeq, all.More)
	}
	one := pullReceipts(t, e, "/v1/acme/receipts/alice?device="+d1)
	if got, want := receiptEvents(one), []string{"phone"}; !slices.Equal(got, want) {
		t.Fatalf("alice's receipts of device %s: %v, want %v", d1, got, want)
	}
	if got := receiptEvents(pullReceipts(t, e, "/v1/acme/receipts/bob")); !slices.Equal(got, []string{"bobs"}) {
		t.Fatalf("bob's receipts %v, want [bobs]", got)
	}
	if code, body := e.do(t, "GET", "/v1/acme/receipts/alice?device=%01", nil); code != http.StatusBadRequest {
		t.Fatalf("a device with a control character: %d %s, want 400", code, body)
	}
	// A long-poll of all devices wakes for a device's receipt.
	done := make(chan gateway.ReceiptsResponse, 1)
	go func() {
		code, body := e.do(t, "GET", fmt.Sprintf("/v1/acme/receipts/alice?after=%d&wait=5s", all.LastSeq), nil)
		var resp gateway.ReceiptsResponse
		if code == http.StatusOK {
			_ = json.Unmarshal(body, &resp)
		}
		done <- resp
	}()
	publishRaw(t, e, events.DeviceReceiptSubject("acme", "alice", d2), encodeReceipt(t, rc("late", "alice", d2)))
	var late gateway.ReceiptsResponse
	select {
	case late = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll did not answer")
	}
	if got := receiptEvents(late); !slices.Equal(got, []string{"late"}) {
		t.Fatalf("long-poll served %v, want [late]", got)
	}
}

// streamOf returns the stream's info.
func streamOf(t *testing.T, e *env, name string) *jetstream.StreamInfo {
	t.Helper()
	st, err := e.js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestPull_StreamIdentity: the changes and receipts answers carry the
// stream's first and last sequence and its creation time, so an HTTP client
// can tell that receipts after its cursor expired (first_seq > after+1),
// that its cursor is beyond the end (after > stream_last_seq), and that the
// stream was created again (stream_created differs).
func TestPull_StreamIdentity(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := range 3 {
		publishRaw(t, e, events.ReceiptSubject("acme", "alice"),
			encodeReceipt(t, events.Receipt{Event: fmt.Sprint("e", i), Tenant: "acme", Client: "alice", Seq: uint64(i + 1), Outcome: events.OutcomeApplied}))
	}
	r := pullReceipts(t, e, "/v1/acme/receipts/alice")
	info := streamOf(t, e, events.StreamReceipts)
	if r.FirstSeq != 1 || r.StreamLastSeq != 3 || !r.StreamCreated.Equal(info.Created) || r.StreamCreated.IsZero() {
		t.Fatalf("receipts answer: first_seq %d stream_last_seq %d stream_created %v, want 1 3 %v", r.FirstSeq, r.StreamLastSeq, r.StreamCreated, info.Created)
	}
	// Receipts expire (a purge stands in for max age): a client at after=1
	// sees first_seq 3 > after+1, so receipt 2 is gone.
	st, _ := e.js.Stream(ctx, events.StreamReceipts)
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(3)); err != nil {
		t.Fatal(err)
	}
	r = pullReceipts(t, e, "/v1/acme/receipts/alice?after=1")
	if r.FirstSeq != 3 || len(r.Receipts) != 1 || r.Receipts[0].Seq != 3 {
		t.Fatalf("after a purge: first_seq %d receipts %+v, want first_seq 3 and receipt 3", r.FirstSeq, r.Receipts)
	}
	// A cursor beyond the end: stream_last_seq says so.
	r = pullReceipts(t, e, "/v1/acme/receipts/alice?after=99")
	if r.StreamLastSeq != 3 || r.LastSeq != 99 || len(r.Receipts) != 0 {
		t.Fatalf("after=99: stream_last_seq %d last_seq %d receipts %d, want 3 99 0", r.StreamLastSeq, r.LastSeq, len(r.Receipts))
	}

	// Changes: the same fields; a stream created again has another
	// creation time.
	publishChange(t, e.js, events.Change{Tenant: "acme", Collection: "c", Doc: "d", Version: 1, Event: "e", Client: "c", HLC: events.HLC{Wall: 1}})
	code, body := e.do(t, "GET", "/v1/acme/changes", nil)
	var c1 gateway.ChangesResponse
	if code != 200 || json.Unmarshal(body, &c1) != nil {
		t.Fatalf("changes: %d %s", code, body)
	}
	if err := schema.Validate(schema.ChangesPage, body); err != nil {
		t.Fatal(err)
	}
	if c1.FirstSeq != 1 || c1.StreamLastSeq != 1 || c1.StreamCreated.IsZero() {
		t.Fatalf("changes answer %s: want first_seq 1, stream_last_seq 1, stream_created", body)
	}
	if err := e.js.DeleteStream(ctx, events.StreamChanges); err != nil {
		t.Fatal(err)
	}
	if err := events.EnsureStreams(ctx, e.js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	code, body = e.do(t, "GET", fmt.Sprintf("/v1/acme/changes?after=%d", c1.LastSeq), nil)
	var c2 gateway.ChangesResponse
	if code != 200 || json.Unmarshal(body, &c2) != nil {
		t.Fatalf("changes after the reset: %d %s", code, body)
	}
	if c2.StreamCreated.Equal(c1.StreamCreated) || c2.StreamLastSeq != 0 || c2.FirstSeq != 0 {
		t.Fatalf("a stream created again: %s, want another stream_created and an empty stream (first 0, last 0); before %s", body, c1.StreamCreated)
	}
}

// TestPushEvents_ReusedIDWithOtherContentInvalid: an event id that names
// another event already stored (in the same batch, or an earlier one inside
// JetStream's duplicate window, which would drop the second silently) is
// answered invalid, field id; the same event again is still duplicate.
func TestPushEvents_ReusedIDWithOtherContentInvalid(t *testing.T) {
	e := newEnv(t)
	a := e.event("acme", "todos", "t1", 1)
	b := a
	b.Fields = events.Fields{"title": json.RawMessage(`"other"`)}
	b.Seq = 2
	code, body := e.do(t, "POST", "/v1/acme/events", []any{a, a, b})
	if code != http.StatusOK {
		t.Fatalf("push: %d %s", code, body)
	}
	var resp gateway.PushResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, r := range resp.Results {
		got = append(got, r.Status)
	}
	if want := []string{gateway.StatusAccepted, gateway.StatusDuplicate, gateway.StatusInvalid}; !slices.Equal(got, want) {
		t.Fatalf("statuses %v, want %v (%s)", got, want, body)
	}
	if resp.Results[2].Field != "id" || resp.Results[2].StreamSeq != 0 {
		t.Fatalf("the reused id's result must name field id and no stream_seq: %+v", resp.Results[2])
	}
	// In a later batch too.
	code, body = e.do(t, "POST", "/v1/acme/events", []any{b})
	json.Unmarshal(body, &resp)
	if code != http.StatusOK || len(resp.Results) != 1 || resp.Results[0].Status != gateway.StatusInvalid {
		t.Fatalf("reused id in a later batch: %d %s, want invalid", code, body)
	}
	if n := streamOf(t, e, events.StreamEvents).State.Msgs; n != 1 {
		t.Fatalf("EVENTS holds %d messages, want 1", n)
	}
}

// TestWrite_ReceiptOnTheDeviceSubjectSettles: the server's write log is a
// device of its identity, and the projector sends a device's receipts on
// ebb.rcpt.<tenant>.<client>.<device>: the writer follows every receipt
// subject of the identity, so such a receipt settles the write.
func TestWrite_ReceiptOnTheDeviceSubjectSettles(t *testing.T) {
	e := newWriteEnv(t, false, 100*time.Millisecond)
	a := e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"title":"milk"}`).want(t, http.StatusAccepted)
	st, err := e.js.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	var ev *events.Event
	embeddedtest.WaitFor(t, 10*time.Second, "the write's event in EVENTS", func() bool {
		m, err := st.GetMsg(t.Context(), 1)
		if err != nil {
			return false
		}
		ev, err = events.DecodeEvent(m.Data, events.Limits{})
		return err == nil
	})
	if ev.ID != a.body.Event || ev.Device == "" {
		t.Fatalf("event %s of device %q, want %s of a device", ev.ID, ev.Device, a.body.Event)
	}
	r := events.Receipt{Schema: 1, Event: ev.ID, Tenant: ev.Tenant, Client: ev.Client, Device: ev.Device, Seq: ev.Seq,
		Collection: ev.Collection, Doc: ev.Doc, Outcome: events.OutcomeApplied, Version: 1, Stream: 1}
	data, err := events.EncodeReceipt(&r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(t.Context(), r.Subject(), data); err != nil {
		t.Fatal(err)
	}
	var got answer
	embeddedtest.WaitFor(t, 10*time.Second, "the write settled by its device's receipt", func() bool {
		got = e.send(t, "GET", "/v1/acme/writes/"+ev.ID, "")
		return got.body.Status == "applied"
	})
	if got.body.Version != 1 {
		t.Fatalf("write answer %+v, want applied at version 1", got.body)
	}
}

// TestWrite_ReusedIsWrittenAgainOnANewDevice: a write of the server's log
// answered reused (another copy of the log holds its sequence) is not
// lost: the log writes it again as a new event of a new device, and the
// original write's answer follows it to the new event's outcome.
func TestWrite_ReusedIsWrittenAgainOnANewDevice(t *testing.T) {
	e := newWriteEnv(t, false, 100*time.Millisecond)
	a := e.send(t, "PUT", "/v1/acme/docs/todos/t1", `{"title":"milk"}`).want(t, http.StatusAccepted)
	st, err := e.js.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	eventAt := func(seq uint64) *events.Event {
		var ev *events.Event
		embeddedtest.WaitFor(t, 10*time.Second, fmt.Sprintf("event %d in EVENTS", seq), func() bool {
			m, err := st.GetMsg(t.Context(), seq)
			if err != nil {
				return false
			}
			ev, err = events.DecodeEvent(m.Data, events.Limits{})
			return err == nil
		})
		return ev
	}
	receipt := func(ev *events.Event, outcome events.Outcome, version uint64) {
		r := events.Receipt{Schema: 1, Event: ev.ID, Tenant: ev.Tenant, Client: ev.Client, Device: ev.Device, Seq: ev.Seq,
			Collection: ev.Collection, Doc: ev.Doc, Outcome: outcome, Version: version, Reason: "test"}
		data, err := events.EncodeReceipt(&r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.js.Publish(t.Context(), r.Subject(), data); err != nil {
			t.Fatal(err)
		}
	}
	first := eventAt(1)
	if first.ID != a.body.Event {
		t.Fatalf("event %s in EVENTS, the answer names %s", first.ID, a.body.Event)
	}
	receipt(first, events.OutcomeReused, 0)
	again := eventAt(2)
	if again.ID == first.ID || again.Device == first.Device || again.Seq != 1 || string(again.Fields["title"]) != `"milk"` ||
		again.Collection != "todos" || again.Doc != "t1" || again.Op != events.OpPut {
		t.Fatalf("written again as %+v, want a new event of a new device at seq 1 with the same put (first %+v)", again, first)
	}
	receipt(again, events.OutcomeApplied, 1)
	var got answer
	embeddedtest.WaitFor(t, 10*time.Second, "the original write's answer at the new event's outcome", func() bool {
		got = e.send(t, "GET", "/v1/acme/writes/"+first.ID, "")
		return got.status == http.StatusOK && got.body.Status == "applied"
	})
	if got.body.Event != again.ID || got.body.Version != 1 {
		t.Fatalf("answer %+v, want event %s applied at version 1", got.body, again.ID)
	}
}
