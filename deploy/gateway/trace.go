package gateway

import (
	"context"
	"net/http"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/ebbsync/ebb/events"
)

// The gateway's server spans.
const (
	spanPush  = "ebb.gateway.push"  // one HTTP push of a batch of events
	spanWrite = "ebb.gateway.write" // one PUT, PATCH or DELETE of a document
)

// propagator is Config.Propagator, or W3C trace context and baggage.
func (g *Gateway) propagator() propagation.TextMapPropagator {
	if g.cfg.Propagator != nil {
		return g.cfg.Propagator
	}
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// startPush starts the push's server span, continuing the trace of the
// request's traceparent/tracestate headers when the client sent them.
func (g *Gateway) startPush(r *http.Request) (context.Context, trace.Span) {
	return g.startSpan(r, spanPush)
}

// startSpan starts the server span name of request r, continuing the trace
// of its traceparent/tracestate headers when the client sent them.
func (g *Gateway) startSpan(r *http.Request, name string) (context.Context, trace.Span) {
	tp := g.cfg.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	parent := g.propagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	return tp.Tracer("github.com/ebbsync/ebb/deploy/gateway").Start(parent, name,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path),
			attribute.String("ebb.tenant", r.PathValue("tenant"))))
}

// endPush ends the push span with the response's status and batch size.
func endPush(span trace.Span, status, events int) {
	span.SetAttributes(attribute.Int("http.response.status_code", status), attribute.Int("ebb.events", events))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}

// injectTrace puts the trace context of ctx (the push span's) in the
// event message's headers, so the projector's apply continues the trace.
// Without tracing it carries the client's traceparent as it came.
func (g *Gateway) injectTrace(ctx context.Context, msg *nats.Msg) {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	g.propagator().Inject(ctx, events.HeaderCarrier(msg.Header))
}
