package producer

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/internal/testevents"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/schema"
)

// Benchmarks of building a record, what every publish does before franz-go
// takes the record (encode, ids, headers), with allocations:
//
//	go test -run '^$' -bench Record -benchmem ./producer
//
// No broker is involved: the producer's client never dials (its seed is a
// closed port), and the schema id comes from an embedded registry once.

// benchProducer returns a producer with the schema of testevents.OrderPlaced
// registered for topic, and the event.
func benchProducer(b *testing.B, opts ...Option) (*Producer, string, testevents.OrderPlaced) {
	b.Helper()
	reg, err := schema.NewRegistry([]string{kafkatest.SchemaRegistry(b)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	p, err := New(ctx, connection.Config{Brokers: []string{"127.0.0.1:1"}}, reg, append([]Option{Source("orders")}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close(ctx) })
	ev := testevents.OrderPlaced{OrderID: "order-00012345", CustomerID: "customer-0042", AmountCents: 129_99,
		Currency: "EUR", Items: 3, PlacedAt: time.UnixMilli(1_760_000_000_000).UTC()}
	const topic = "orders"
	if _, _, err := p.Record(ctx, topic, ev.OrderID, ev); err != nil { // registers the schema
		b.Fatal(err)
	}
	return p, topic, ev
}

// BenchmarkRecord measures Producer.record: the strict Avro encode of a
// six-field event, the event id, the metadata and the eight CloudEvents
// headers.
//
//   - new-event: outside a handler (a UUIDv7 id, a new correlation id);
//   - in-handler: with a handler's context (a derived UUIDv5 id, the
//     handled event's correlation id, a causation id);
//   - encode-only: the codec's Encode of the same event, for the share of
//     the rest.
func BenchmarkRecord(b *testing.B) {
	p, topic, ev := benchProducer(b)
	b.Run("new-event", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := p.record(ctx, topic, ev.OrderID, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("in-handler", func(b *testing.B) {
		handled := choreo.Metadata{ID: choreo.NewID(), Type: "choreo.test.PaymentRequested", Source: "payments",
			Time: time.Now().UTC(), CorrelationID: choreo.NewID()}
		ctx := choreo.WithHandlerScope(choreo.WithMetadata(context.Background(), handled), "shipping")
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := p.record(ctx, topic, ev.OrderID, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode-only", func(b *testing.B) {
		id, err := p.schemaID(context.Background(), topic, ev.AvroSchema())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.codec.Encode(id, ev.AvroSchema(), ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRecordTraced measures the public Record, which adds the trace
// context to the headers: with the default (global, no-op) propagator, and
// with the W3C propagator and a sampled span in the context, as in a
// traced service.
func BenchmarkRecordTraced(b *testing.B) {
	b.Run("no-op-propagator", func(b *testing.B) {
		p, topic, ev := benchProducer(b)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := p.Record(ctx, topic, ev.OrderID, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("traceparent", func(b *testing.B) {
		p, topic, ev := benchProducer(b, Propagator(propagation.TraceContext{}))
		ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
			TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
			SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
			TraceFlags: trace.FlagsSampled,
		}))
		b.ReportAllocs()
		for b.Loop() {
			rec, _, err := p.Record(ctx, topic, ev.OrderID, ev)
			if err != nil || rec.Headers[len(rec.Headers)-1].Key != choreo.HeaderTraceParent {
				b.Fatalf("Record: headers %v, %v; want a traceparent last", rec.Headers, err)
			}
		}
	})
}
