package projection

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/events"
)

// instrumentation is the scope name of the projector's tracer and meter.
const instrumentation = "github.com/ebbsync/ebb/projection"

// Span names.
const (
	spanApply   = "ebb.projector.apply"
	spanPublish = "ebb.projector.publish"
)

// Metric names (OpenTelemetry; Prometheus shows dots as underscores).
const (
	metricOutcomes  = "ebb.projector.outcomes"
	metricDead      = "ebb.projector.dead_letters"
	metricApplyTime = "ebb.projector.apply.duration"
	metricOverAud   = "ebb.projector.over_audience"
)

// noPolicy is the policy attribute of an event whose collection is not
// known (it could not be decoded).
const noPolicy = "none"

// tracerOf returns the projector's tracer, nil without a provider: the
// hot path then skips span work altogether.
func tracerOf(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(instrumentation)
}

// projectorMetrics are the projector's instruments.
type projectorMetrics struct {
	outcomes metric.Int64Counter
	dead     metric.Int64Counter
	apply    metric.Float64Histogram
	overAud  metric.Int64Counter // Stats.OverAudience
}

func newProjectorMetrics(mp metric.MeterProvider) (projectorMetrics, error) {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter(instrumentation)
	var pm projectorMetrics
	var err error
	if pm.outcomes, err = m.Int64Counter(metricOutcomes, metric.WithUnit("{event}"),
		metric.WithDescription("events decided by the projector, by the collection's policy and the receipt's outcome (applied, merged, rejected, conflict, duplicate, invalid)")); err != nil {
		return pm, err
	}
	if pm.dead, err = m.Int64Counter(metricDead, metric.WithUnit("{message}"),
		metric.WithDescription("EVENTS messages the projector could not apply and sent to DEAD with a reason")); err != nil {
		return pm, err
	}
	if pm.overAud, err = m.Int64Counter(metricOverAud, metric.WithUnit("{message}"),
		metric.WithDescription("copies of a document's change published read by nobody because its readers under the sync rules would pass the readers bound (MaxAudienceBytes)")); err != nil {
		return pm, err
	}
	pm.apply, err = m.Float64Histogram(metricApplyTime, metric.WithUnit("s"),
		metric.WithDescription("time to apply one batch of events: decide, commit the view, publish changes and receipts, ack"),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
	return pm, err
}

// outcomeKey counts a batch's outcomes by policy.
type outcomeKey struct {
	policy  string
	outcome events.Outcome
}

// decided is what the applier learned about the message it is applying,
// for its span and the outcome counter.
type decided struct {
	event      *events.Event // nil when the payload did not decode
	outcome    events.Outcome
	version    uint64
	collection string
}

// note records the outcome of the message being applied.
func (a *applier) note(ev *events.Event, outcome events.Outcome, version uint64) {
	a.cur.outcome, a.cur.version = outcome, version
	if ev != nil {
		a.cur.event, a.cur.collection = ev, ev.Collection
	}
}

// traced applies m inside an ebb.projector.apply span, a child of the trace
// context in m's headers (the producer's publish), and counts its outcome.
// The span stays open until the batch is committed and published (see
// finishSpans), and its context is what the change and receipt carry.
// Without a tracer it only counts.
func (a *applier) traced(ctx context.Context, m rawMsg) error {
	var span trace.Span
	if a.tracer != nil {
		parent := a.prop.Extract(ctx, events.HeaderCarrier(m.Header))
		a.spanCtx, span = a.tracer.Start(parent, spanApply, trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(events.AttrSystem.String("nats"), events.AttrSubject.String(m.Subject), events.AttrStreamSeq.Int64(int64(m.Seq))))
	}
	a.cur = decided{}
	err := a.apply(ctx, m)
	a.spanCtx = nil
	policy := noPolicy
	if a.cur.collection != "" {
		policy = string(policyName(a.policies.For(a.cur.collection)))
	}
	if a.cur.outcome != "" {
		if a.outcomes == nil {
			a.outcomes = make(map[outcomeKey]int)
		}
		a.outcomes[outcomeKey{policy, a.cur.outcome}]++
	}
	if span == nil {
		return err
	}
	if ev := a.cur.event; ev != nil {
		span.SetAttributes(events.AttrEvent.String(ev.ID), events.AttrCollection.String(ev.Collection), events.AttrDoc.String(ev.Doc),
			events.AttrOp.String(string(ev.Op)))
	}
	span.SetAttributes(events.AttrPolicy.String(policy), events.AttrOutcome.String(string(a.cur.outcome)))
	if a.cur.version > 0 {
		span.SetAttributes(events.AttrVersion.Int64(int64(a.cur.version)))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "apply failed")
	}
	a.spans = append(a.spans, span)
	return err
}

// traceCtx is the context to log with and to carry onto what the current
// message causes: the apply span's, or ctx outside one.
func (a *applier) traceCtx(ctx context.Context) context.Context {
	if a.spanCtx != nil {
		return a.spanCtx
	}
	return ctx
}

// finishSpans ends the batch's apply spans, marking them failed with err
// when the batch did not commit.
func (a *applier) finishSpans(err error) {
	for _, s := range a.spans {
		endApplySpan(s, err)
	}
	a.spans = a.spans[:0]
}

// takeSpans hands the batch's apply spans to the caller, which ends them
// (endApplySpan) once the batch is published.
func (a *applier) takeSpans() []trace.Span {
	spans := a.spans
	a.spans = nil
	return spans
}

// endApplySpan ends an apply span, failed with err if set.
func endApplySpan(s trace.Span, err error) {
	if err != nil {
		s.RecordError(err)
		s.SetStatus(codes.Error, "batch not published")
	}
	s.End()
}

// recordBatch adds a published batch to the metrics.
func (p *Projector) recordBatch(ctx context.Context, fl *flight, took time.Duration) {
	for k, n := range fl.outcomes {
		p.metrics.outcomes.Add(ctx, int64(n), metric.WithAttributes(events.AttrPolicy.String(k.policy), events.AttrOutcome.String(string(k.outcome))))
	}
	if d := fl.stats.dead; d > 0 {
		p.metrics.dead.Add(ctx, int64(d))
	}
	p.metrics.apply.Record(ctx, took.Seconds())
}

// startPublishSpan starts the span of publishing one outbox entry, as a
// child of the apply span whose context the entry's headers carry, and puts
// its own context in m's headers. Entries without trace context (dead
// letters) get no span: it returns nil.
func (p *Projector) startPublishSpan(e OutboxEntry, m *nats.Msg) trace.Span {
	if len(e.Header) == 0 || p.tracer == nil {
		return nil
	}
	parent := p.cfg.Propagator.Extract(context.Background(), events.HeaderCarrier(m.Header))
	if !trace.SpanContextFromContext(parent).IsValid() {
		return nil
	}
	ctx, span := p.tracer.Start(parent, spanPublish, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(events.AttrSystem.String("nats"), events.AttrSubject.String(e.Subject), events.AttrMsgID.String(e.MsgID)))
	p.cfg.Propagator.Inject(ctx, events.HeaderCarrier(m.Header))
	return span
}

// endPublishSpans ends spans (nil entries skipped), failed with err if set.
func endPublishSpans(spans []trace.Span, err error) {
	for _, s := range spans {
		if s == nil {
			continue
		}
		if err != nil {
			s.RecordError(err)
			s.SetStatus(codes.Error, "publish failed")
		}
		s.End()
	}
}
