package consumer

import (
	"time"

	"context"
	"sync"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// instrumentation is the scope name of the replica's tracer and meter.
const instrumentation = "github.com/ebbsync/ebb/consumer"

// spanApply is the span of a replica applying one change.
const spanApply = "ebb.replica.apply"

// Metric names (OpenTelemetry; Prometheus shows dots as underscores).
const (
	metricChangesApplied = "ebb.replica.changes.applied"
	metricChangesPending = "ebb.replica.changes.pending"
	metricChangesSeq     = "ebb.replica.changes.sequence"
)

// replicaTelemetry traces the replica's applies of changes and observes its
// catch-up progress. The CHANGES follower is its only writer of spans.
type replicaTelemetry struct {
	tracer  trace.Tracer
	prop    propagation.TextMapPropagator
	enabled bool // a TracerProvider was given: trace applies
	reg     metric.Registration

	mu    sync.Mutex
	spans []trace.Span // applies of the current batch, ended by endApplies
	once  sync.Once
}

func newReplicaTelemetry(r *Replica, cfg ReplicaConfig) (*replicaTelemetry, error) {
	tp := cfg.TracerProvider
	t := &replicaTelemetry{enabled: tp != nil, prop: propagation.TraceContext{}}
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	t.tracer = tp.Tracer(instrumentation)
	mp := cfg.MeterProvider
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter(instrumentation)
	applied, err := m.Int64ObservableGauge(metricChangesApplied, metric.WithUnit("{change}"),
		metric.WithDescription("CHANGES messages the replica has applied since it was last attached (catch-up progress)"))
	if err != nil {
		return nil, err
	}
	pending, err := m.Int64ObservableGauge(metricChangesPending, metric.WithUnit("{change}"),
		metric.WithDescription("CHANGES messages in the replica's scope still to apply; 0 once caught up"))
	if err != nil {
		return nil, err
	}
	seq, err := m.Int64ObservableGauge(metricChangesSeq, metric.WithDescription("CHANGES sequence the replica's view has reached"))
	if err != nil {
		return nil, err
	}
	t.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		r.mu.Lock()
		p := r.changesP
		r.mu.Unlock()
		who := metric.WithAttributes(events.AttrClient.String(r.client))
		o.ObserveInt64(applied, int64(p.Applied), who)
		o.ObserveInt64(pending, int64(p.Pending), who)
		o.ObserveInt64(seq, int64(p.Seq), who)
		return nil
	}, applied, pending, seq)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// publisherConfig is ReplicaConfig.Publisher with the replica's providers
// where it names none.
func (r *Replica) publisherConfig() producer.PublisherConfig {
	pc := r.cfg.Publisher
	if pc.TracerProvider == nil {
		pc.TracerProvider = r.cfg.TracerProvider
	}
	if pc.MeterProvider == nil {
		pc.MeterProvider = r.cfg.MeterProvider
	}
	return pc
}

// changeApplied starts the span of applying the change at seq with
// headers h, as a child of the trace context h carries (the projector's
// publish of the change), at start (when its batch's transaction began).
// It is ended by endApplies once the batch's transaction is over. Changes
// without trace context get no span.
func (t *replicaTelemetry) changeApplied(h nats.Header, ch *changeHead, seq uint64, client string, start time.Time) {
	if t == nil || !t.enabled || len(h) == 0 {
		return
	}
	parent := t.prop.Extract(context.Background(), events.HeaderCarrier(h))
	if !trace.SpanContextFromContext(parent).IsValid() {
		return
	}
	_, span := t.tracer.Start(parent, spanApply, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(start),
		trace.WithAttributes(events.AttrSystem.String("nats"), events.AttrSubject.String(events.ChangeSubject(ch.Tenant, ch.Collection, ch.Doc)),
			events.AttrCollection.String(ch.Collection), events.AttrDoc.String(ch.Doc), events.AttrVersion.Int64(int64(ch.Version)),
			events.AttrEvent.String(ch.Event), events.AttrStreamSeq.Int64(int64(seq)), events.AttrClient.String(client)))
	t.mu.Lock()
	t.spans = append(t.spans, span)
	t.mu.Unlock()
}

// endApplies ends the spans of the batch, failed with err when its
// transaction did not commit.
func (t *replicaTelemetry) endApplies(err error) {
	if t == nil {
		return
	}
	t.mu.Lock()
	spans := t.spans
	t.spans = nil
	t.mu.Unlock()
	for _, s := range spans {
		if err != nil {
			s.RecordError(err)
			s.SetStatus(codes.Error, "view commit failed")
		}
		s.End()
	}
}

// close stops observing the replica's gauges. Safe to call twice.
func (t *replicaTelemetry) close() {
	if t == nil {
		return
	}
	t.once.Do(func() { _ = t.reg.Unregister() })
}
