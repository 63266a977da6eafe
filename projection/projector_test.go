package projection_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

func TestProjector_DeadLetters(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	w := newWriter("acme", "phone-1", 0)

	good1 := w.event("notes", "n.1", events.OpPut, 0, map[string]any{"title": "hello"})
	m1 := eventMsg(t, good1)
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	m1.Header.Set("traceparent", traceparent)
	publish(t, e.js, m1, good1.ID)

	garbage := nats.NewMsg(events.EventSubject("acme", w.client, "notes", "x"))
	garbage.Data = []byte(`{"schema":1,"id":` + "\xff")
	publish(t, e.js, garbage, "")

	wrong := w.event("notes", "n.2", events.OpPut, 0, map[string]any{"title": "misfiled"})
	wm := eventMsg(t, wrong)
	wm.Subject = events.EventSubject("acme", w.client, "notes", "somewhere-else")
	publish(t, e.js, wm, wrong.ID)

	// Published by "mallory" (the subject NATS permissions vouch for) in
	// w's name: refused, and the invalid receipt goes to mallory.
	forged := w.event("notes", "n.1", events.OpPatch, 1, map[string]any{"title": "forged"})
	fm := eventMsg(t, forged)
	fm.Subject = events.EventSubject("acme", "mallory", "notes", "n.1")
	publish(t, e.js, fm, forged.ID)

	future := w.event("notes", "n.1", events.OpPatch, 1, map[string]any{"title": "from the future"})
	future.HLC.Wall = time.Now().Add(365 * 24 * time.Hour).UnixMilli()
	publish(t, e.js, eventMsg(t, future), future.ID)

	good2 := w.event("notes", "n.1", events.OpPatch, 1, map[string]any{"body": "still here"})
	m2 := eventMsg(t, good2)
	const traceparent2 = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
	m2.Header.Set("traceparent", traceparent2)
	last := publish(t, e.js, m2, good2.ID)

	p := startProjector(t, e.js, store, projection.Config{Policies: testPolicies()})
	waitCheckpoint(t, p, last)
	waitFor(t, 10*time.Second, "dead letters", func() bool { return msgCount(t, e.js, events.StreamDead) == 4 })

	wantReasons := []string{"decode event", "subject", "subject", "clock too far"}
	for i, m := range readAll(t, e.js, events.StreamDead) {
		dl, err := events.DecodeDeadLetter(m.Data())
		if err != nil {
			t.Fatalf("dead letter %d: %v", i, err)
		}
		if !strings.Contains(dl.Reason, wantReasons[i]) {
			t.Errorf("dead letter %d reason %q, want it to mention %q", i, dl.Reason, wantReasons[i])
		}
		if dl.Stream != uint64(i+2) || len(dl.Data) == 0 || dl.Subject == "" {
			t.Errorf("dead letter %d: stream %d subject %q data %d bytes", i, dl.Stream, dl.Subject, len(dl.Data))
		}
	}
	d, err := store.Get(context.Background(), good1.Address())
	if err != nil {
		t.Fatal(err)
	}
	if d.Version != 2 || string(d.Fields["title"]) != `"hello"` || string(d.Fields["body"]) != `"still here"` {
		t.Fatalf("document around the dead letters: v%d %v", d.Version, d.Fields)
	}
	outcomes := map[string]events.Outcome{}
	for _, m := range readAll(t, e.js, events.StreamReceipts) {
		r, err := events.DecodeReceipt(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		outcomes[r.Event] = r.Outcome
		if r.Event == forged.ID && (r.Client != "mallory" || m.Subject() != events.ReceiptSubject("acme", "mallory")) {
			t.Errorf("receipt of the forged event went to client %q on %q, want mallory", r.Client, m.Subject())
		}
		if r.Event == good1.ID && m.Headers().Get("traceparent") != traceparent {
			t.Errorf("receipt of the first event: traceparent %q, want %q", m.Headers().Get("traceparent"), traceparent)
		}
	}
	want := map[string]events.Outcome{good1.ID: events.OutcomeApplied, wrong.ID: events.OutcomeInvalid, forged.ID: events.OutcomeInvalid,
		future.ID: events.OutcomeInvalid, good2.ID: events.OutcomeApplied}
	for id, o := range want {
		if outcomes[id] != o {
			t.Errorf("receipt of %s: %q, want %q", id, outcomes[id], o)
		}
	}
	if len(outcomes) != len(want) {
		t.Errorf("receipts %v, want %v", outcomes, want)
	}
	// The trace context of an event rides on its change.
	chg, err := e.js.Stream(context.Background(), events.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	lastChg, err := chg.GetLastMsgForSubject(context.Background(), events.ChangeSubject("acme", "notes", "n.1"))
	if err != nil {
		t.Fatal(err)
	}
	if got := lastChg.Header.Get("traceparent"); got != traceparent2 {
		t.Errorf("change traceparent %q, want %q", got, traceparent2)
	}
	if _, err := projection.Verify(context.Background(), e.js, store, projection.Config{Policies: testPolicies()}); err != nil {
		t.Fatal(err)
	}
}

func TestProjector_ResumeAndDuplicates(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	w := newWriter("acme", "laptop", 0)
	ev := w.event("profiles", "p1", events.OpPut, 0, map[string]any{"name": "ann"})
	publish(t, e.js, eventMsg(t, ev), ev.ID)
	p, err := projection.New(e.js, store, projection.Config{Policies: testPolicies()})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitCheckpoint(t, p, 1)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// The same event again beyond JetStream's dedupe (another msg id), and a
	// new one: the duplicate changes nothing, the new one applies.
	publish(t, e.js, eventMsg(t, ev), "retry-after-window")
	ev2 := w.event("profiles", "p1", events.OpPatch, 1, map[string]any{"age": 3})
	last := publish(t, e.js, eventMsg(t, ev2), ev2.ID)
	p2 := startProjector(t, e.js, store, projection.Config{Policies: testPolicies()})
	waitCheckpoint(t, p2, last)
	if s := p2.Stats(); s.Duplicates != 1 || s.Applied != 1 {
		t.Fatalf("stats after resume %+v, want 1 duplicate and 1 applied", s)
	}
	d, _ := store.Get(context.Background(), ev.Address())
	if d.Version != 2 {
		t.Fatalf("version %d, want 2", d.Version)
	}
	// A wrong config is refused whole.
	_, err = projection.New(e.js, store, projection.Config{BatchSize: -1, Durable: "a.b"})
	if !errors.Is(err, projection.ErrInvalidConfig) || !strings.Contains(err.Error(), "Durable") || !strings.Contains(err.Error(), "BatchSize") {
		t.Fatalf("bad config: %v", err)
	}
}

// TestProjector_LateEventFillsHole publishes one writer's events with client
// sequences 1, 2, 4, 5 and then 3 straight into EVENTS, each for its own
// document (the producer keeps a writer's order per document only), with a
// projector restart before 3 arrives, so the hole must survive in the store.
// 3 is applied (receipt applied, not duplicate); true repeats of 4 and 3
// (other msg ids, as after JetStream's dedupe window) are duplicates; and
// Verify's rebuild decides the same.
func TestProjector_LateEventFillsHole(t *testing.T) {
	e := newEnv(t)
	store := mustOpenBolt(t, "")
	ctx := context.Background()
	w := newWriter("acme", "phone", 0)
	evs := map[uint64]*events.Event{}
	for i := 1; i <= 5; i++ {
		ev := w.event("notes", fmt.Sprintf("n%d", i), events.OpPut, 0, map[string]any{"i": i})
		evs[ev.Seq] = ev
	}
	// Every receipt published, seen on core NATS: a repeat's receipt has the
	// same Nats-Msg-Id as the first, so RECEIPTS itself drops it. Outcomes are
	// kept once each: a restarted projector republishes its outbox.
	var mu sync.Mutex
	outcomes := map[string][]events.Outcome{}
	sub, err := e.nc.Subscribe(events.ReceiptSubject("acme", "phone"), func(m *nats.Msg) {
		r, err := events.DecodeReceipt(m.Data)
		if err != nil {
			t.Errorf("receipt: %v", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(outcomes[r.Event], r.Outcome) {
			outcomes[r.Event] = append(outcomes[r.Event], r.Outcome)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	received := func(n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			got := 0
			for _, os := range outcomes {
				got += len(os)
			}
			return got >= n
		}
	}

	var last uint64
	for _, seq := range []uint64{1, 2, 4, 5} {
		last = publish(t, e.js, eventMsg(t, evs[seq]), evs[seq].ID)
	}
	p1, err := projection.New(e.js, store, projection.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitCheckpoint(t, p1, last)
	if err := p1.Close(); err != nil {
		t.Fatal(err)
	}
	hw, err := store.HighWater(ctx, "acme", "phone")
	if err != nil {
		t.Fatal(err)
	}
	if want := (projection.HighWater{Seq: 5, Holes: []projection.SeqRange{{From: 3, To: 3}}}); !reflect.DeepEqual(hw, want) {
		t.Fatalf("after 1, 2, 4, 5: %+v, want %+v", hw, want)
	}

	publish(t, e.js, eventMsg(t, evs[3]), evs[3].ID)
	publish(t, e.js, eventMsg(t, evs[4]), "again-4")
	last = publish(t, e.js, eventMsg(t, evs[3]), "again-3")
	p2 := startProjector(t, e.js, store, projection.Config{})
	waitCheckpoint(t, p2, last)
	waitFor(t, 10*time.Second, "receipts of 5 events and 2 repeats", received(7))
	if s := p2.Stats(); s.Applied != 1 || s.Duplicates != 2 {
		t.Fatalf("stats %+v, want 1 applied (the late 3) and 2 duplicates", s)
	}
	mu.Lock()
	want := map[string][]events.Outcome{
		evs[1].ID: {events.OutcomeApplied}, evs[2].ID: {events.OutcomeApplied}, evs[5].ID: {events.OutcomeApplied},
		evs[3].ID: {events.OutcomeApplied, events.OutcomeDuplicate},
		evs[4].ID: {events.OutcomeApplied, events.OutcomeDuplicate},
	}
	if !reflect.DeepEqual(outcomes, want) {
		t.Errorf("receipt outcomes %v, want %v", outcomes, want)
	}
	mu.Unlock()
	for seq, ev := range evs {
		d, err := store.Get(ctx, ev.Address())
		if err != nil {
			t.Fatal(err)
		}
		if d.Version != 1 || string(d.Fields["i"]) != fmt.Sprint(seq) {
			t.Errorf("document of event %d: v%d %v, want v1", seq, d.Version, d.Fields)
		}
	}
	if hw, err = store.HighWater(ctx, "acme", "phone"); err != nil || hw.Seq != 5 || hw.Holes != nil {
		t.Fatalf("after the late 3: %+v %v, want 5 and no holes", hw, err)
	}
	if _, err := projection.Verify(ctx, e.js, store, projection.Config{}); err != nil {
		t.Fatal(err)
	}
}
