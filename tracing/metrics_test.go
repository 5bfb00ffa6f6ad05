package tracing

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/choreokit/choreo"
)

// collect reads every metric of choreo's scope from r, by name.
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != ScopeName {
			continue
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// key renders an attribute set as k=v,k=v in key order.
func key(s attribute.Set) string {
	var parts []string
	for _, kv := range s.ToSlice() {
		parts = append(parts, string(kv.Key)+"="+kv.Value.String())
	}
	return strings.Join(parts, ",")
}

func sums(t *testing.T, agg metricdata.Aggregation) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	switch d := agg.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			out[key(p.Attributes)] = p.Value
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			out[key(p.Attributes)] = p.Value
		}
	default:
		t.Fatalf("aggregation %T; want an int64 sum or gauge", agg)
	}
	return out
}

func wantCounts(t *testing.T, name string, got, want map[string]int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d series %v; want %d %v", name, len(got), got, len(want), want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s{%s} = %d; want %d", name, k, got[k], v)
		}
	}
}

func TestMetricsCountExactly(t *testing.T) {
	tel := setupTest(t)
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := m.Consumer("payment", "orders")
	if m.Consumer("payment", "orders") != c {
		t.Error("Consumer returned a new value for the same group and topic; want the cached one")
	}
	for range 3 {
		c.Event(ctx, OutcomeHandled)
	}
	c.Event(ctx, OutcomeRetried)
	c.Event(ctx, OutcomeDeadLettered)
	c.Event(ctx, OutcomeDuplicate)
	c.Event(ctx, OutcomeSkipped)
	c.Event(ctx, Outcome("odd")) // not prepared, still counted
	m.Consumer("shipping", "orders").Event(ctx, OutcomeHandled)
	c.HandlerDuration(ctx, 30*time.Millisecond)
	c.HandlerDuration(ctx, 2*time.Second)
	c.InFlight(ctx, 2)
	c.InFlight(ctx, -1)
	c.DeadLetter(ctx, choreo.KindSchemaMismatch)
	c.DeadLetter(ctx, choreo.KindSchemaMismatch)
	c.DeadLetter(ctx, choreo.KindRetriesExhausted)
	m.Published(ctx, "orders", 5*time.Millisecond, nil)
	m.Published(ctx, "orders", 5*time.Millisecond, nil)
	m.Published(ctx, "orders", time.Second, errors.New("broker down"))

	lag := []Lag{{"orders", 0, 5}, {"orders", 1, 0}}
	reg, err := m.RegisterLag("payment", func() []Lag { return lag })
	if err != nil {
		t.Fatal(err)
	}

	got := collect(t, tel.reader)
	wantCounts(t, MetricConsumerEvents, sums(t, got[MetricConsumerEvents]), map[string]int64{
		"group=payment,outcome=handled,topic=orders":       3,
		"group=payment,outcome=retried,topic=orders":       1,
		"group=payment,outcome=dead_lettered,topic=orders": 1,
		"group=payment,outcome=duplicate,topic=orders":     1,
		"group=payment,outcome=skipped,topic=orders":       1,
		"group=payment,outcome=odd,topic=orders":           1,
		"group=shipping,outcome=handled,topic=orders":      1,
	})
	wantCounts(t, MetricInFlight, sums(t, got[MetricInFlight]), map[string]int64{"group=payment,topic=orders": 1})
	wantCounts(t, MetricDeadLetters, sums(t, got[MetricDeadLetters]), map[string]int64{
		"error.kind=schema_mismatch,group=payment,topic=orders":   2,
		"error.kind=retries_exhausted,group=payment,topic=orders": 1,
	})
	wantCounts(t, MetricPublishes, sums(t, got[MetricPublishes]), map[string]int64{
		"outcome=ok,topic=orders":    2,
		"outcome=error,topic=orders": 1,
	})
	wantCounts(t, MetricLag, sums(t, got[MetricLag]), map[string]int64{
		"group=payment,partition=0,topic=orders": 5,
		"group=payment,partition=1,topic=orders": 0,
	})

	hd, ok := got[MetricHandlerDuration].(metricdata.Histogram[float64])
	if !ok || len(hd.DataPoints) != 1 {
		t.Fatalf("%s = %#v; want one float64 histogram series", MetricHandlerDuration, got[MetricHandlerDuration])
	}
	if p := hd.DataPoints[0]; p.Count != 2 || p.Sum < 2.029 || p.Sum > 2.031 || key(p.Attributes) != "group=payment,topic=orders" {
		t.Errorf("handler duration count %d sum %v attrs %s; want 2, 2.03 s, group=payment,topic=orders", p.Count, p.Sum, key(p.Attributes))
	}
	if b := hd.DataPoints[0].Bounds; len(b) == 0 || b[0] != 0.005 || b[len(b)-1] != 10 {
		t.Errorf("bounds %v; want seconds from 0.005 to 10", b)
	}
	pd, _ := got[MetricPublishDuration].(metricdata.Histogram[float64])
	if len(pd.DataPoints) != 2 {
		t.Errorf("%s has %d series; want 2 (ok, error)", MetricPublishDuration, len(pd.DataPoints))
	}

	// Lag follows the callback, and stops once unregistered.
	lag = []Lag{{"orders", 0, 2}}
	wantCounts(t, MetricLag, sums(t, collect(t, tel.reader)[MetricLag]), map[string]int64{"group=payment,partition=0,topic=orders": 2})
	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	if d, ok := collect(t, tel.reader)[MetricLag]; ok && len(sums(t, d)) != 0 {
		t.Errorf("lag reported after Unregister: %v", sums(t, d))
	}
}

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *Metrics
	ctx := context.Background()
	c := m.Consumer("g", "t")
	c.Event(ctx, OutcomeHandled)
	c.HandlerDuration(ctx, time.Second)
	c.InFlight(ctx, 1)
	c.DeadLetter(ctx, choreo.KindPanic)
	m.Published(ctx, "t", time.Second, nil)
	m.Circuit(ctx, "g", "t", "e", CircuitOpen)
	reg, err := m.RegisterLag("g", func() []Lag { return nil })
	if err != nil || reg.Unregister() != nil {
		t.Errorf("RegisterLag on nil Metrics: %v", err)
	}
}

func TestPrometheusEndpoint(t *testing.T) {
	reader, handler, err := PrometheusHandler()
	if err != nil {
		t.Fatal(err)
	}
	setupTest(t, WithMetricReader(reader))
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := m.Consumer("payment", "orders")
	c.Event(ctx, OutcomeHandled)
	c.Event(ctx, OutcomeHandled)
	c.Event(ctx, OutcomeDeadLettered)
	c.DeadLetter(ctx, choreo.KindPanic)
	c.HandlerDuration(ctx, 20*time.Millisecond)
	c.InFlight(ctx, 1)
	m.Published(ctx, "payments", 3*time.Millisecond, nil)
	m.Circuit(ctx, "payment", "orders", "shop.OrderPlaced", CircuitOpen)
	reg, err := m.RegisterLag("payment", func() []Lag { return []Lag{{"orders", 4, 17}} })
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()

	srv := httptest.NewServer(handler)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	text := string(body)
	for _, want := range []string{
		`choreo_consumer_events_total{group="payment",otel_scope_name="github.com/choreokit/choreo",otel_scope_schema_url="https://opentelemetry.io/schemas/1.43.0",otel_scope_version="",outcome="handled",topic="orders"} 2`,
		`choreo_consumer_events_total{group="payment",otel_scope_name="github.com/choreokit/choreo",otel_scope_schema_url="https://opentelemetry.io/schemas/1.43.0",otel_scope_version="",outcome="dead_lettered",topic="orders"} 1`,
		`choreo_dlq_dead_letters_total{error_kind="panic",group="payment"`,
		`choreo_consumer_handler_duration_seconds_bucket{group="payment"`,
		`choreo_consumer_handler_duration_seconds_count{group="payment"`,
		`choreo_consumer_in_flight{group="payment"`,
		`choreo_consumer_lag{group="payment",otel_scope_name="github.com/choreokit/choreo",otel_scope_schema_url="https://opentelemetry.io/schemas/1.43.0",otel_scope_version="",partition="4",topic="orders"} 17`,
		`choreo_producer_publishes_total{otel_scope_name="github.com/choreokit/choreo",otel_scope_schema_url="https://opentelemetry.io/schemas/1.43.0",otel_scope_version="",outcome="ok",topic="payments"} 1`,
		`choreo_producer_publish_duration_seconds_bucket{`,
		`choreo_consumer_circuit_state{event_type="shop.OrderPlaced",group="payment",otel_scope_name="github.com/choreokit/choreo",otel_scope_schema_url="https://opentelemetry.io/schemas/1.43.0",otel_scope_version="",topic="orders"} 2`,
		`target_info{`,
		`service_name="test-service"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
}

func BenchmarkMetricsHotPath(b *testing.B) {
	shutdown, err := Setup(context.Background(), "bench", WithoutEnvExporters(), WithMetricReader(sdkmetric.NewManualReader()))
	if err != nil {
		b.Fatal(err)
	}
	defer shutdown(context.Background())
	m, err := NewMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("consumer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c := m.Consumer("payment", "orders")
			c.InFlight(ctx, 1)
			c.HandlerDuration(ctx, time.Millisecond)
			c.Event(ctx, OutcomeHandled)
			c.InFlight(ctx, -1)
		}
	})
	b.Run("publish", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.Published(ctx, "orders", time.Millisecond, nil)
		}
	})
}
