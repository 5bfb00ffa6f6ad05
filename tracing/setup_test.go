package tracing

import (
	"context"
	"slices"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// clearOTelEnv unsets the variables that choose exporters, for the test.
func clearOTelEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{
		"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER",
	} {
		t.Setenv(k, "")
	}
}

// telemetry is what one test's Setup records into.
type telemetry struct {
	spans  *tracetest.InMemoryExporter
	reader *sdkmetric.ManualReader
}

// setupTest runs Setup with an in-memory span exporter (spans are there as
// soon as they end) and a manual metric reader; shutdown runs at cleanup.
func setupTest(t *testing.T, opts ...SetupOption) telemetry {
	t.Helper()
	clearOTelEnv(t)
	tel := telemetry{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader()}
	opts = append([]SetupOption{
		WithoutEnvExporters(),
		WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(tel.spans)),
		WithMetricReader(tel.reader),
	}, opts...)
	shutdown, err := Setup(context.Background(), "test-service", opts...)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() {
		if err := shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return tel
}

// only returns the single span the exporter holds.
func (tel telemetry) only(t *testing.T) tracetest.SpanStub {
	t.Helper()
	got := tel.spans.GetSpans()
	if len(got) != 1 {
		t.Fatalf("%d spans ended; want 1: %v", len(got), spanNames(got))
	}
	return got[0]
}

func spanNames(ss tracetest.SpanStubs) []string {
	var names []string
	for _, s := range ss {
		names = append(names, s.Name)
	}
	return names
}

func TestSetupInstallsProvidersResourceAndPropagator(t *testing.T) {
	tel := setupTest(t, WithResourceAttributes(attribute.String("service.version", "1.2.3")))
	_, span := otel.Tracer("t").Start(context.Background(), "op")
	span.End()
	s := tel.only(t)
	res := attrMap(s.Resource.Attributes())
	if got := res["service.name"].AsString(); got != "test-service" {
		t.Errorf("resource service.name = %q; want test-service", got)
	}
	if got := res["service.version"].AsString(); got != "1.2.3" {
		t.Errorf("resource service.version = %q; want 1.2.3", got)
	}
	fields := otel.GetTextMapPropagator().Fields()
	for _, want := range []string{"traceparent", "tracestate", "baggage"} {
		if !slices.Contains(fields, want) {
			t.Errorf("propagator fields %v; want %s among them", fields, want)
		}
	}
}

func TestSetupServiceNameFromEnvironmentWins(t *testing.T) {
	clearOTelEnv(t)
	t.Setenv("OTEL_SERVICE_NAME", "renamed")
	exp := tracetest.NewInMemoryExporter()
	shutdown, err := Setup(context.Background(), "test-service", WithoutEnvExporters(),
		WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(exp)))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	_, span := otel.Tracer("t").Start(context.Background(), "op")
	span.End()
	if got := attrMap(exp.GetSpans()[0].Resource.Attributes())["service.name"].AsString(); got != "renamed" {
		t.Errorf("service.name = %q; want renamed (OTEL_SERVICE_NAME)", got)
	}
}

func TestSetupEnvironmentChoice(t *testing.T) {
	tests := []struct {
		env           map[string]string
		traces, metrs bool
	}{
		{env: nil, traces: false, metrs: false},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, traces: true, metrs: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, traces: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "console"}, traces: true},
		{env: map[string]string{"OTEL_METRICS_EXPORTER": "prometheus"}, metrs: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:4318/v1/metrics"}, metrs: true},
	}
	for _, tt := range tests {
		clearOTelEnv(t)
		for k, v := range tt.env {
			t.Setenv(k, v)
		}
		if got := envWantsTraces(); got != tt.traces {
			t.Errorf("%v: envWantsTraces = %v; want %v", tt.env, got, tt.traces)
		}
		if got := envWantsMetrics(); got != tt.metrs {
			t.Errorf("%v: envWantsMetrics = %v; want %v", tt.env, got, tt.metrs)
		}
	}
}

func TestSetupWithoutEnvironmentExportsNothingButMakesSpans(t *testing.T) {
	clearOTelEnv(t)
	shutdown, err := Setup(context.Background(), "quiet")
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	_, span := otel.Tracer("t").Start(context.Background(), "op")
	if !span.SpanContext().IsValid() || !span.IsRecording() {
		t.Errorf("span %v recording=%v; want a valid, recording SDK span (trace ids for logs)", span.SpanContext(), span.IsRecording())
	}
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func TestSetupErrors(t *testing.T) {
	clearOTelEnv(t)
	if _, err := Setup(context.Background(), ""); err == nil {
		t.Error("Setup with an empty service name succeeded; want an error")
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "carrier-pigeon")
	if _, err := Setup(context.Background(), "svc"); err == nil {
		t.Error("Setup with OTEL_TRACES_EXPORTER=carrier-pigeon succeeded; want an error")
	}
	clearOTelEnv(t)
	t.Setenv("OTEL_METRICS_EXPORTER", "carrier-pigeon")
	if _, err := Setup(context.Background(), "svc"); err == nil {
		t.Error("Setup with OTEL_METRICS_EXPORTER=carrier-pigeon succeeded; want an error")
	}
}

func attrMap(kvs []attribute.KeyValue) map[string]attribute.Value {
	m := make(map[string]attribute.Value, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value
	}
	return m
}
