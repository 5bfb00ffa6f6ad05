package tracing

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/choreokit/choreo"
)

// ScopeName is the instrumentation scope of choreo's spans and metrics.
const ScopeName = "github.com/choreokit/choreo"

// BaggageCorrelationID is the baggage member StartProcess sets to the
// record's correlation id (ce_correlationid), so that it travels on to
// every event the handler publishes and to any service the handler calls.
const BaggageCorrelationID = "correlation_id"

// Attribute keys choreo adds to the messaging conventions.
const (
	// AttrOutcome is what became of a processed record: an Outcome.
	AttrOutcome = attribute.Key("choreo.outcome")
	// AttrErrorKind is the choreo.ErrorKind of a failure (choreo.KindOf).
	AttrErrorKind = attribute.Key("choreo.error.kind")
	// AttrAttempt is the delivery attempt a retry event or forward is about.
	AttrAttempt = attribute.Key("choreo.attempt")
	// AttrCircuitState is the state a circuit breaker moved to (closed,
	// half-open, open); AttrCircuitFrom the state it left.
	AttrCircuitState = attribute.Key("choreo.circuit.state")
	AttrCircuitFrom  = attribute.Key("choreo.circuit.from")
)

// Span event names recorded on a process span.
const (
	EventRetry      = "choreo.retry"       // RecordRetry: the handler failed and will be retried in place
	EventForward    = "choreo.forward"     // RecordForward: the record was forwarded to a retry topic
	EventDeadLetter = "choreo.dead_letter" // RecordDeadLetter: the record was written to a dead-letter topic
	EventCircuit    = "choreo.circuit"     // RecordCircuit: the route's circuit breaker changed state around this record
)

// Outcome is what the consumer did with a record in the end. It is the
// choreo.outcome attribute of the process span and the outcome attribute of
// the choreo.consumer.events metric. A record consumed from a topic gets one
// outcome, once: attempts that failed and were retried in place before the
// outcome are span events (RecordRetry), not outcomes.
type Outcome string

// The outcomes of processing one record.
const (
	OutcomeHandled      Outcome = "handled"       // the handler succeeded (perhaps after in-place retries)
	OutcomeDuplicate    Outcome = "duplicate"     // already processed: skipped without running the handler
	OutcomeRetried      Outcome = "retried"       // the handler failed; the record was forwarded to a retry topic
	OutcomeDeadLettered Outcome = "dead_lettered" // written to the dead-letter topic
	OutcomeSkipped      Outcome = "skipped"       // no handler for its type, and the consumer skips such records
)

var (
	attrSystem   = semconv.MessagingSystemKafka
	attrOpSend   = semconv.MessagingOperationNameKey.String("send")
	attrTypeSend = semconv.MessagingOperationTypeSend
	attrOpProc   = semconv.MessagingOperationNameKey.String("process")
	attrTypeProc = semconv.MessagingOperationTypeProcess

	sendKind    = trace.WithSpanKind(trace.SpanKindProducer)
	processKind = trace.WithSpanKind(trace.SpanKindConsumer)
)

type tracerEntry struct {
	tp trace.TracerProvider
	tr trace.Tracer
}

var tracerCache atomic.Pointer[tracerEntry]

// tracer returns choreo's tracer from the current global provider. The SDK
// provider takes a mutex in Tracer, so the tracer is cached for as long as
// the global provider stays the same; Setup replacing it is noticed.
func tracer() trace.Tracer {
	tp := otel.GetTracerProvider()
	if e := tracerCache.Load(); e != nil && sameProvider(e.tp, tp) {
		return e.tr
	}
	tr := tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL))
	tracerCache.Store(&tracerEntry{tp, tr})
	return tr
}

// sameProvider compares two providers without panicking on dynamic types
// that are not comparable (those are never cached).
func sameProvider(a, b trace.TracerProvider) bool {
	ta := reflect.TypeOf(a)
	return ta == reflect.TypeOf(b) && ta.Comparable() && a == b
}

// Inject writes the trace context and baggage of ctx into rec's headers
// with the global propagator, replacing any there.
func Inject(ctx context.Context, rec *kgo.Record) {
	otel.GetTextMapPropagator().Inject(ctx, HeaderCarrier{Record: rec})
}

// Extract returns ctx with the trace context and baggage that rec's headers
// carry, read with the global propagator. The span context in the result is
// remote; ctx's own span stays when the headers carry none.
func Extract(ctx context.Context, rec *kgo.Record) context.Context {
	return otel.GetTextMapPropagator().Extract(ctx, HeaderCarrier{Record: rec})
}

// header returns the value of the last header named key, or "".
func header(rec *kgo.Record, key string) string {
	for i := len(rec.Headers) - 1; i >= 0; i-- {
		if rec.Headers[i].Key == key {
			return string(rec.Headers[i].Value)
		}
	}
	return ""
}

// messageAttrs appends the attributes a record has before it is sent.
func messageAttrs(attrs []attribute.KeyValue, rec *kgo.Record) []attribute.KeyValue {
	attrs = append(attrs, semconv.MessagingDestinationName(rec.Topic))
	if len(rec.Key) > 0 && utf8.Valid(rec.Key) {
		attrs = append(attrs, semconv.MessagingKafkaMessageKey(string(rec.Key)))
	}
	if id := header(rec, choreo.HeaderID); id != "" {
		attrs = append(attrs, semconv.MessagingMessageID(id))
	}
	if cid := header(rec, choreo.HeaderCorrelationID); cid != "" {
		attrs = append(attrs, semconv.MessagingMessageConversationID(cid))
	}
	return attrs
}

func spanName(op, topic string) string {
	if topic == "" {
		return op
	}
	k := [2]string{op, topic}
	spanNameCacheMu.RLock()
	n, ok := spanNameCache[k]
	spanNameCacheMu.RUnlock()
	if ok {
		return n
	}
	n = op + " " + topic
	spanNameCacheMu.Lock()
	if len(spanNameCache) < maxSpanNames { // topics are few; stop caching if not
		spanNameCache[k] = n
	}
	spanNameCacheMu.Unlock()
	return n
}

// spanNameCache caches span names by operation and topic: one string per
// topic instead of one per record.
var (
	spanNameCacheMu sync.RWMutex
	spanNameCache   = map[[2]string]string{}
)

const maxSpanNames = 4096

// StartSend starts the span of sending rec: "send <topic>", kind PRODUCER,
// with messaging.system=kafka, messaging.operation.name and .type "send",
// messaging.destination.name, and, when the record has them,
// messaging.kafka.message.key (a UTF-8 key only), messaging.message.id (ce_id) and
// messaging.message.conversation_id (ce_correlationid). Call it once the
// headers are set, then write the trace context of the returned context into
// the record (Inject), so that the consumer's process span is a child of
// this send span. End the span with EndSend when the broker has answered.
func StartSend(ctx context.Context, rec *kgo.Record) (context.Context, trace.Span) {
	ctx, span := tracer().Start(ctx, spanName("send", rec.Topic), sendKind)
	if span.IsRecording() { // attributes cost: build them only for a span that keeps them
		var buf [8]attribute.KeyValue
		span.SetAttributes(messageAttrs(append(buf[:0], attrSystem, attrOpSend, attrTypeSend), rec)...)
	}
	return ctx, span
}

// EndSend ends a span from StartSend with the broker's answer for rec: on
// success it adds messaging.destination.partition.id and
// messaging.kafka.offset; on failure it records err, error.type and an
// error status.
func EndSend(span trace.Span, rec *kgo.Record, err error) {
	if err != nil {
		recordError(span, err)
	} else if rec != nil && span.IsRecording() {
		span.SetAttributes(
			semconv.MessagingDestinationPartitionID(strconv.FormatInt(int64(rec.Partition), 10)),
			semconv.MessagingKafkaOffset(int(rec.Offset)),
		)
	}
	span.End()
}

// StartProcess starts the span of processing rec, consumed by group, and
// returns it in a context for the handler.
//
// The producer's trace context is extracted from rec's headers with the
// global propagator. The span, "process <topic>" of kind CONSUMER, is a child
// of that context and also has a link to it, so the services a transaction
// crosses form one trace and tools that follow links find the producer too.
// Without trace context in the headers the span is a child of the span in
// ctx, if any. Its attributes are those of StartSend with
// messaging.operation.name and .type "process", plus
// messaging.consumer.group.name, messaging.destination.partition.id and
// messaging.kafka.offset.
//
// The returned context also carries the baggage from the headers, with the
// member correlation_id set to the record's ce_correlationid when it has
// one, and the record's topic, partition and offset for logs
// (ContextWithRecord). End the span with EndProcess.
func StartProcess(ctx context.Context, rec *kgo.Record, group string) (context.Context, trace.Span) {
	prop := otel.GetTextMapPropagator()
	ctx = prop.Extract(ctx, HeaderCarrier{Record: rec})
	if propagatesBaggage(prop) {
		if cid := header(rec, choreo.HeaderCorrelationID); cid != "" {
			ctx = withCorrelationBaggage(ctx, cid)
		}
	}
	if p, ok := choreo.RecordFrom(ctx); !ok || p != (Position{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset}) {
		ctx = ContextWithRecord(ctx, rec) // a choreo.Handling of rec carries it already
	}

	opts := []trace.SpanStartOption{processKind}
	if remote := trace.SpanContextFromContext(ctx); remote.IsValid() && remote.IsRemote() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: remote}))
	}
	ctx, span := tracer().Start(ctx, spanName("process", rec.Topic), opts...)
	if span.IsRecording() { // attributes cost: build them only for a span that keeps them
		var buf [12]attribute.KeyValue
		attrs := append(buf[:0], attrSystem, attrOpProc, attrTypeProc)
		attrs = messageAttrs(attrs, rec)
		if group != "" {
			attrs = append(attrs, semconv.MessagingConsumerGroupName(group))
		}
		attrs = append(attrs,
			semconv.MessagingDestinationPartitionID(strconv.FormatInt(int64(rec.Partition), 10)),
			semconv.MessagingKafkaOffset(int(rec.Offset)),
		)
		span.SetAttributes(attrs...)
	}
	return ctx, span
}

type propagatorEntry struct {
	prop    propagation.TextMapPropagator
	baggage bool
}

var propagatorCache atomic.Pointer[propagatorEntry]

// propagatesBaggage reports whether prop writes the baggage header, so
// that correlation baggage is built only when it can travel on. The answer
// is cached while the global propagator stays the same.
func propagatesBaggage(prop propagation.TextMapPropagator) bool {
	if e := propagatorCache.Load(); e != nil && samePropagator(e.prop, prop) {
		return e.baggage
	}
	has := false
	for _, f := range prop.Fields() {
		has = has || f == choreo.HeaderBaggage
	}
	propagatorCache.Store(&propagatorEntry{prop, has})
	return has
}

func samePropagator(a, b propagation.TextMapPropagator) bool {
	ta := reflect.TypeOf(a)
	return ta == reflect.TypeOf(b) && ta.Comparable() && a == b
}

// withCorrelationBaggage sets the correlation_id baggage member. A value
// baggage cannot hold leaves the baggage as it was.
func withCorrelationBaggage(ctx context.Context, cid string) context.Context {
	m, err := baggage.NewMemberRaw(BaggageCorrelationID, cid)
	if err != nil {
		return ctx
	}
	bag, err := baggage.FromContext(ctx).SetMember(m)
	if err != nil {
		return ctx
	}
	return baggage.ContextWithBaggage(ctx, bag)
}

// EndProcess ends a span from StartProcess with the outcome (choreo.outcome)
// and, when err is not nil, the error: recorded as an exception event, with
// error.type (the choreo.ErrorKind of a *choreo.Error in err's chain, the
// Kafka error code of a broker error, else the Go type of err),
// choreo.error.kind (choreo.KindOf(err)) and an error status. err may be
// non-nil with any outcome but handled and duplicate.
func EndProcess(span trace.Span, outcome Outcome, err error) {
	if span.IsRecording() {
		if outcome != "" {
			span.SetAttributes(AttrOutcome.String(string(outcome)))
		}
		if err != nil {
			span.SetAttributes(AttrErrorKind.String(string(choreo.KindOf(err))))
			recordError(span, err)
		}
	}
	span.End()
}

// recordError marks span as failed with err.
func recordError(span trace.Span, err error) {
	if !span.IsRecording() {
		return
	}
	span.RecordError(err)
	span.SetAttributes(semconv.ErrorTypeKey.String(ErrorType(err)))
	span.SetStatus(codes.Error, err.Error())
}

// ErrorType returns the error.type value for err: the choreo.ErrorKind of
// the first *choreo.Error in its chain, the code name of a Kafka error
// (NOT_LEADER_FOR_PARTITION …), or else the Go type of err (as semconv
// ErrorType derives it). It returns "" for nil.
func ErrorType(err error) string {
	if err == nil {
		return ""
	}
	var ce *choreo.Error
	if errors.As(err, &ce) && ce.Kind != "" {
		return string(ce.Kind)
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Message
	}
	return semconv.ErrorType(err).Value.AsString()
}

// RecordRetry adds a choreo.retry event to the span in ctx: the handler
// failed with err on the given attempt (1 for the first delivery) and the
// record will be tried again in place.
func RecordRetry(ctx context.Context, attempt int, err error) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{AttrAttempt.Int(attempt)}
	if err != nil {
		attrs = append(attrs,
			semconv.ErrorTypeKey.String(ErrorType(err)),
			semconv.ExceptionMessageKey.String(err.Error()),
		)
	}
	span.AddEvent(EventRetry, trace.WithAttributes(attrs...))
}

// RecordForward adds a choreo.forward event to the span in ctx: the record
// was forwarded to the retry topic for its next attempt (attempt counts the
// deliveries so far).
func RecordForward(ctx context.Context, topic string, attempt int) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.AddEvent(EventForward, trace.WithAttributes(
		semconv.MessagingDestinationName(topic),
		AttrAttempt.Int(attempt),
	))
}

// RecordDeadLetter adds a choreo.dead_letter event to the span in ctx: the
// record was written to the dead-letter topic because of a failure of the
// given kind.
func RecordDeadLetter(ctx context.Context, topic string, kind choreo.ErrorKind) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.AddEvent(EventDeadLetter, trace.WithAttributes(
		semconv.MessagingDestinationName(topic),
		AttrErrorKind.String(string(kind)),
	))
}

// RecordCircuit adds a choreo.circuit event to the span in ctx: the
// circuit breaker of the record's route moved from one state to another
// (closed, half-open, open) because of this record's attempt, or let the
// record through as the half-open probe.
func RecordCircuit(ctx context.Context, from, to string) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.AddEvent(EventCircuit, trace.WithAttributes(AttrCircuitFrom.String(from), AttrCircuitState.String(to)))
}
