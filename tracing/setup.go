package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// SetupOption configures Setup.
type SetupOption func(*setupConfig)

type setupConfig struct {
	exporters  []sdktrace.SpanExporter
	processors []sdktrace.SpanProcessor
	readers    []sdkmetric.Reader
	attrs      []attribute.KeyValue
	sampler    sdktrace.Sampler
	noEnv      bool
}

// WithSpanExporter adds an exporter that gets every finished span in
// batches, besides any chosen by the environment.
func WithSpanExporter(exp sdktrace.SpanExporter) SetupOption {
	return func(c *setupConfig) { c.exporters = append(c.exporters, exp) }
}

// WithSpanProcessor adds a span processor. Tests use it with
// sdktrace.NewSimpleSpanProcessor and a tracetest.InMemoryExporter, so that
// spans are there as soon as they end.
func WithSpanProcessor(sp sdktrace.SpanProcessor) SetupOption {
	return func(c *setupConfig) { c.processors = append(c.processors, sp) }
}

// WithMetricReader adds a metric reader, besides any chosen by the
// environment: the reader from PrometheusHandler, or an
// sdkmetric.ManualReader in tests.
func WithMetricReader(r sdkmetric.Reader) SetupOption {
	return func(c *setupConfig) { c.readers = append(c.readers, r) }
}

// WithResourceAttributes adds attributes to the resource that describes the
// service (service.version, deployment.environment.name …).
func WithResourceAttributes(attrs ...attribute.KeyValue) SetupOption {
	return func(c *setupConfig) { c.attrs = append(c.attrs, attrs...) }
}

// WithSampler sets the sampler. The default is the SDK's: parent based,
// always on, or what OTEL_TRACES_SAMPLER says.
func WithSampler(s sdktrace.Sampler) SetupOption {
	return func(c *setupConfig) { c.sampler = s }
}

// WithoutEnvExporters ignores the OTEL_*_EXPORTER and OTLP endpoint
// variables: only the exporters and readers given as options are used.
// Tests use it so that a developer's environment does not reach them.
func WithoutEnvExporters() SetupOption {
	return func(c *setupConfig) { c.noEnv = true }
}

// Setup prepares OpenTelemetry for a service: it installs, as the globals
// of the process, an SDK tracer provider and an SDK meter provider whose
// resource has service.name = serviceName (OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES override it), and the W3C tracecontext + baggage
// propagator. Call it once at start, before making producers and consumers,
// and call shutdown on exit: it flushes what is buffered and stops the
// exporters, and returns their errors.
//
// # Exporters
//
// Exporters are chosen by the standard environment variables, through
// go.opentelemetry.io/contrib/exporters/autoexport:
//
//   - OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER: otlp, console, none,
//     and for metrics prometheus (a server of its own on
//     OTEL_EXPORTER_PROMETHEUS_HOST:PORT, localhost:9464 by default).
//   - OTEL_EXPORTER_OTLP_ENDPOINT (or the _TRACES_ / _METRICS_ variants) and
//     OTEL_EXPORTER_OTLP_PROTOCOL (http/protobuf by default, or grpc).
//
// Unlike autoexport itself, an unset OTEL_TRACES_EXPORTER does not mean
// OTLP unless an OTLP endpoint is set: with neither, nothing is exported (a
// laptop without a collector gets no export errors). Spans are still made,
// so logs carry trace ids. The same holds for metrics. To send traces to the
// local Jaeger (deploy/local/jaeger.sh):
//
//	OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318
//
// Exporters and readers given as options (WithSpanExporter,
// WithSpanProcessor, WithMetricReader) are used besides the environment's;
// WithoutEnvExporters leaves the environment's out.
//
// Setup replaces the globals each time it is called; tests that call it
// must not run in parallel with each other.
func Setup(ctx context.Context, serviceName string, opts ...SetupOption) (shutdown func(context.Context) error, err error) {
	var cfg setupConfig
	for _, o := range opts {
		o(&cfg)
	}
	if serviceName == "" {
		return nil, errors.New("tracing: empty service name")
	}

	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(serviceName)),
		resource.WithAttributes(cfg.attrs...),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithFromEnv(), // last: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	// A partial resource (a detector failed) is still worth using.

	var closers []func(context.Context) error
	fail := func(err error) (func(context.Context) error, error) {
		for _, c := range closers {
			_ = c(ctx)
		}
		return nil, err
	}

	exporters := cfg.exporters
	readers := cfg.readers
	if !cfg.noEnv {
		if envWantsTraces() {
			exp, err := autoexport.NewSpanExporter(ctx)
			if err != nil {
				return fail(fmt.Errorf("tracing: span exporter from environment: %w", err))
			}
			if !autoexport.IsNoneSpanExporter(exp) {
				exporters = append(exporters, exp)
				closers = append(closers, exp.Shutdown)
			}
		}
		if envWantsMetrics() {
			r, err := autoexport.NewMetricReader(ctx)
			if err != nil {
				return fail(fmt.Errorf("tracing: metric reader from environment: %w", err))
			}
			if autoexport.IsNoneMetricReader(r) {
				_ = r.Shutdown(ctx)
			} else {
				readers = append(readers, r)
				closers = append(closers, r.Shutdown)
			}
		}
	}

	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if cfg.sampler != nil {
		topts = append(topts, sdktrace.WithSampler(cfg.sampler))
	}
	for _, exp := range exporters {
		topts = append(topts, sdktrace.WithBatcher(exp))
	}
	for _, sp := range cfg.processors {
		topts = append(topts, sdktrace.WithSpanProcessor(sp))
	}
	tp := sdktrace.NewTracerProvider(topts...)

	mopts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	for _, r := range readers {
		mopts = append(mopts, sdkmetric.WithReader(r))
	}
	mp := sdkmetric.NewMeterProvider(mopts...)

	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	return func(ctx context.Context) error {
		// The meter provider shuts its readers down, the tracer provider
		// its processors and their exporters.
		return errors.Join(tp.Shutdown(ctx), mp.Shutdown(ctx))
	}, nil
}

// envWantsTraces reports whether the environment asks for a span exporter.
func envWantsTraces() bool {
	return os.Getenv("OTEL_TRACES_EXPORTER") != "" ||
		os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" ||
		os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// envWantsMetrics reports whether the environment asks for a metric reader.
func envWantsMetrics() bool {
	return os.Getenv("OTEL_METRICS_EXPORTER") != "" ||
		os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" ||
		os.Getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != ""
}
