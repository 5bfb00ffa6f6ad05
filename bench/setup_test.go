package bench

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

//go:embed testdata/order_placed.avsc
var schemaFiles embed.FS

var orderPlacedSchema = must(schema.ParseFile(schemaFiles, "testdata/order_placed.avsc"))

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// OrderPlaced is the benchmark event: six fields, about 200 bytes of Avro
// (with the 5-byte wire-format header) for the values built by order.
type OrderPlaced struct {
	OrderID         string    `avro:"order_id"`
	CustomerEmail   string    `avro:"customer_email"`
	ShippingAddress string    `avro:"shipping_address"`
	AmountCents     int64     `avro:"amount_cents"`
	Currency        string    `avro:"currency"`
	PlacedAt        time.Time `avro:"placed_at"`
}

// AvroSchema binds OrderPlaced to its schema.
func (OrderPlaced) AvroSchema() *schema.Schema { return orderPlacedSchema }

// address pads the event to a realistic size.
const address = "Flat 4B, 221 Long Street Name, Some Neighbourhood, Greater Metropolitan Area, 10115 Berlin, Federal Republic of Germany, c/o Reception, Gate 7"

// keyOf returns the key of the i-th event when there are keys distinct keys.
func keyOf(i, keys int) string { return fmt.Sprintf("order-%08d", i%keys) }

// order returns the i-th benchmark event, keyed as keyOf says.
func order(i, keys int) OrderPlaced {
	return OrderPlaced{
		OrderID:         keyOf(i, keys),
		CustomerEmail:   fmt.Sprintf("customer-%07d@example.com", i%1_000_003),
		ShippingAddress: address,
		AmountCents:     int64(100 + i%100_000),
		Currency:        [...]string{"EUR", "USD", "GBP"}[i%3],
		PlacedAt:        time.UnixMilli(1_760_000_000_000 + int64(i)).UTC(),
	}
}

// envInt reads a positive integer from the environment, or returns def.
func envInt(tb testing.TB, name string, def int) int {
	tb.Helper()
	s := strings.TrimSpace(os.Getenv(name))
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// env is an embedded broker and registry shared by one benchmark.
type env struct {
	cluster *kafkatest.Cluster
	regURL  string
	reg     *schema.Registry
	conn    connection.Config
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	c := kafkatest.New(tb)
	url := kafkatest.SchemaRegistry(tb)
	reg, err := schema.NewRegistry([]string{url})
	if err != nil {
		tb.Fatal(err)
	}
	return &env{cluster: c, regURL: url, reg: reg, conn: connection.Config{Brokers: c.Seeds()}}
}

// produceOpts are the franz-go producer options both the choreo producer
// and the raw client use, so that batching is the same for both: franz-go's
// default linger, made explicit, and acks=all (the choreo producer's
// setting; idempotent writes are franz-go's default).
func produceOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.ProducerLinger(10 * time.Millisecond),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	}
}

// quietLogger is the logger given to consumers, so that the benchmark output
// stays readable. The consumer logs nothing per record at its default level.
var quietLogger = slog.New(slog.DiscardHandler)

// template is a record as the choreo producer writes it: its headers and the
// schema id of its value.
type template struct {
	headers  []kgo.RecordHeader
	schemaID int
}

// newTemplate builds one record with the choreo producer (registering the
// schema under topic's subject) and returns its headers and schema id. The
// record carries a W3C traceparent, as a record from a traced service does.
func newTemplate(tb testing.TB, e *env, topic string) template {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := producer.New(ctx, e.conn, e.reg, producer.Source("bench-orders"),
		producer.Propagator(propagation.TraceContext{}))
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = p.Close(ctx) }()
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	rec, _, err := p.Record(trace.ContextWithSpanContext(ctx, sc), topic, keyOf(0, 1), order(0, 1))
	if err != nil {
		tb.Fatal(err)
	}
	id, _, err := schema.ParseHeader(rec.Value)
	if err != nil {
		tb.Fatal(err)
	}
	return template{headers: rec.Headers, schemaID: id}
}

// withID returns a copy of the template's headers with a fresh ce_id (and,
// as for an event that starts a transaction, the same correlation id).
func (t template) withID() []kgo.RecordHeader {
	id := []byte(choreo.NewID())
	hs := make([]kgo.RecordHeader, len(t.headers))
	copy(hs, t.headers)
	for i := range hs {
		switch hs[i].Key {
		case choreo.HeaderID, choreo.HeaderCorrelationID:
			hs[i].Value = id
		}
	}
	return hs
}

// produceBacklog writes n events to topic with a raw franz-go client: values
// encoded up front with the schema codec, headers copied from a choreo
// template with a fresh ce_id each. Keys cycle through keys distinct ids.
func produceBacklog(tb testing.TB, e *env, topic string, n, keys int) {
	tb.Helper()
	start := time.Now()
	tpl := newTemplate(tb, e, topic)
	codec := schema.NewCodec(e.reg)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.conn.Brokers...), kgo.MaxBufferedRecords(50_000)}, produceOpts()...)...)
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var failed atomic.Int64
	var firstErr atomic.Value
	var size int64
	for i := range n {
		v, err := codec.Encode(tpl.schemaID, orderPlacedSchema, order(i, keys))
		if err != nil {
			tb.Fatal(err)
		}
		size += int64(len(v))
		r := &kgo.Record{Topic: topic, Key: []byte(keyOf(i, keys)), Value: v, Headers: tpl.withID()}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil && failed.Add(1) == 1 {
				firstErr.Store(err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		tb.Fatal(err)
	}
	if failed.Load() > 0 {
		tb.Fatalf("backlog: %d records failed; first: %v", failed.Load(), firstErr.Load())
	}
	hsize := 0
	for _, h := range tpl.withID() {
		hsize += len(h.Key) + len(h.Value)
	}
	tb.Logf("backlog: %d events on %s in %v; mean value %d B, headers %d B, key %d B",
		n, topic, time.Since(start).Round(time.Millisecond), size/int64(n), hsize, len(keyOf(0, keys)))
}

// profile starts a CPU profile named name in the BENCH_CPUPROFILE directory,
// if that is set, and returns the function that stops it.
func profile(tb testing.TB, name string) (stop func()) {
	dir := os.Getenv("BENCH_CPUPROFILE")
	if dir == "" {
		return func() {}
	}
	name = strings.NewReplacer("/", "_", "#", "_").Replace(name)
	f, err := os.Create(filepath.Join(dir, name+".pprof"))
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		tb.Logf("no CPU profile for %s: %v", name, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

// loadavg returns the first three fields of /proc/loadavg, for the logs.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := bytes.Fields(b)
	if len(f) < 3 {
		return "unknown"
	}
	return string(bytes.Join(f[:3], []byte(" ")))
}
