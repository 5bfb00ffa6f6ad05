package tracing_test

import (
	"context"
	"log"
	"log/slog"
	"net/http"
	"os"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/tracing"
)

// A service sets OpenTelemetry up once, serves its metrics for Prometheus,
// and logs through the correlation handler.
func ExampleSetup() {
	ctx := context.Background()
	reader, metrics, err := tracing.PrometheusHandler()
	if err != nil {
		log.Fatal(err)
	}
	// Exporters come from OTEL_* variables; with none set nothing is
	// exported. OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 sends
	// traces to the local Jaeger.
	shutdown, err := tracing.Setup(ctx, "payment-service", tracing.WithMetricReader(reader))
	if err != nil {
		log.Fatal(err)
	}
	defer shutdown(context.Background())

	slog.SetDefault(slog.New(tracing.NewLogHandler(slog.NewJSONHandler(os.Stderr, nil))))
	http.Handle("GET /metrics", metrics)
	// … make producers and consumers, serve HTTP …
}

// What the consumer runtime does around a handler: a process span that
// continues the producer's trace, metrics, and logs that carry the ids.
func ExampleStartProcess() {
	m, err := tracing.NewMetrics(nil)
	if err != nil {
		log.Fatal(err)
	}
	handle := func(ctx context.Context, rec *kgo.Record) error {
		slog.InfoContext(ctx, "handling") // trace_id, span_id, correlation_id, event_id, topic, partition, offset
		return nil
	}

	rec := &kgo.Record{Topic: "orders", Partition: 0, Offset: 42}
	cm := m.Consumer("payment-service", rec.Topic)
	cm.InFlight(context.Background(), 1)
	ctx, span := tracing.StartProcess(context.Background(), rec, "payment-service")
	ctx = choreo.WithMetadata(ctx, choreo.Metadata{ID: "ce-id", CorrelationID: "corr-id"})
	err = handle(ctx, rec)
	outcome := tracing.OutcomeHandled
	if err != nil {
		outcome = tracing.OutcomeDeadLettered
		tracing.RecordDeadLetter(ctx, "payment-service.dlq", choreo.KindOf(err))
		cm.DeadLetter(ctx, choreo.KindOf(err))
	}
	tracing.EndProcess(span, outcome, err)
	cm.Event(ctx, outcome)
	cm.InFlight(context.Background(), -1)
}
