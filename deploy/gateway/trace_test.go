package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/deploy/gateway"
	"github.com/ebbsync/ebb/events"
)

// TestPush_ContinuesClientTrace: an HTTP client's traceparent becomes the
// parent of the gateway's push span, and the event stored in EVENTS
// carries the push span's context, so the projector's apply joins the
// client's trace.
func TestPush_ContinuesClientTrace(t *testing.T) {
	s := embeddedtest.MustStart(t, embeddedtest.InProcess())
	js := embeddedtest.MustJetStream(t, embeddedtest.MustConnect(t, s))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	g, err := gateway.New(gateway.Config{JetStream: js, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)

	// The phone's own span, as its tracing library would send it.
	phoneTrace, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	phoneSpan, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ev := events.Event{Schema: 1, ID: events.NewIDSource(nil).New().String(), Tenant: "acme", Collection: "todos", Doc: "t1",
		Op: events.OpPut, HLC: events.NewClock(nil, 0).Now(), Client: "phone", Seq: 1}
	body, _ := json.Marshal([]events.Event{ev})
	req, _ := http.NewRequest("POST", srv.URL+"/v1/acme/events", bytes.NewReader(body))
	req.Header.Set("traceparent", "00-"+phoneTrace.String()+"-"+phoneSpan.String()+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("push: %d", resp.StatusCode)
	}

	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "ebb.gateway.push" {
		t.Fatalf("spans %v, want one ebb.gateway.push", spans)
	}
	push := spans[0]
	if push.SpanContext.TraceID() != phoneTrace || push.Parent.SpanID() != phoneSpan {
		t.Fatalf("push span trace %s parent %s, want the phone's %s / %s",
			push.SpanContext.TraceID(), push.Parent.SpanID(), phoneTrace, phoneSpan)
	}
	st, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	carried := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), events.HeaderCarrier(m.Header)))
	if carried.TraceID() != phoneTrace || carried.SpanID() != push.SpanContext.SpanID() {
		t.Fatalf("stored event carries %s/%s, want the push span %s/%s (headers %v)",
			carried.TraceID(), carried.SpanID(), phoneTrace, push.SpanContext.SpanID(), m.Header)
	}
}
