package consumer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/tracing"
)

// withTracing installs an SDK tracer provider with an in-memory exporter
// and the W3C propagators for the test, restoring the globals after.
func withTracing(t *testing.T) *tracetest.InMemoryExporter {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
	})
	return exp
}

func attr(s tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// TestOneTraceAcrossTwoServices: order service publishes, payment service
// handles and publishes, shipping service handles. Every span is in one
// trace, each process span is the child of the send span it consumed (and
// links it), and the correlation id is the same throughout.
func TestOneTraceAcrossTwoServices(t *testing.T) {
	exp := withTracing(t)
	h := newHarness(t, 2)
	payments := h.cluster.Topic(t, 2)

	payment := h.consumer(kafkatest.Group(t), consumer.Service("payment"))
	consumer.Handle(payment, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		_, err := h.prod.Publish(ctx, payments, ev.Key, PaymentRequested{OrderID: ev.Data.OrderID, AmountCents: ev.Data.AmountCents})
		return err
	})
	shipping := h.consumer(kafkatest.Group(t), consumer.Service("shipping"))
	var mu sync.Mutex
	var shippedCorrelation string
	consumer.Handle(shipping, payments, func(ctx context.Context, ev consumer.Event[PaymentRequested]) error {
		mu.Lock()
		shippedCorrelation = ev.CorrelationID
		mu.Unlock()
		return nil
	})
	stopP, stopS := running(t, payment), running(t, shipping)

	pub, err := h.prod.Publish(context.Background(), h.topic, "order-1", order("order-1", 1))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the shipping service handled the payment", func() bool { return shipping.Stats().Handled == 1 })
	if err := stopP(); err != nil {
		t.Fatal(err)
	}
	if err := stopS(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if shippedCorrelation != pub.Metadata.CorrelationID {
		t.Errorf("shipping saw correlation %q; want %q", shippedCorrelation, pub.Metadata.CorrelationID)
	}
	mu.Unlock()

	spans := exp.GetSpans()
	byName := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	send1, proc1 := byName["send "+h.topic], byName["process "+h.topic]
	send2, proc2 := byName["send "+payments], byName["process "+payments]
	for name, s := range map[string]tracetest.SpanStub{"send order": send1, "process order": proc1, "send payment": send2, "process payment": proc2} {
		if !s.SpanContext.IsValid() {
			t.Fatalf("no %s span among %d spans", name, len(spans))
		}
		if s.SpanContext.TraceID() != send1.SpanContext.TraceID() {
			t.Errorf("%s is in trace %s; want the one trace %s", name, s.SpanContext.TraceID(), send1.SpanContext.TraceID())
		}
		if v, _ := attr(s, "messaging.message.conversation_id"); v.AsString() != pub.Metadata.CorrelationID {
			t.Errorf("%s conversation_id %q; want %q", name, v.AsString(), pub.Metadata.CorrelationID)
		}
		if v, _ := attr(s, "messaging.system"); v.AsString() != "kafka" {
			t.Errorf("%s messaging.system = %q", name, v.AsString())
		}
	}
	parentage := []struct {
		child, parent tracetest.SpanStub
		what          string
	}{
		{proc1, send1, "payment's process span under the order's send span"},
		{send2, proc1, "payment's send span under its process span"},
		{proc2, send2, "shipping's process span under the payment's send span"},
	}
	for _, p := range parentage {
		if p.child.Parent.SpanID() != p.parent.SpanContext.SpanID() {
			t.Errorf("%s: parent %s; want %s", p.what, p.child.Parent.SpanID(), p.parent.SpanContext.SpanID())
		}
	}
	for _, proc := range []tracetest.SpanStub{proc1, proc2} {
		if proc.SpanKind != trace.SpanKindConsumer {
			t.Errorf("%s kind %v; want consumer", proc.Name, proc.SpanKind)
		}
		if len(proc.Links) != 1 || proc.Links[0].SpanContext.SpanID() != proc.Parent.SpanID() {
			t.Errorf("%s links %v; want one link to its send span", proc.Name, proc.Links)
		}
		for _, k := range []string{"messaging.consumer.group.name", "messaging.destination.partition.id", "messaging.kafka.offset",
			"messaging.message.id", "messaging.kafka.message.key", "messaging.operation.name", "messaging.operation.type"} {
			if _, ok := attr(proc, k); !ok {
				t.Errorf("%s lacks attribute %s", proc.Name, k)
			}
		}
	}
	if v, _ := attr(proc1, "messaging.message.id"); v.AsString() != pub.Metadata.ID {
		t.Errorf("process span message id %q; want %q", v.AsString(), pub.Metadata.ID)
	}
}

// TestDeadLetterShowsOnTrace: a poison record's process span records the
// dead-lettering and the error.
func TestDeadLetterShowsOnTrace(t *testing.T) {
	exp := withTracing(t)
	h := newHarness(t, 1)
	c := h.consumer(kafkatest.Group(t), consumer.BlockingRetries())
	consumer.Handle(c, h.topic, behaviour)
	stop := running(t, c)
	pub, err := h.prod.Publish(context.Background(), h.topic, "k", order("permanent", 1))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "dead letter", func() bool { return c.Stats().DeadLettered == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var send, proc tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		switch s.Name {
		case "send " + h.topic:
			send = s
		case "process " + h.topic:
			proc = s
		}
	}
	if !proc.SpanContext.IsValid() || proc.SpanContext.TraceID() != send.SpanContext.TraceID() {
		t.Fatalf("process span %v not in the send span's trace %v", proc.SpanContext.TraceID(), send.SpanContext.TraceID())
	}
	if v, _ := attr(proc, "choreo.outcome"); v.AsString() != "dead_lettered" {
		t.Errorf("outcome %q; want dead_lettered", v.AsString())
	}
	if v, _ := attr(proc, "error.type"); v.AsString() != string(choreo.KindPermanent) {
		t.Errorf("error.type %q; want permanent", v.AsString())
	}
	found := false
	for _, e := range proc.Events {
		found = found || strings.Contains(e.Name, "dead")
	}
	if !found {
		t.Errorf("no dead-letter event on the process span: %v", proc.Events)
	}
	_ = pub
}

// TestMetricsCountOutcomesExactly runs a known mix: 5 good, 2 duplicates, 3
// retried (forwarded to a retry topic once, then handled) and 2 poison.
func TestMetricsCountOutcomesExactly(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	metrics, err := tracing.NewMetrics(mp)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	ctx := context.Background()
	for i := range 5 {
		if _, err := h.prod.Publish(ctx, h.topic, "good", order("ok", i)); err != nil {
			t.Fatal(err)
		}
	}
	dupSrc := consumeAll(t, h, h.topic, 5)[0]
	cl := h.cluster.Client(t)
	for range 2 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: h.topic, Key: dupSrc.Key, Value: dupSrc.Value, Headers: dupSrc.Headers}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := h.prod.Publish(ctx, h.topic, "flaky", order("flaky", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		if _, err := h.prod.Publish(ctx, h.topic, "bad", order("permanent", i)); err != nil {
			t.Fatal(err)
		}
	}

	c := h.consumer(group, consumer.Metrics(metrics), consumer.RetryTopics(50*time.Millisecond),
		consumer.Retry(consumer.RetryPolicy{MaxAttempts: 1, Multiplier: 1}))
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		if ev.Data.OrderID == "flaky" && ev.Attempt == 1 {
			return errors.New("busy")
		}
		return behaviour(ctx, ev)
	})
	stop := running(t, c)
	eventually(t, 30*time.Second, "all done", func() bool {
		s := c.Stats()
		return s.Handled == 8 && s.Duplicates == 2 && s.DeadLettered == 2
	})
	// While it runs, the lag gauge reports the source partition, caught up.
	eventually(t, 10*time.Second, "lag 0 reported for the source partition", func() bool {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				g, ok := m.Data.(metricdata.Gauge[int64])
				if m.Name != "choreo.consumer.lag" || !ok {
					continue
				}
				for _, dp := range g.DataPoints {
					topic, _ := dp.Attributes.Value("topic")
					if topic.AsString() == h.topic && dp.Value == 0 {
						return true
					}
				}
			}
		}
		return false
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	deadByKind := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				switch m.Name {
				case "choreo.consumer.events":
					o, _ := dp.Attributes.Value("outcome")
					topic, _ := dp.Attributes.Value("topic")
					got[topic.AsString()+":"+o.AsString()] += dp.Value
				case "choreo.dlq.dead_letters":
					k, _ := dp.Attributes.Value("error.kind")
					deadByKind[k.AsString()] += dp.Value
				}
			}
		}
	}
	retryTopic := group + ".retry.1-50ms"
	want := map[string]int64{
		h.topic + ":handled":       5,
		h.topic + ":duplicate":     2,
		h.topic + ":retried":       3,
		h.topic + ":dead_lettered": 2,
		retryTopic + ":handled":    3,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("choreo.consumer.events{%s} = %d; want %d (all: %v)", k, got[k], v, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("outcomes %v; want exactly %v", got, want)
	}
	if deadByKind["permanent"] != 2 {
		t.Errorf("dead letters by kind %v; want permanent: 2", deadByKind)
	}
}

// TestHandlerLogLinesCarryIDs: a handler logging with its context through
// the tracing log handler gets the trace, span, correlation and event ids
// and the record's position.
func TestHandlerLogLinesCarryIDs(t *testing.T) {
	withTracing(t)
	var buf bytes.Buffer
	var bufMu sync.Mutex
	logger := slog.New(tracing.NewLogHandler(slog.NewJSONHandler(&lockedWriter{w: &buf, mu: &bufMu}, nil)))
	h := newHarness(t, 1)
	c := h.consumer(kafkatest.Group(t))
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		logger.InfoContext(ctx, "charging", "order", ev.Data.OrderID)
		return nil
	})
	stop := running(t, c)
	pub, err := h.prod.Publish(context.Background(), h.topic, "k", order("o-9", 9))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "handled", func() bool { return c.Stats().Handled == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	bufMu.Lock()
	defer bufMu.Unlock()
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	for k, want := range map[string]any{
		"correlation_id": pub.Metadata.CorrelationID, "event_id": pub.Metadata.ID, "topic": h.topic,
		"partition": float64(pub.Partition), "offset": float64(pub.Offset), "order": "o-9",
	} {
		if line[k] != want {
			t.Errorf("log field %s = %v; want %v (line %v)", k, line[k], want, line)
		}
	}
	for _, k := range []string{"trace_id", "span_id"} {
		if s, _ := line[k].(string); len(s) < 16 {
			t.Errorf("log field %s = %v; want an id", k, line[k])
		}
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
