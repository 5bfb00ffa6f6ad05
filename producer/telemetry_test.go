package producer_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/tracing"
)

// setupTelemetry installs the SDK with an in-memory span exporter and a
// manual metric reader for one test (not parallel: globals).
func setupTelemetry(t *testing.T) (*tracetest.InMemoryExporter, *sdkmetric.ManualReader) {
	t.Helper()
	spans := tracetest.NewInMemoryExporter()
	reader := sdkmetric.NewManualReader()
	shutdown, err := tracing.Setup(context.Background(), "order-service", tracing.WithoutEnvExporters(),
		tracing.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(spans)), tracing.WithMetricReader(reader))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = shutdown(context.Background()) })
	return spans, reader
}

// publishes returns choreo.producer.publishes by outcome.
func publishes(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != tracing.MetricPublishes {
				continue
			}
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				o, _ := p.Attributes.Value(tracing.MetricAttrOutcome)
				out[o.AsString()] += p.Value
			}
		}
	}
	return out
}

func TestPublishMakesSendSpanAndCountsPublishes(t *testing.T) {
	spans, reader := setupTelemetry(t)
	e := newEnv(t, 3)
	p := e.producer(t, producer.Source("order-service"))

	ctx, parent := otel.Tracer("test").Start(context.Background(), "place order")
	pub, err := p.Publish(ctx, e.topic, "order-7", order("order-7"))
	parent.End()
	if err != nil {
		t.Fatal(err)
	}

	var send tracetest.SpanStub
	n := 0
	for _, s := range spans.GetSpans() {
		if s.SpanKind == trace.SpanKindProducer {
			send, n = s, n+1
		}
	}
	if n != 1 {
		t.Fatalf("%d producer spans; want 1 (spans %v)", n, spans.GetSpans())
	}
	if want := "send " + e.topic; send.Name != want {
		t.Errorf("span name %q; want %q", send.Name, want)
	}
	if send.Parent.SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("send span parent %v; want the caller's span %v", send.Parent.SpanID(), parent.SpanContext().SpanID())
	}
	got := map[string]string{}
	for _, kv := range send.Attributes {
		got[string(kv.Key)] = kv.Value.String()
	}
	want := map[string]string{
		"messaging.system":                   "kafka",
		"messaging.operation.name":           "send",
		"messaging.operation.type":           "send",
		"messaging.destination.name":         e.topic,
		"messaging.kafka.message.key":        "order-7",
		"messaging.message.id":               pub.Metadata.ID,
		"messaging.message.conversation_id":  pub.Metadata.CorrelationID,
		"messaging.destination.partition.id": strconv.Itoa(int(pub.Partition)),
		"messaging.kafka.offset":             strconv.FormatInt(pub.Offset, 10),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("attribute %s = %q; want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("attributes %v; want exactly %v", got, want)
	}
	if res := send.Resource.Set(); res.Len() == 0 {
		t.Error("send span has no resource")
	} else if v, _ := res.Value(attribute.Key("service.name")); v.AsString() != "order-service" {
		t.Errorf("service.name = %q; want order-service", v.AsString())
	}

	r := e.consume(t, 1)[0]
	tp, _ := header(r, choreo.HeaderTraceParent)
	if w := fmt.Sprintf("00-%s-%s-01", send.SpanContext.TraceID(), send.SpanContext.SpanID()); tp != w {
		t.Errorf("traceparent %q; want the send span's context %q", tp, w)
	}

	if got := publishes(t, reader); got["ok"] != 1 || got["error"] != 0 {
		t.Errorf("publishes by outcome %v; want ok=1", got)
	}
}

func TestFailedPublishesCountedWithoutSendSpan(t *testing.T) {
	spans, reader := setupTelemetry(t)
	e := newEnv(t, 1)
	p := e.producer(t)
	bad := order("o-9")
	bad.Currency = "DOGECOIN" // not an enum symbol: fails before sending
	if _, err := p.Publish(context.Background(), e.topic, "k", bad); err == nil {
		t.Fatal("publish of an invalid event succeeded")
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Publish(context.Background(), e.topic, "k", order("o-10")); err == nil {
		t.Fatal("publish after Close succeeded")
	}
	if got := publishes(t, reader); got["error"] != 2 || got["ok"] != 0 {
		t.Errorf("publishes by outcome %v; want error=2", got)
	}
	if n := len(spans.GetSpans()); n != 0 {
		t.Errorf("%d spans for publishes that sent nothing; want 0", n)
	}
}
