package consumer

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// attrOf returns the value of attribute key on span s, "" if absent.
func attrOf(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// oneSpan returns the only span named name that match holds for.
func oneSpan(t *testing.T, spans tracetest.SpanStubs, name string, match func(tracetest.SpanStub) bool) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name && (match == nil || match(s)) {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name+"("+attrOf(s, "ebb.client")+attrOf(s, "messaging.destination.name")+")")
		}
		t.Fatalf("%d spans %s, want 1; all spans: %s", len(found), name, strings.Join(names, ", "))
	}
	return found[0]
}

// wantAttrs fails unless span s has every attribute of want.
func wantAttrs(t *testing.T, s tracetest.SpanStub, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := attrOf(s, k); got != v {
			t.Errorf("span %s: attribute %s = %q, want %q", s.Name, k, got, v)
		}
	}
}

// TestTrace_OneTraceFromWriteToEveryReplica follows one write: client A
// appends it offline and restarts (the trace context must survive in the
// log), then publishes; the projector applies it and publishes the change;
// A and B apply the change. Every span must share the append's trace id,
// each step a child of the one before, with the attributes an operator
// searches by.
func TestTrace_OneTraceFromWriteToEveryReplica(t *testing.T) {
	_, nc, js := mustServer(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))

	store, err := projection.OpenBolt(filepath.Join(t.TempDir(), "view.db"), projection.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	proj, err := projection.New(js, store, projection.Config{TracerProvider: tp, MeterProvider: mp,
		Policies: projection.Policies{Default: projection.Merge}})
	if err != nil {
		t.Fatal(err)
	}
	if err := proj.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proj.Close() })

	// A writes offline, then the app restarts: the publish happens in a
	// process that never saw the append's span.
	dirA := t.TempDir()
	a, err := OpenReplica(t.Context(), ReplicaConfig{Dir: dirA, Tenant: "t1", Client: "alice", TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(t.Context(), "todos", "t1", events.Fields{"title": json.RawMessage(`"milk"`)}); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a, err = OpenReplica(t.Context(), ReplicaConfig{Dir: dirA, Tenant: "t1", Client: "alice", Conn: nc, TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	b, err := OpenReplica(t.Context(), ReplicaConfig{Dir: t.TempDir(), Tenant: "t1", Client: "bob", Conn: nc, TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := a.Sync(ctx); err != nil {
		t.Fatalf("a sync: %v", err)
	}
	if _, err := b.Sync(ctx); err != nil {
		t.Fatalf("b sync: %v", err)
	}
	// B's apply span ends after its commit, A's likewise: wait for both.
	waitFor(t, 10*time.Second, "both replicas' apply spans", func() bool {
		n := 0
		for _, s := range exp.GetSpans() {
			if s.Name == "ebb.replica.apply" {
				n++
			}
		}
		return n == 2
	})
	spans := exp.GetSpans()

	appendSpan := oneSpan(t, spans, "ebb.producer.append", nil)
	eventID := attrOf(appendSpan, "ebb.event.id")
	wantAttrs(t, appendSpan, map[string]string{"ebb.collection": "todos", "ebb.doc": "t1", "ebb.op": "put"})
	if eventID == "" {
		t.Fatal("append span without ebb.event.id")
	}
	publish := oneSpan(t, spans, "ebb.producer.publish", nil)
	wantAttrs(t, publish, map[string]string{"ebb.event.id": eventID,
		"messaging.destination.name": events.EventSubject("t1", "alice", "todos", "t1"), "ebb.stream.sequence": "1"})
	apply := oneSpan(t, spans, "ebb.projector.apply", nil)
	wantAttrs(t, apply, map[string]string{"ebb.event.id": eventID, "ebb.policy": "merge", "ebb.outcome": "applied",
		"ebb.stream.sequence": "1", "ebb.version": "1"})
	isChange := func(s tracetest.SpanStub) bool {
		return strings.HasPrefix(attrOf(s, "messaging.destination.name"), events.ChangesPrefix+".")
	}
	isReceipt := func(s tracetest.SpanStub) bool {
		return strings.HasPrefix(attrOf(s, "messaging.destination.name"), events.ReceiptsPrefix+".")
	}
	chgPub := oneSpan(t, spans, "ebb.projector.publish", isChange)
	rcptPub := oneSpan(t, spans, "ebb.projector.publish", isReceipt)
	byClient := func(c string) func(tracetest.SpanStub) bool {
		return func(s tracetest.SpanStub) bool { return attrOf(s, "ebb.client") == c }
	}
	applyA := oneSpan(t, spans, "ebb.replica.apply", byClient("alice"))
	applyB := oneSpan(t, spans, "ebb.replica.apply", byClient("bob"))
	wantAttrs(t, applyB, map[string]string{"ebb.event.id": eventID, "ebb.collection": "todos", "ebb.doc": "t1", "ebb.version": "1"})

	traceID := appendSpan.SpanContext.TraceID()
	chain := []struct {
		span   tracetest.SpanStub
		parent tracetest.SpanStub
		kind   trace.SpanKind
	}{
		{publish, appendSpan, trace.SpanKindProducer},
		{apply, publish, trace.SpanKindConsumer},
		{chgPub, apply, trace.SpanKindProducer},
		{rcptPub, apply, trace.SpanKindProducer},
		{applyA, chgPub, trace.SpanKindConsumer},
		{applyB, chgPub, trace.SpanKindConsumer},
	}
	for _, c := range chain {
		if got := c.span.SpanContext.TraceID(); got != traceID {
			t.Errorf("span %s: trace id %s, want the append's %s", c.span.Name, got, traceID)
		}
		if got, want := c.span.Parent.SpanID(), c.parent.SpanContext.SpanID(); got != want {
			t.Errorf("span %s: parent %s, want %s (%s)", c.span.Name, got, want, c.parent.Name)
		}
		if c.span.SpanKind != c.kind {
			t.Errorf("span %s: kind %s, want %s", c.span.Name, c.span.SpanKind, c.kind)
		}
	}
	for _, s := range spans {
		if s.SpanContext.TraceID() != traceID {
			t.Errorf("span %s is in another trace (%s)", s.Name, s.SpanContext.TraceID())
		}
	}

	// The same run moved the metrics.
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	sums := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					key := m.Name
					if v, ok := p.Attributes.Value(attribute.Key("ebb.outcome")); ok {
						pol, _ := p.Attributes.Value(attribute.Key("ebb.policy"))
						key += "{" + pol.AsString() + "," + v.AsString() + "}"
					}
					sums[key] += p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					sums[m.Name] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					sums[m.Name] += int64(p.Count)
				}
			}
		}
	}
	for name, want := range map[string]int64{
		"ebb.producer.events.appended":           1,
		"ebb.producer.events.published":          1,
		"ebb.producer.publish.duration":          1,
		"ebb.producer.pending":                   0,
		"ebb.projector.outcomes{merge,applied}":  1,
		"ebb.replica.changes.pending":            0,
		"ebb.replica.changes.applied":            2, // one change each for A and B
		"ebb.replica.changes.sequence":           2, // both at CHANGES sequence 1
		"ebb.projector.apply.duration":           1,
		"ebb.producer.retries":                   0,
		"ebb.producer.events.failed":             0,
		"ebb.projector.dead_letters":             0,
		"ebb.producer.oldest_pending.age":        0,
		"ebb.projector.outcomes{merge,rejected}": 0,
	} {
		if got := sums[name]; got != want {
			t.Errorf("metric %s = %d, want %d (all: %v)", name, got, want, sums)
		}
	}
}
