package producer

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/ebbsync/ebb/events"
)

// instrumentation is the scope name of the producer's tracer and meter.
const instrumentation = "github.com/ebbsync/ebb/producer"

// Span names.
const (
	spanAppend  = "ebb.producer.append"
	spanPublish = "ebb.producer.publish"
)

// Metric names (OpenTelemetry; Prometheus shows dots as underscores).
const (
	metricAppended      = "ebb.producer.events.appended"
	metricPublished     = "ebb.producer.events.published"
	metricFailed        = "ebb.producer.events.failed"
	metricRetries       = "ebb.producer.retries"
	metricPublishTime   = "ebb.producer.publish.duration"
	metricPending       = "ebb.producer.pending"
	metricOldestPending = "ebb.producer.oldest_pending.age"
)

func tracerOf(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	return tp.Tracer(instrumentation)
}

func meterOf(mp metric.MeterProvider) metric.Meter {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	return mp.Meter(instrumentation)
}

// logMetrics are the Log's instruments: appends, and the pending gauges
// observed from the log's own counters.
type logMetrics struct {
	appended metric.Int64Counter
	reg      metric.Registration // the gauges' callback; nil when none
}

func newLogMetrics(l *Log, mp metric.MeterProvider) (logMetrics, error) {
	m := meterOf(mp)
	var lm logMetrics
	var err error
	if lm.appended, err = m.Int64Counter(metricAppended, metric.WithUnit("{event}"),
		metric.WithDescription("events appended to the client's local log")); err != nil {
		return lm, err
	}
	pending, err := m.Int64ObservableGauge(metricPending, metric.WithUnit("{event}"),
		metric.WithDescription("events in the local log not yet acknowledged by JetStream"))
	if err != nil {
		return lm, err
	}
	oldest, err := m.Float64ObservableGauge(metricOldestPending, metric.WithUnit("s"),
		metric.WithDescription("age of the oldest event not yet acknowledged by JetStream; 0 when none"))
	if err != nil {
		return lm, err
	}
	lm.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		who := metric.WithAttributes(events.AttrClient.String(l.client))
		n, _ := l.counts()
		o.ObserveInt64(pending, int64(n), who)
		age := 0.0
		if _, at, err := l.oldestPending(); err == nil && !at.IsZero() {
			age = max(0, l.now().Sub(at).Seconds())
		}
		o.ObserveFloat64(oldest, age, who)
		return nil
	}, pending, oldest)
	return lm, err
}

// publisherMetrics are the Publisher's instruments.
type publisherMetrics struct {
	published metric.Int64Counter
	failed    metric.Int64Counter
	retries   metric.Int64Counter
	latency   metric.Float64Histogram
}

func newPublisherMetrics(mp metric.MeterProvider) (publisherMetrics, error) {
	m := meterOf(mp)
	var pm publisherMetrics
	var err error
	if pm.published, err = m.Int64Counter(metricPublished, metric.WithUnit("{event}"),
		metric.WithDescription("events acknowledged by JetStream (duplicate=true: JetStream had it already)")); err != nil {
		return pm, err
	}
	if pm.failed, err = m.Int64Counter(metricFailed, metric.WithUnit("{event}"),
		metric.WithDescription("events the server refused for good; they will not be retried")); err != nil {
		return pm, err
	}
	if pm.retries, err = m.Int64Counter(metricRetries, metric.WithUnit("{retry}"),
		metric.WithDescription("publish rounds interrupted by a retryable failure and retried after a backoff")); err != nil {
		return pm, err
	}
	pm.latency, err = m.Float64Histogram(metricPublishTime, metric.WithUnit("s"),
		metric.WithDescription("time from publishing an event to its JetStream acknowledgement"),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
	return pm, err
}

// eventAttrs are the attributes that name an event on a span.
func eventAttrs(e *events.Event) []attribute.KeyValue {
	return []attribute.KeyValue{
		events.AttrEvent.String(e.ID), events.AttrCollection.String(e.Collection), events.AttrDoc.String(e.Doc),
		events.AttrOp.String(string(e.Op)), events.AttrSeq.Int64(int64(e.Seq)),
	}
}

// startPublishSpan starts the span of one publish attempt of m as a child
// of the trace context m's headers carry (the Append's span, stored with
// the entry, so a publish after a restart joins the same trace) and puts
// the new span's context in the headers in its place, so whoever applies
// the event continues from the publish.
func (p *Publisher) startPublishSpan(m pendingMsg) trace.Span {
	parent := p.log.prop.Extract(context.Background(), events.HeaderCarrier(m.msg.Header))
	ctx, span := p.tracer.Start(parent, spanPublish, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(events.AttrSystem.String("nats"), events.AttrSubject.String(m.msg.Subject), events.AttrEvent.String(m.id),
			events.AttrSeq.Int64(int64(m.seq))))
	if m.msg.Header == nil {
		m.msg.Header = nats.Header{}
	}
	p.log.prop.Inject(ctx, events.HeaderCarrier(m.msg.Header))
	return span
}

// endFlight ends f's span with the fate of its publish and records the
// metrics of an acknowledgement or a refusal. err is a retryable failure
// (the flight is abandoned and will be sent again), or nil.
func (p *Publisher) endFlight(f *flight, r *result, err error) {
	ctx := context.Background()
	switch {
	case err != nil:
		if f.span != nil {
			f.span.RecordError(err)
			f.span.SetStatus(codes.Error, "retrying: "+err.Error())
		}
	case r != nil && r.ack != nil:
		p.metrics.latency.Record(ctx, time.Since(f.sent).Seconds())
		p.metrics.published.Add(ctx, 1, metric.WithAttributes(events.AttrDuplicate.Bool(r.ack.Duplicate)))
		if f.span != nil {
			f.span.SetAttributes(events.AttrStreamSeq.Int64(int64(r.ack.Sequence)), events.AttrDuplicate.Bool(r.ack.Duplicate))
		}
	case r != nil && r.err != nil:
		if f.span != nil {
			f.span.RecordError(r.err)
			f.span.SetStatus(codes.Error, "refused for good")
		}
	}
	if f.span != nil {
		f.span.End()
		f.span = nil
	}
}
