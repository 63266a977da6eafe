package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

func TestNew_NoExporterByDefault(t *testing.T) {
	tel, err := New(context.Background(), Config{Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	if _, ok := tel.TracerProvider().(noop.TracerProvider); !ok {
		t.Fatalf("tracer provider %T, want noop without OTEL_TRACES_EXPORTER", tel.TracerProvider())
	}
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Fatalf("metrics without Prometheus: %d, want 404", rec.Code)
	}
}

func TestNew_ConsoleTracesAndPrometheus(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "console") // autoexport reads the process environment
	tel, err := New(context.Background(), Config{Prometheus: true, Getenv: env(map[string]string{"OTEL_TRACES_EXPORTER": "console"})})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	if _, ok := tel.TracerProvider().(*sdktrace.TracerProvider); !ok {
		t.Fatalf("tracer provider %T, want the SDK's with console", tel.TracerProvider())
	}
	c, _ := tel.MeterProvider().Meter("test").Int64Counter("ebb.test.count")
	c.Add(context.Background(), 3)
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if !strings.Contains(string(body), "ebb_test_count_total 3") {
		t.Fatalf("metrics:\n%s", body)
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

func TestLogHandler_AddsTraceIDInsideSpan(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("component", "x")
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "op")
	log.InfoContext(ctx, "inside")
	span.End()
	log.InfoContext(context.Background(), "outside")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var in, out map[string]any
	json.Unmarshal([]byte(lines[0]), &in)
	json.Unmarshal([]byte(lines[1]), &out)
	if in["trace_id"] != span.SpanContext().TraceID().String() || in["component"] != "x" {
		t.Fatalf("inside a span: %v", in)
	}
	if _, ok := out["trace_id"]; ok {
		t.Fatalf("outside a span: %v", out)
	}
}
