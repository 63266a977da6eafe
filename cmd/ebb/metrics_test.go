package main

import (
	"bufio"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// scrape reads /metrics into series name{labels} -> value, labels as
// written by the exporter (sorted by name).
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// outcome is the ebb.projector.outcomes series of one policy and outcome.
func outcome(policy string, o events.Outcome) string {
	return `ebb_projector_outcomes_total{ebb_outcome="` + string(o) + `",ebb_policy="` + policy + `"}`
}

// TestMetrics_OutcomesAndLag scrapes a running server's /metrics while
// clients push: outcomes count up by policy and outcome, dead letters
// count, the apply histogram fills, and the projector's lag rises while
// its consumer is paused (an operator's `nats consumer pause`) and goes
// back to zero once it resumes.
func TestMetrics_OutcomesAndLag(t *testing.T) {
	srv := serveInProcess(t, "", "--policy", "todos=manual", "--default-policy", "lww")
	natsURL, base := srv.nats, srv.http
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	a, b := newPhone(t, base, "phone-a"), newPhone(t, base, "phone-b")

	before := scrape(t, base)
	for _, name := range []string{outcome("manual", events.OutcomeApplied), outcome("lww", events.OutcomeApplied)} {
		if before[name] != 0 {
			t.Fatalf("%s = %v before any write", name, before[name])
		}
	}

	// manual: a create (applied) and a stale edit (conflict).
	create := a.event(events.OpPut, "todos", "t1", 0, `{"title":"milk"}`)
	a.push(create)
	a.receipt(create.ID)
	stale := b.event(events.OpPatch, "todos", "t1", 0, `{"title":"soy"}`)
	b.push(stale)
	if r := b.receipt(stale.ID); r.Outcome != events.OutcomeConflict {
		t.Fatalf("stale edit under manual: %+v", r)
	}
	// lww: a create, then another event under a new id at the same client
	// sequence (a copied or restored local store): reused, not duplicate.
	note := a.event(events.OpPut, "notes", "n1", 0, `{"body":"x"}`)
	a.push(note)
	a.receipt(note.ID)
	again := note
	again.ID = a.ids.New().String()
	if st := a.push(again); st[0] != gateway.StatusAccepted {
		t.Fatalf("push of the event at a used sequence: %v", st)
	}
	if r := a.receipt(again.ID); r.Outcome != events.OutcomeReused {
		t.Fatalf("another event at a used sequence: %+v", r)
	}
	// Garbage straight into EVENTS: dead letter, outcome invalid.
	if _, err := js.Publish(t.Context(), events.EventSubject("acme", "junk-client", "todos", "junk"), []byte("not json")); err != nil {
		t.Fatal(err)
	}

	want := map[string]float64{
		outcome("manual", events.OutcomeApplied):           1,
		outcome("manual", events.OutcomeConflict):          1,
		outcome("lww", events.OutcomeApplied):              1,
		outcome("lww", events.OutcomeReused):               1,
		outcome(projectionNoPolicy, events.OutcomeInvalid): 1,
		"ebb_projector_dead_letters_total":                 1,
		"ebb_projector_lag":                                0,
	}
	var got map[string]float64
	waitFor(t, 10*time.Second, "outcome counters", func() bool {
		got = scrape(t, base)
		for k, v := range want {
			if got[k] != v {
				return false
			}
		}
		return true
	})
	if got["ebb_projector_apply_duration_seconds_count"] < 1 {
		t.Errorf("apply histogram count %v, want at least one batch", got["ebb_projector_apply_duration_seconds_count"])
	}

	// Pause the projector's consumer (an operator's `nats consumer pause`):
	// events pile up, lag rises. The pause ends by its deadline: the
	// server's unpause timer wakes the projector's waiting pull, while an
	// explicit ResumeConsumer (nats-server 2.15) leaves it waiting for its
	// next pull request, about 15 s later.
	const pause = 3 * time.Second
	if _, err := js.PauseConsumer(t.Context(), events.StreamEvents, projection.DefaultDurable, time.Now().Add(pause)); err != nil {
		t.Fatalf("pause the projector's consumer: %v", err)
	}
	const n = 5
	var ids []string
	for i := range n {
		e := a.event(events.OpPut, "notes", "p"+strconv.Itoa(i), 0, `{"body":"y"}`)
		a.push(e)
		ids = append(ids, e.ID)
	}
	waitFor(t, 10*time.Second, "lag to reach the paused events", func() bool {
		got = scrape(t, base)
		return got["ebb_projector_lag"] == n
	})
	if got[outcome("lww", events.OutcomeApplied)] != 1 {
		t.Fatalf("applied while paused: %v", got[outcome("lww", events.OutcomeApplied)])
	}
	waitFor(t, 20*time.Second, "lag back to zero", func() bool {
		got = scrape(t, base)
		return got["ebb_projector_lag"] == 0 && got[outcome("lww", events.OutcomeApplied)] == 1+n
	})
	for _, id := range ids {
		if r := a.receipt(id); r.Outcome != events.OutcomeApplied {
			t.Fatalf("event %s after resume: %+v", id, r)
		}
	}
}

// projectionNoPolicy is the policy label of a message whose collection
// could not be read.
const projectionNoPolicy = "none"
