package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/tracing"
)

// outageLength is how long the dependency of the circuit breaker test is
// down: 3 s by default, 30 s with RELIABILITY_FULL set (the full run in
// .ci/run, against real Kafka).
func outageLength() time.Duration {
	if os.Getenv("RELIABILITY_FULL") != "" {
		return 30 * time.Second
	}
	return 3 * time.Second
}

// circuitGauge returns the last value of choreo.consumer.circuit.state for
// the route, or -1 when it has none.
func circuitGauge(t *testing.T, r *sdkmetric.ManualReader, topic, eventType string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			g, ok := m.Data.(metricdata.Gauge[int64])
			if m.Name != tracing.MetricCircuitState || !ok {
				continue
			}
			for _, dp := range g.DataPoints {
				tp, _ := dp.Attributes.Value(tracing.MetricAttrTopic)
				et, _ := dp.Attributes.Value(tracing.MetricAttrEventType)
				if tp.AsString() == topic && et.AsString() == eventType {
					return dp.Value
				}
			}
		}
	}
	return -1
}

// TestCircuitBreakerHoldsRecordsThroughAnOutage takes the handler's
// dependency down for a while (outageLength) with events flowing, one of
// them poison. The breaker must open within its threshold, keep the
// handler calls during the outage to the threshold plus one probe per
// cool-down, forward nothing to a retry topic and dead-letter nothing for
// the outage, stay ready, and after recovery every event must be handled
// exactly once and the poison record dead-lettered once.
func TestCircuitBreakerHoldsRecordsThroughAnOutage(t *testing.T) {
	spans := withTracing(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	metrics, err := tracing.NewMetrics(mp)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, 4)
	group := kafkatest.Group(t)
	const (
		concurrency = 8
		threshold   = 20 // records failing in a row open the default breaker (Window 40, ratio 0.5)
		attempts    = 3  // each may be tried this often before
	)
	outage := outageLength()
	// Ten probes in the outage. Each probe is a real attempt: with many
	// more cool-downs than the waiting records have attempts to spare,
	// records would spend them all and go on to the retry topics (see
	// Breaker).
	coolDown := outage / 10
	// Fast in-process retries and a short retry topic: without the breaker
	// the outage would forward and dead-letter records within a second.
	c := h.consumer(group, consumer.Metrics(metrics), consumer.Concurrency(concurrency),
		consumer.CircuitBreaker(consumer.Breaker{CoolDown: coolDown}),
		consumer.RetryTopics(200*time.Millisecond),
		consumer.Retry(consumer.RetryPolicy{MaxAttempts: 3, InitialInterval: 10 * time.Millisecond, MaxInterval: 20 * time.Millisecond, Multiplier: 2}))
	var (
		down         atomic.Bool
		callsInDown  atomic.Int64
		mu           sync.Mutex
		handled      = map[string]int{}
		handledTotal int
	)
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		if down.Load() {
			callsInDown.Add(1)
			return errors.New("inventory service: connection refused")
		}
		if ev.Data.OrderID == "permanent" {
			return choreo.Permanent(errors.New("order rejected"))
		}
		mu.Lock()
		handled[ev.ID]++
		handledTotal++
		mu.Unlock()
		return nil
	})
	route := h.topic + "/" + OrderPlaced{}.AvroSchema().FullName()
	stop := running(t, c)
	eventually(t, 20*time.Second, "consumer ready", c.Ready)
	if got := c.Stats().Circuits[route]; got != "closed" {
		t.Fatalf("circuit of %s is %q before the outage; want closed (all: %v)", route, got, c.Stats().Circuits)
	}

	ctx := context.Background()
	var ids []string
	publish := func(n int, tag string) {
		for _, p := range h.publish(n, func(i int) string { return fmt.Sprintf("%s-%d", tag, i%40) }) {
			ids = append(ids, p.Metadata.ID)
		}
	}
	publish(100, "before")
	eventually(t, 30*time.Second, "the first 100 handled", func() bool { mu.Lock(); defer mu.Unlock(); return handledTotal == 100 })

	// The outage: events keep coming, a burst first, then a trickle, with a
	// poison record among them.
	down.Store(true)
	outageStart := time.Now()
	publish(50, "burst")
	eventually(t, 10*time.Second, "the breaker open", func() bool { return c.Stats().Circuits[route] == "open" })
	t.Logf("breaker open %v into the outage, after %d handler calls", time.Since(outageStart).Round(time.Millisecond), callsInDown.Load())
	if got := circuitGauge(t, reader, h.topic, OrderPlaced{}.AvroSchema().FullName()); got != int64(tracing.CircuitOpen) {
		t.Errorf("%s = %d while open; want %d", tracing.MetricCircuitState, got, tracing.CircuitOpen)
	}
	if !c.Ready() {
		t.Errorf("not ready while the breaker is open: %v; want ready (the service is healthy, its dependency is not)", c.CheckReady())
	}
	poison, err := h.prod.Publish(ctx, h.topic, "poison", order("permanent", 1))
	if err != nil {
		t.Fatal(err)
	}
	for time.Since(outageStart) < outage {
		publish(5, "trickle")
		time.Sleep(100 * time.Millisecond)
	}
	calls := callsInDown.Load()
	down.Store(false)
	recovered := time.Now()
	publish(50, "after")

	want := len(ids)
	eventually(t, 60*time.Second, "every event handled after the outage", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == want
	})
	eventually(t, 30*time.Second, "the poison record dead-lettered", func() bool { return c.Stats().DeadLettered == 1 })
	t.Logf("outage %v: %d handler calls during it; all %d events handled %v after it", outage, calls, want, time.Since(recovered).Round(time.Millisecond))
	if got := c.Stats().Circuits[route]; got != "closed" {
		t.Errorf("circuit %q after recovery; want closed", got)
	}
	if got := circuitGauge(t, reader, h.topic, OrderPlaced{}.AvroSchema().FullName()); got != int64(tracing.CircuitClosed) {
		t.Errorf("%s = %d after recovery; want %d", tracing.MetricCircuitState, got, tracing.CircuitClosed)
	}
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// At most the threshold's records with their retries, plus what was
	// in flight when it opened, then one probe per cool-down (and one for
	// timer slack).
	bound := int64(threshold*attempts + concurrency + int(outage/coolDown) + 2)
	if calls > bound {
		t.Errorf("%d handler calls during a %v outage; want at most %d (%d records × %d attempts + %d in flight + a probe per %v)",
			calls, outage, bound, threshold, attempts, concurrency, coolDown)
	}
	s := c.Stats()
	if s.Forwarded != 0 {
		t.Errorf("%d records forwarded to a retry topic; want none for an outage the breaker caught", s.Forwarded)
	}
	if s.CircuitWaits == 0 {
		t.Error("no record waited for the breaker")
	}
	mu.Lock()
	for _, id := range ids {
		if handled[id] != 1 {
			t.Errorf("event %s handled %d times; want exactly once", id, handled[id])
		}
	}
	mu.Unlock()
	dls := h.readDeadLetters(t, dlq.Topic(group), 1, 5*time.Second)
	if len(dls) != 1 || dls[0].Original.Offset != poison.Offset || dls[0].Original.Partition != poison.Partition || dls[0].Error.Kind != choreo.KindPermanent {
		t.Fatalf("dead letters %+v; want only the poison record (%d/%d, permanent)", dls, poison.Partition, poison.Offset)
	}

	// Transitions show on the process spans of the records that caused
	// them.
	seen := map[string]bool{}
	for _, sp := range spans.GetSpans() {
		for _, ev := range sp.Events {
			if ev.Name != tracing.EventCircuit {
				continue
			}
			for _, kv := range ev.Attributes {
				if kv.Key == tracing.AttrCircuitState {
					seen[kv.Value.AsString()] = true
				}
			}
		}
	}
	for _, st := range []string{"open", "half-open", "closed"} {
		if !seen[st] {
			t.Errorf("no %s event with %s=%s on a process span (saw %v)", tracing.EventCircuit, tracing.AttrCircuitState, st, seen)
		}
	}
}

// TestCircuitBreakerIgnoresPermanentFailures: a stream of permanent
// failures (poison records) never opens the breaker: each is
// dead-lettered at once.
func TestCircuitBreakerIgnoresPermanentFailures(t *testing.T) {
	h := newHarness(t, 2)
	group := kafkatest.Group(t)
	c := h.consumer(group, consumer.CircuitBreaker(consumer.Breaker{Window: 2}))
	consumer.Handle(c, h.topic, behaviour)
	const n = 40
	ctx := context.Background()
	for i := range n {
		id := "permanent"
		if i%2 == 0 {
			id = "panic"
		}
		if _, err := h.prod.Publish(ctx, h.topic, fmt.Sprintf("k%d", i), order(id, i)); err != nil {
			t.Fatal(err)
		}
	}
	stop := running(t, c)
	eventually(t, 60*time.Second, "every record dead-lettered", func() bool { return c.Stats().DeadLettered == n })
	s := c.Stats()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if s.CircuitWaits != 0 {
		t.Errorf("%d records waited for the breaker; want none: permanent failures must not open it", s.CircuitWaits)
	}
	for route, st := range s.Circuits {
		if st != "closed" {
			t.Errorf("circuit %s is %s; want closed", route, st)
		}
	}
}

// TestRouteCircuitBreakerOff: a route whose breaker is off spends its
// attempts as without one, while the consumer's other settings stand.
func TestRouteCircuitBreakerOff(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	typ := OrderPlaced{}.AvroSchema().FullName()
	c := h.consumer(group, consumer.CircuitBreaker(consumer.Breaker{Window: 1}),
		consumer.RouteCircuitBreaker(h.topic, typ, consumer.Breaker{Off: true}),
		consumer.BlockingRetries(), consumer.Retry(consumer.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Millisecond, Multiplier: 1}))
	consumer.Handle(c, h.topic, behaviour)
	const n = 5
	for i := range n {
		if _, err := h.prod.Publish(context.Background(), h.topic, "k", order("fail", i)); err != nil {
			t.Fatal(err)
		}
	}
	stop := running(t, c)
	eventually(t, 30*time.Second, "every record exhausted", func() bool { return c.Stats().DeadLettered == n })
	s := c.Stats()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if s.CircuitWaits != 0 || len(s.Circuits) != 0 {
		t.Errorf("circuit waits %d, circuits %v; want none with the route's breaker off", s.CircuitWaits, s.Circuits)
	}
}

// TestCircuitBreakerSettingsChecked: settings that cannot work are
// refused by New.
func TestCircuitBreakerSettingsChecked(t *testing.T) {
	reg := newHarness(t, 1).reg
	conn := connection.Config{Brokers: []string{"127.0.0.1:1"}}
	for _, tc := range []struct {
		name string
		opt  consumer.Option
		want string
	}{
		{"ratio over 1", consumer.CircuitBreaker(consumer.Breaker{FailureRatio: 1.5}), "failure ratio"},
		{"negative ratio", consumer.CircuitBreaker(consumer.Breaker{FailureRatio: -1}), "failure ratio"},
		{"min attempts over the window", consumer.CircuitBreaker(consumer.Breaker{Window: 5, MinAttempts: 6}), "min attempts"},
		{"route", consumer.RouteCircuitBreaker("orders", "shop.OrderPlaced", consumer.Breaker{Probes: -1}), "orders/shop.OrderPlaced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := consumer.New(conn, reg, "g", tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v; want an error mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := consumer.New(conn, reg, "g", consumer.CircuitBreaker(consumer.Breaker{Off: true, FailureRatio: 7})); err != nil {
		t.Errorf("an Off breaker's other fields are not checked: %v", err)
	}
	if _, err := consumer.New(conn, reg, "g", consumer.CircuitBreaker(consumer.Breaker{Window: 5})); err != nil {
		t.Errorf("a window under the default min attempts: %v; want min attempts to follow it", err)
	}
}

// TestCircuitBreakerLetsFailingRecordsGo: when every record fails on its
// own (a bad deploy, not an outage), the breaker opens, but no record is
// held for ever: one that failed as the probe MaxAttempts times goes on
// as without a breaker, here to the dead-letter topic.
func TestCircuitBreakerLetsFailingRecordsGo(t *testing.T) {
	h := newHarness(t, 2)
	group := kafkatest.Group(t)
	c := h.consumer(group, consumer.CircuitBreaker(consumer.Breaker{Window: 3, CoolDown: 50 * time.Millisecond}),
		consumer.BlockingRetries(), consumer.Retry(consumer.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Millisecond, Multiplier: 1}))
	consumer.Handle(c, h.topic, behaviour)
	const n = 12
	for i := range n {
		if _, err := h.prod.Publish(context.Background(), h.topic, fmt.Sprintf("k%d", i), order("fail", i)); err != nil {
			t.Fatal(err)
		}
	}
	stop := running(t, c)
	eventually(t, 60*time.Second, "every record dead-lettered", func() bool { return c.Stats().DeadLettered == n })
	s := c.Stats()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if s.CircuitWaits == 0 {
		t.Error("the breaker never held a record; want it open for a route whose every record fails")
	}
	dls := h.readDeadLetters(t, dlq.Topic(group), n, 5*time.Second)
	if len(dls) != n {
		t.Fatalf("%d dead letters; want %d", len(dls), n)
	}
	for _, dl := range dls {
		if dl.Error.Kind != choreo.KindRetriesExhausted {
			t.Errorf("dead letter of offset %d: kind %s; want %s", dl.Original.Offset, dl.Error.Kind, choreo.KindRetriesExhausted)
		}
	}
}
