package tracing

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/choreokit/choreo"
)

// newRecord returns a record with the wire contract's id headers.
func newRecord(topic, key, id, correlation string) *kgo.Record {
	rec := &kgo.Record{Topic: topic, Value: []byte("v")}
	if key != "" {
		rec.Key = []byte(key)
	}
	if id != "" {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: choreo.HeaderID, Value: []byte(id)})
	}
	if correlation != "" {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: choreo.HeaderCorrelationID, Value: []byte(correlation)})
	}
	return rec
}

// wantAttrs compares attributes as text, exactly: no key missing, none extra.
func wantAttrs(t *testing.T, what string, got []attribute.KeyValue, want map[string]string) {
	t.Helper()
	m := map[string]string{}
	for _, kv := range got {
		m[string(kv.Key)] = kv.Value.String()
	}
	if !maps.Equal(m, want) {
		for _, k := range slices.Sorted(maps.Keys(want)) {
			if m[k] != want[k] {
				t.Errorf("%s: attribute %s = %q; want %q", what, k, m[k], want[k])
			}
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if _, ok := want[k]; !ok {
				t.Errorf("%s: unexpected attribute %s = %q", what, k, m[k])
			}
		}
	}
}

// send publishes rec the way the producer does: a send span, its context
// injected, the broker's answer at partition 2, offset 41.
func send(ctx context.Context, rec *kgo.Record) trace.SpanContext {
	ctx, span := StartSend(ctx, rec)
	Inject(ctx, rec)
	rec.Partition, rec.Offset = 2, 41
	EndSend(span, rec, nil)
	return span.SpanContext()
}

func TestSendSpan(t *testing.T) {
	tel := setupTest(t)
	rec := newRecord("orders", "order-1", "id-1", "corr-1")
	sc := send(context.Background(), rec)

	s := tel.only(t)
	if s.Name != "send orders" || s.SpanKind != trace.SpanKindProducer {
		t.Errorf("span %q kind %v; want \"send orders\" kind producer", s.Name, s.SpanKind)
	}
	if s.SpanContext.SpanID() != sc.SpanID() {
		t.Errorf("exported span %v; want the span StartSend returned %v", s.SpanContext.SpanID(), sc.SpanID())
	}
	if s.Status.Code != codes.Unset {
		t.Errorf("status %v; want unset", s.Status)
	}
	wantAttrs(t, "send span", s.Attributes, map[string]string{
		"messaging.system":                   "kafka",
		"messaging.operation.name":           "send",
		"messaging.operation.type":           "send",
		"messaging.destination.name":         "orders",
		"messaging.kafka.message.key":        "order-1",
		"messaging.message.id":               "id-1",
		"messaging.message.conversation_id":  "corr-1",
		"messaging.destination.partition.id": "2",
		"messaging.kafka.offset":             "41",
	})
	tp := HeaderCarrier{rec}.Get(choreo.HeaderTraceParent)
	if want := fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID()); tp != want {
		t.Errorf("traceparent header %q; want the send span's %q", tp, want)
	}
}

func TestSendSpanWithoutKeyOrHeaders(t *testing.T) {
	tel := setupTest(t)
	rec := newRecord("orders", "", "", "")
	rec.Key = []byte{0xff, 0xfe} // not UTF-8: left out
	send(context.Background(), rec)
	wantAttrs(t, "send span", tel.only(t).Attributes, map[string]string{
		"messaging.system":                   "kafka",
		"messaging.operation.name":           "send",
		"messaging.operation.type":           "send",
		"messaging.destination.name":         "orders",
		"messaging.destination.partition.id": "2",
		"messaging.kafka.offset":             "41",
	})
}

func TestSendSpanError(t *testing.T) {
	tel := setupTest(t)
	rec := newRecord("orders", "k", "id-2", "corr-2")
	_, span := StartSend(context.Background(), rec)
	EndSend(span, rec, fmt.Errorf("producer: publish x to orders: %w", kerr.NotEnoughReplicas))

	s := tel.only(t)
	if s.Status.Code != codes.Error || !strings.Contains(s.Status.Description, "NOT_ENOUGH_REPLICAS") {
		t.Errorf("status %v; want error mentioning NOT_ENOUGH_REPLICAS", s.Status)
	}
	a := attrMap(s.Attributes)
	if got := a["error.type"].AsString(); got != "NOT_ENOUGH_REPLICAS" {
		t.Errorf("error.type = %q; want NOT_ENOUGH_REPLICAS", got)
	}
	if _, ok := a["messaging.destination.partition.id"]; ok {
		t.Error("a failed send has a partition id; want none")
	}
	if len(s.Events) != 1 || s.Events[0].Name != "exception" {
		t.Errorf("events %v; want one exception", s.Events)
	}
}

func TestProcessSpanIsChildOfSendAndLinksIt(t *testing.T) {
	tel := setupTest(t)
	rec := newRecord("orders", "order-1", "id-1", "corr-1")
	sendSC := send(context.Background(), rec)
	tel.spans.Reset()

	ctx, span := StartProcess(context.Background(), rec, "payment")
	if got := trace.SpanFromContext(ctx).SpanContext(); !got.Equal(span.SpanContext()) {
		t.Errorf("context holds span %v; want the process span %v", got, span.SpanContext())
	}
	if got := baggage.FromContext(ctx).Member(BaggageCorrelationID).Value(); got != "corr-1" {
		t.Errorf("baggage %s = %q; want corr-1", BaggageCorrelationID, got)
	}
	if p, ok := PositionFrom(ctx); !ok || p != (Position{Topic: "orders", Partition: 2, Offset: 41}) {
		t.Errorf("PositionFrom = %+v, %v; want orders/2/41", p, ok)
	}
	EndProcess(span, OutcomeHandled, nil)

	s := tel.only(t)
	if s.Name != "process orders" || s.SpanKind != trace.SpanKindConsumer {
		t.Errorf("span %q kind %v; want \"process orders\" kind consumer", s.Name, s.SpanKind)
	}
	if s.SpanContext.TraceID() != sendSC.TraceID() {
		t.Errorf("process trace %v; want the send span's trace %v (one trace across services)", s.SpanContext.TraceID(), sendSC.TraceID())
	}
	if s.Parent.SpanID() != sendSC.SpanID() || !s.Parent.IsRemote() {
		t.Errorf("parent %v (remote %v); want the send span %v, remote", s.Parent.SpanID(), s.Parent.IsRemote(), sendSC.SpanID())
	}
	if len(s.Links) != 1 || s.Links[0].SpanContext.SpanID() != sendSC.SpanID() || s.Links[0].SpanContext.TraceID() != sendSC.TraceID() {
		t.Errorf("links %v; want one to the send span %v", s.Links, sendSC.SpanID())
	}
	wantAttrs(t, "process span", s.Attributes, map[string]string{
		"messaging.system":                   "kafka",
		"messaging.operation.name":           "process",
		"messaging.operation.type":           "process",
		"messaging.destination.name":         "orders",
		"messaging.kafka.message.key":        "order-1",
		"messaging.message.id":               "id-1",
		"messaging.message.conversation_id":  "corr-1",
		"messaging.consumer.group.name":      "payment",
		"messaging.destination.partition.id": "2",
		"messaging.kafka.offset":             "41",
		"choreo.outcome":                     "handled",
	})
	if s.Status.Code != codes.Unset {
		t.Errorf("status %v; want unset for a handled record", s.Status)
	}
}

func TestProcessSpanWithoutTraceContextIsRoot(t *testing.T) {
	tel := setupTest(t)
	rec := newRecord("orders", "k", "id-1", "")
	rec.Partition, rec.Offset = 0, 7
	ctx, span := StartProcess(context.Background(), rec, "g")
	if baggage.FromContext(ctx).Len() != 0 {
		t.Errorf("baggage %v; want none without a correlation id", baggage.FromContext(ctx))
	}
	EndProcess(span, OutcomeDuplicate, nil)
	s := tel.only(t)
	if s.Parent.IsValid() || len(s.Links) != 0 {
		t.Errorf("parent %v links %v; want a root span without links", s.Parent, s.Links)
	}
	if got := attrMap(s.Attributes)["choreo.outcome"].AsString(); got != "duplicate" {
		t.Errorf("choreo.outcome = %q; want duplicate", got)
	}
}

func TestProcessBaggageTravelsOnAndKeepsUpstreamMembers(t *testing.T) {
	setupTest(t)
	// Upstream put tenant=acme in the baggage of the event.
	up, _ := baggage.NewMemberRaw("tenant", "acme")
	bag, _ := baggage.New(up)
	rec := newRecord("orders", "k", "id-1", "corr 1/ü") // needs percent-encoding
	send(baggage.ContextWithBaggage(context.Background(), bag), rec)

	ctx, span := StartProcess(context.Background(), rec, "g")
	defer EndProcess(span, OutcomeHandled, nil)
	next := newRecord("payments", "k", "id-2", "corr 1/ü")
	Inject(ctx, next)
	got := baggage.FromContext(Extract(context.Background(), next))
	if got.Member("tenant").Value() != "acme" || got.Member(BaggageCorrelationID).Value() != "corr 1/ü" {
		t.Errorf("baggage of the next event %q; want tenant=acme and %s=corr 1/ü", got.String(), BaggageCorrelationID)
	}
}

type customErr struct{}

func (customErr) Error() string { return "custom" }

func TestEndProcessErrors(t *testing.T) {
	tests := []struct {
		outcome  Outcome
		err      error
		wantType string
		wantKind string
	}{
		{OutcomeRetried, errors.New("db down"), "*errors.errorString", "retryable"},
		{OutcomeRetried, fmt.Errorf("wrapped: %w", customErr{}), "github.com/choreokit/choreo/tracing.customErr", "retryable"},
		{OutcomeDeadLettered, choreo.Permanent(errors.New("no such customer")), "permanent", "permanent"},
		{OutcomeDeadLettered, fmt.Errorf("decode: %w", choreo.Errorf(choreo.KindSchemaMismatch, "field x")), "schema_mismatch", "schema_mismatch"},
		{OutcomeDeadLettered, fmt.Errorf("timeout: %w", context.DeadlineExceeded), "context.deadlineExceededError", "retryable"},
	}
	for _, tt := range tests {
		tel := setupTest(t)
		_, span := StartProcess(context.Background(), newRecord("t", "k", "i", "c"), "g")
		EndProcess(span, tt.outcome, tt.err)
		s := tel.only(t)
		a := attrMap(s.Attributes)
		if got := a["error.type"].AsString(); got != tt.wantType {
			t.Errorf("%v: error.type = %q; want %q", tt.err, got, tt.wantType)
		}
		if got := a["choreo.error.kind"].AsString(); got != tt.wantKind {
			t.Errorf("%v: choreo.error.kind = %q; want %q", tt.err, got, tt.wantKind)
		}
		if got := a["choreo.outcome"].AsString(); got != string(tt.outcome) {
			t.Errorf("%v: choreo.outcome = %q; want %q", tt.err, got, tt.outcome)
		}
		if s.Status.Code != codes.Error || s.Status.Description != tt.err.Error() {
			t.Errorf("%v: status %v; want error %q", tt.err, s.Status, tt.err)
		}
	}
}

func TestRecordEvents(t *testing.T) {
	tel := setupTest(t)
	ctx, span := StartProcess(context.Background(), newRecord("orders", "k", "i", "c"), "payment")
	RecordRetry(ctx, 1, errors.New("db down"))
	RecordForward(ctx, "payment.orders.retry-1", 2)
	RecordDeadLetter(ctx, "payment.orders.dlq", choreo.KindRetriesExhausted)
	EndProcess(span, OutcomeDeadLettered, errors.New("db down"))

	evs := tel.only(t).Events
	var names []string
	for _, e := range evs {
		if e.Name != "exception" {
			names = append(names, e.Name)
		}
	}
	if want := []string{EventRetry, EventForward, EventDeadLetter}; !slices.Equal(names, want) {
		t.Fatalf("events %v; want %v (and an exception)", names, want)
	}
	wantAttrs(t, "retry event", evs[0].Attributes, map[string]string{
		"choreo.attempt": "1", "error.type": "*errors.errorString", "exception.message": "db down",
	})
	wantAttrs(t, "forward event", evs[1].Attributes, map[string]string{
		"choreo.attempt": "2", "messaging.destination.name": "payment.orders.retry-1",
	})
	wantAttrs(t, "dead-letter event", evs[2].Attributes, map[string]string{
		"choreo.error.kind": "retries_exhausted", "messaging.destination.name": "payment.orders.dlq",
	})
}

func TestHelpersWithoutSpanDoNothing(t *testing.T) {
	ctx := context.Background()
	RecordRetry(ctx, 1, errors.New("x"))
	RecordForward(ctx, "t", 1)
	RecordDeadLetter(ctx, "t", choreo.KindPanic)
	EndProcess(trace.SpanFromContext(ctx), OutcomeHandled, errors.New("x"))
	EndSend(trace.SpanFromContext(ctx), nil, nil)
}

func TestTracerFollowsGlobalProvider(t *testing.T) {
	first := setupTest(t)
	_, span := StartSend(context.Background(), newRecord("a", "", "", ""))
	span.End()
	second := setupTest(t) // a new global provider: the cached tracer must not be reused
	_, span = StartSend(context.Background(), newRecord("b", "", "", ""))
	span.End()
	if got := spanNames(first.spans.GetSpans()); !slices.Equal(got, []string{"send a"}) {
		t.Errorf("first provider got %v; want [send a]", got)
	}
	if got := spanNames(second.spans.GetSpans()); !slices.Equal(got, []string{"send b"}) {
		t.Errorf("second provider got %v; want [send b]", got)
	}
}

func TestErrorType(t *testing.T) {
	if got := ErrorType(nil); got != "" {
		t.Errorf("ErrorType(nil) = %q; want empty", got)
	}
	if got := ErrorType(kerr.UnknownTopicOrPartition); got != "UNKNOWN_TOPIC_OR_PARTITION" {
		t.Errorf("ErrorType(kerr) = %q; want UNKNOWN_TOPIC_OR_PARTITION", got)
	}
}

func BenchmarkSendSpan(b *testing.B) {
	benchSetup(b)
	rec := newRecord("orders", "order-1", "0190d5a8-4ef7-7e2e-9c55-3c6f3f4b1a20", "0190d5a8-4ef7-7e2e-9c55-3c6f3f4b1a20")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		sctx, span := StartSend(ctx, rec)
		Inject(sctx, rec)
		EndSend(span, rec, nil)
	}
}

func BenchmarkProcessSpan(b *testing.B) {
	benchSetup(b)
	rec := newRecord("orders", "order-1", "0190d5a8-4ef7-7e2e-9c55-3c6f3f4b1a20", "0190d5a8-4ef7-7e2e-9c55-3c6f3f4b1a20")
	send(context.Background(), rec)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, span := StartProcess(ctx, rec, "payment")
		EndProcess(span, OutcomeHandled, nil)
	}
}

// benchSetup installs the SDK with no exporter: the cost measured is that
// of making the spans.
func benchSetup(b *testing.B) {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		b.Setenv(k, "")
	}
	shutdown, err := Setup(context.Background(), "bench", WithoutEnvExporters())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = shutdown(context.Background()) })
}
