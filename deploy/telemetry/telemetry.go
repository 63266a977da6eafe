// Package telemetry wires OpenTelemetry for an ebb process: the ebb binary,
// or a program embedding a server (deploy/server). Packages take a
// trace.TracerProvider, a metric.MeterProvider and a propagator in their
// configs; only the process decides where telemetry goes.
//
// Configuration is OpenTelemetry's standard environment variables, read by
// the contrib autoexport package: OTEL_TRACES_EXPORTER (console, otlp, none)
// and OTEL_METRICS_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT and friends,
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES. With none of them set
// nothing is exported, except that the server always serves its metrics for
// Prometheus on /metrics.
//
// The traces and metrics themselves come from the packages (see the
// Observability section of README.md): producer, projection and consumer
// take a TracerProvider and a MeterProvider, the gateway a TracerProvider
// and a Propagator. deploy/server and the client commands build a Telemetry and
// hand them over; client commands call Shutdown before exiting so a console
// exporter prints their spans.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Config says what telemetry a process wants.
type Config struct {
	// ServiceName is used when OTEL_SERVICE_NAME is not set.
	ServiceName string
	// Prometheus collects metrics for MetricsHandler (the server's /metrics).
	Prometheus bool
	// Getenv reads the OTEL_* variables; nil means no variables set.
	Getenv func(string) string
}

// Telemetry owns the process's providers. Shutdown flushes them.
type Telemetry struct {
	tracer   trace.TracerProvider
	meters   metric.MeterProvider
	registry *prometheus.Registry
	stops    []func(context.Context) error
}

// New builds the providers cfg and the environment ask for.
func New(ctx context.Context, cfg Config) (*Telemetry, error) {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(),
		resource.WithAttributes(serviceName(cfg.ServiceName, getenv)))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	t := &Telemetry{tracer: noop.NewTracerProvider()}

	if v := getenv("OTEL_TRACES_EXPORTER"); v != "" && v != "none" {
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER=%s: %w", v, err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		t.tracer = tp
		t.stops = append(t.stops, tp.Shutdown)
	}

	var readers []sdkmetric.Option
	if cfg.Prometheus {
		t.registry = prometheus.NewRegistry()
		exp, err := otelprom.New(otelprom.WithRegisterer(t.registry), otelprom.WithoutScopeInfo())
		if err != nil {
			return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
		}
		readers = append(readers, sdkmetric.WithReader(exp))
	}
	if v := getenv("OTEL_METRICS_EXPORTER"); v != "" && v != "none" && v != "prometheus" {
		r, err := autoexport.NewMetricReader(ctx)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTEL_METRICS_EXPORTER=%s: %w", v, err)
		}
		readers = append(readers, sdkmetric.WithReader(r))
	}
	if len(readers) == 0 {
		t.meters = noopMeters()
	} else {
		mp := sdkmetric.NewMeterProvider(append(readers, sdkmetric.WithResource(res))...)
		t.meters = mp
		t.stops = append(t.stops, mp.Shutdown)
	}
	return t, nil
}

// TracerProvider is the provider to hand to packages' configs.
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tracer }

// MeterProvider is the provider to hand to packages' configs.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.meters }

// Propagator carries W3C trace context and baggage.
func (t *Telemetry) Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// MetricsHandler serves every metric in the Prometheus text format; 404
// when Config.Prometheus was off.
func (t *Telemetry) MetricsHandler() http.Handler {
	if t.registry == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Shutdown flushes pending spans and metrics and stops the providers. It is
// safe to call twice.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, stop := range t.stops {
		errs = append(errs, stop(ctx))
	}
	t.stops = nil
	return errors.Join(errs...)
}

// LogHandler wraps h so that records logged with a context inside a span
// carry its trace_id and span_id.
func LogHandler(h slog.Handler) slog.Handler { return traceHandler{h} }

type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
