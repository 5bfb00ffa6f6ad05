package producer_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/internal/testevents"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

// OrderPlaced is the shared test event type.
type OrderPlaced = testevents.OrderPlaced

var orderPlacedSchema = OrderPlaced{}.AvroSchema()

func order(id string) OrderPlaced {
	return OrderPlaced{OrderID: id, CustomerID: "c-1", AmountCents: 1999, Currency: "EUR", Items: 2,
		PlacedAt: time.UnixMilli(1_700_000_000_000).UTC()}
}

// env is a broker, a registry and a topic for one test.
type env struct {
	cluster *kafkatest.Cluster
	reg     *schema.Registry
	topic   string
}

func newEnv(t *testing.T, partitions int32) env {
	t.Helper()
	c := kafkatest.New(t)
	reg, err := schema.NewRegistry([]string{kafkatest.SchemaRegistry(t)})
	if err != nil {
		t.Fatal(err)
	}
	return env{cluster: c, reg: reg, topic: c.Topic(t, partitions)}
}

func (e env) producer(t *testing.T, opts ...producer.Option) *producer.Producer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := producer.New(ctx, connection.Config{Brokers: e.cluster.Seeds()}, e.reg, opts...)
	if err != nil {
		t.Fatalf("producer.New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

// consume reads n records from the topic from the start.
func (e env) consume(t *testing.T, n int) []*kgo.Record {
	t.Helper()
	cl := e.cluster.Client(t, kgo.ConsumeTopics(e.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records before timeout", len(out), n)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func header(r *kgo.Record, key string) (string, int) {
	v, n := "", 0
	for _, h := range r.Headers {
		if h.Key == key {
			v, n = string(h.Value), n+1
		}
	}
	return v, n
}

func TestPublishRoundTripWithHeaders(t *testing.T) {
	e := newEnv(t, 3)
	p := e.producer(t, producer.Source("order-service"))
	ctx := context.Background()
	before := time.Now().Add(-time.Second)
	pub, err := p.Publish(ctx, e.topic, "order-1", order("order-1"))
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	r := e.consume(t, 1)[0]
	if r.Partition != pub.Partition || r.Offset != pub.Offset {
		t.Errorf("record at %d/%d; Publish said %d/%d", r.Partition, r.Offset, pub.Partition, pub.Offset)
	}
	if string(r.Key) != "order-1" {
		t.Errorf("key = %q; want order-1", r.Key)
	}

	var got OrderPlaced
	if _, err := schema.NewCodec(e.reg).Decode(ctx, r.Value, orderPlacedSchema, &got); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if got != order("order-1") {
		t.Errorf("decoded %+v; want %+v", got, order("order-1"))
	}

	want := map[string]string{
		choreo.HeaderSpecVersion:   "1.0",
		choreo.HeaderType:          "choreo.test.OrderPlaced",
		choreo.HeaderSource:        "order-service",
		choreo.HeaderContentType:   choreo.ContentTypeAvro,
		choreo.HeaderID:            pub.Metadata.ID,
		choreo.HeaderCorrelationID: pub.Metadata.ID, // a first event starts its own transaction
	}
	for k, v := range want {
		if got, n := header(r, k); got != v || n != 1 {
			t.Errorf("header %s = %q (%d times); want %q once", k, got, n, v)
		}
	}
	if _, n := header(r, choreo.HeaderCausationID); n != 0 {
		t.Errorf("a first event has a %s header; want none", choreo.HeaderCausationID)
	}
	id, _ := header(r, choreo.HeaderID)
	if u, err := uuid.Parse(id); err != nil || u.Version() != 7 {
		t.Errorf("ce_id %q: want a UUIDv7 (%v)", id, err)
	}
	ts, _ := header(r, choreo.HeaderTime)
	tm, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil || tm.Before(before) || tm.After(time.Now().Add(time.Second)) {
		t.Errorf("ce_time %q: want RFC 3339 near now (%v)", ts, err)
	}
}

func TestCorrelationAndCausationInherited(t *testing.T) {
	e := newEnv(t, 1)
	p := e.producer(t)
	handled := choreo.Metadata{ID: "evt-parent", CorrelationID: "corr-42"}
	ctx := choreo.WithMetadata(context.Background(), handled)
	pub, err := p.Publish(ctx, e.topic, "k", order("o-2"))
	if err != nil {
		t.Fatal(err)
	}
	if pub.Metadata.CorrelationID != "corr-42" || pub.Metadata.CausationID != "evt-parent" {
		t.Errorf("metadata %+v; want correlation corr-42, causation evt-parent", pub.Metadata)
	}
	r := e.consume(t, 1)[0]
	if v, _ := header(r, choreo.HeaderCorrelationID); v != "corr-42" {
		t.Errorf("ce_correlationid = %q; want corr-42", v)
	}
	if v, _ := header(r, choreo.HeaderCausationID); v != "evt-parent" {
		t.Errorf("ce_causationid = %q; want evt-parent", v)
	}
	if v, _ := header(r, choreo.HeaderID); v == "evt-parent" || v == "" {
		t.Errorf("ce_id = %q; want a new id", v)
	}
}

func TestTraceContextInjected(t *testing.T) {
	e := newEnv(t, 1)
	p := e.producer(t, producer.Propagator(propagation.TraceContext{}))
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0xab, 1}, SpanID: trace.SpanID{0xcd, 2}, TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	if _, err := p.Publish(ctx, e.topic, "k", order("o-3")); err != nil {
		t.Fatal(err)
	}
	r := e.consume(t, 1)[0]
	tp, n := header(r, choreo.HeaderTraceParent)
	if n != 1 || !strings.Contains(tp, sc.TraceID().String()) {
		t.Errorf("traceparent = %q (%d); want one carrying trace %s", tp, n, sc.TraceID())
	}
}

func TestInvalidEventRejectedBeforeSending(t *testing.T) {
	e := newEnv(t, 1)
	p := e.producer(t)
	bad := order("o-4")
	bad.Currency = "DOGECOIN" // not an enum symbol
	_, err := p.Publish(context.Background(), e.topic, "k", bad)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "currency") {
		t.Fatalf("err = %v; want an error naming the field currency", err)
	}
	if _, err := p.Publish(context.Background(), e.topic, "k", nil); err == nil {
		t.Error("nil event: want an error")
	}
	// Nothing reached the topic.
	ends, err := e.cluster.Admin().ListEndOffsets(context.Background(), e.topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup(e.topic, 0); o.Offset != 0 {
		t.Errorf("topic end offset %d after rejected events; want 0", o.Offset)
	}
}

func TestProductionModeFailsFastOnUnregisteredSchema(t *testing.T) {
	e := newEnv(t, 1)
	ctx := context.Background()
	conn := connection.Config{Brokers: e.cluster.Seeds()}
	_, err := producer.New(ctx, conn, e.reg, producer.Production(), producer.Require(e.topic, OrderPlaced{}))
	if !errors.Is(err, schema.ErrNotRegistered) {
		t.Fatalf("New in production mode with an unregistered schema: %v; want ErrNotRegistered", err)
	}
	if _, err := e.reg.Register(ctx, e.topic+"-value", orderPlacedSchema); err != nil {
		t.Fatal(err)
	}
	p := e.producer(t, producer.Production(), producer.Require(e.topic, OrderPlaced{}))
	if _, err := p.Publish(ctx, e.topic, "k", order("o-5")); err != nil {
		t.Fatalf("publish after registration: %v", err)
	}
}

func TestRequireRefusesIncompatibleSchema(t *testing.T) {
	e := newEnv(t, 1)
	ctx := context.Background()
	old := schema.MustParse(`{"type":"record","name":"OrderPlaced","namespace":"choreo.test","fields":[{"name":"order_id","type":"long"}]}`)
	if _, err := e.reg.Register(ctx, e.topic+"-value", old); err != nil {
		t.Fatal(err)
	}
	_, err := producer.New(ctx, connection.Config{Brokers: e.cluster.Seeds()}, e.reg, producer.Require(e.topic, OrderPlaced{}))
	if err == nil || !errors.Is(err, schema.ErrIncompatibleSchema) {
		t.Fatalf("New with an incompatible schema: %v; want ErrIncompatibleSchema", err)
	}
}

func TestPublishAsyncFlushAndClose(t *testing.T) {
	e := newEnv(t, 3)
	p := e.producer(t)
	ctx := context.Background()
	const n = 500
	var mu sync.Mutex
	var errs []error
	perKey := map[string][]int64{}
	partOf := map[string]int32{}
	for i := range n {
		key := []string{"a", "b", "c", "d"}[i%4]
		p.PublishAsync(ctx, e.topic, key, order(key), func(pub producer.Published, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			if prev, ok := partOf[key]; ok && prev != pub.Partition {
				errs = append(errs, errors.New("key "+key+" spread over partitions"))
			}
			partOf[key] = pub.Partition
			perKey[key] = append(perKey[key], pub.Offset)
		})
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("%d publishes failed, first: %v", len(errs), errs[0])
	}
	total := 0
	for key, offs := range perKey {
		total += len(offs)
		for i := 1; i < len(offs); i++ {
			if offs[i] <= offs[i-1] {
				t.Errorf("key %s: offsets out of order: %v", key, offs)
				break
			}
		}
	}
	if total != n {
		t.Fatalf("%d acknowledged after Close; want %d", total, n)
	}
	if _, err := p.Publish(ctx, e.topic, "k", order("late")); !errors.Is(err, producer.ErrClosed) {
		t.Errorf("Publish after Close: %v; want ErrClosed", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	ctx := context.Background()
	reg, err := schema.NewRegistry([]string{"http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := producer.New(ctx, connection.Config{}, reg); err == nil || !strings.Contains(err.Error(), "no seed brokers") {
		t.Errorf("no brokers: %v; want a clear error", err)
	}
	if _, err := producer.New(ctx, connection.Config{Brokers: []string{"127.0.0.1:1"}}, nil); err == nil {
		t.Error("nil registry: want an error")
	}
}

// TestPublishDoesNotWaitOutTheLinger: a synchronous Publish sends its
// record at once. With a linger of 10 seconds, a Publish that waited it
// out would take 10 seconds; each of these must return long before.
func TestPublishDoesNotWaitOutTheLinger(t *testing.T) {
	e := newEnv(t, 1)
	p := e.producer(t, producer.Source("test"), producer.ClientOptions(kgo.ProducerLinger(10*time.Second)))
	ctx := context.Background()
	for i := range 3 {
		start := time.Now()
		pub, err := p.Publish(ctx, e.topic, "k", order("o"))
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("publish %d took %v with a 10s linger; want it sent at once", i, took)
		}
		if pub.Offset != int64(i) {
			t.Fatalf("publish %d landed at offset %d", i, pub.Offset)
		}
	}
}
