// Package telemetry wires OpenTelemetry for the ebb binary: a meter provider
// whose instruments are exported for Prometheus on the server's /metrics.
// Packages take a metric.MeterProvider in their configs; only the binary
// decides where telemetry goes.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Telemetry owns the process's meter provider and its Prometheus registry.
type Telemetry struct {
	meters   *sdkmetric.MeterProvider
	registry *prometheus.Registry
}

// New returns telemetry whose metrics are served by MetricsHandler.
func New() (*Telemetry, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	return &Telemetry{meters: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)), registry: reg}, nil
}

// MeterProvider is the provider to hand to packages' configs.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.meters }

// MetricsHandler serves every metric in the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Shutdown flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return errors.Join(t.meters.Shutdown(ctx))
}
