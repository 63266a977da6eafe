package telemetry

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// serviceName is OTEL_SERVICE_NAME, or def when it is not set. (The
// resource's environment detector also reads it; this only supplies the
// default, which must not override it.)
func serviceName(def string, getenv func(string) string) attribute.KeyValue {
	if v := getenv("OTEL_SERVICE_NAME"); v != "" {
		def = v
	}
	if def == "" {
		def = "ebb"
	}
	return attribute.String("service.name", def)
}

func noopMeters() metric.MeterProvider { return metricnoop.NewMeterProvider() }
