package tracing

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func TestHeaderCarrierRoundTrip(t *testing.T) {
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	member, err := baggage.NewMember("correlation_id", "c-42")
	if err != nil {
		t.Fatal(err)
	}
	bag, _ := baggage.New(member)
	ctx := baggage.ContextWithBaggage(trace.ContextWithSpanContext(context.Background(), sc), bag)

	rec := &kgo.Record{Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte("stale")}, {Key: "ce_id", Value: []byte("x")}}}
	prop.Inject(ctx, HeaderCarrier{rec})

	n := 0
	for _, h := range rec.Headers {
		if h.Key == "traceparent" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d traceparent headers after inject; want 1 (replaced)", n)
	}
	if got := (HeaderCarrier{rec}).Get("ce_id"); got != "x" {
		t.Errorf("ce_id = %q; want other headers kept", got)
	}

	out := prop.Extract(context.Background(), HeaderCarrier{rec})
	if got := trace.SpanContextFromContext(out); got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || !got.IsRemote() {
		t.Errorf("extracted span context %v; want trace %v span %v, remote", got, sc.TraceID(), sc.SpanID())
	}
	if got := baggage.FromContext(out).Member("correlation_id").Value(); got != "c-42" {
		t.Errorf("baggage correlation_id = %q; want c-42", got)
	}
}
