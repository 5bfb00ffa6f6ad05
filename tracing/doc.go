// Package tracing is choreo's OpenTelemetry layer: process set-up, trace
// context carried through Kafka record headers, the spans of the messaging
// semantic conventions, the toolkit's metrics, and trace and event ids in
// log records.
//
// # Set-up
//
// A service calls Setup once at start and the returned shutdown function on
// exit. Setup installs global tracer and meter providers (the OpenTelemetry
// SDK) with the resource attribute service.name, and the W3C tracecontext +
// baggage propagator. Exporters are chosen by the standard OTEL_* variables;
// with none of them set nothing is exported (see Setup), so a developer's
// laptop does not try to reach a collector that is not there.
//
// # Propagation
//
// The W3C traceparent, tracestate and baggage travel as record headers
// (HeaderCarrier), written by the producer and read back by the consumer, so
// a business transaction that crosses services is one trace.
//
// # Spans
//
// The spans follow the OpenTelemetry messaging conventions (v1.27 and later;
// attribute keys from semconv v1.43.0):
//
//   - send <topic> (PRODUCER): StartSend before the trace context is
//     written into the record, EndSend in the produce callback. The record
//     carries the send span's context.
//   - process <topic> (CONSUMER): StartProcess extracts the producer's
//     context from the headers and starts the span as its child, with a link
//     to it as well. EndProcess records the outcome (handled, duplicate,
//     retried, dead_lettered, skipped) and the error.
//   - retries, forwards to a retry topic and dead letters are events on the
//     process span: RecordRetry, RecordForward, RecordDeadLetter.
//
// # Logs
//
// NewLogHandler wraps a slog.Handler and adds trace_id, span_id,
// correlation_id, event_id, topic, partition and offset to every record
// logged with a context (slog.InfoContext and friends).
//
// # Metrics
//
// Metrics holds the toolkit's instruments (choreo.consumer.*,
// choreo.producer.*, choreo.dlq.*); PrometheusHandler serves them on /metrics.
//
// The names, attributes and alerts are described in docs/OBSERVABILITY.md.
package tracing
