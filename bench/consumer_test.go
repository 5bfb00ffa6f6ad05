package bench

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	nooptrace "go.opentelemetry.io/otel/trace/noop"

	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/schema"
)

// consumeKeys is how many distinct keys the consume backlog has: many, as
// for order ids, so per-key ordering leaves the workers plenty to do.
const consumeKeys = 100_000

// consumePartitions is the partition count of the consume backlog.
const consumePartitions = 12

// BenchmarkConsume measures consuming a backlog of BENCH_EVENTS events
// (default 100,000; bench/run.sh uses 1,000,000) of about 200 bytes of Avro
// on 12 partitions, produced once before the measurement. Each iteration of
// a sub-benchmark consumes the whole backlog with a new consumer group:
//
//   - raw: a franz-go consumer-group poll loop that decodes every value
//     with schema.Codec.Decode into the event struct, commits by hand
//     (every second, as the choreo consumer does), one goroutine;
//   - choreo: the choreo consumer with a typed handler, in-memory
//     idempotency and otherwise default options (Concurrency 16, per-key
//     ordering, MaxInFlight 1024), with no-op OpenTelemetry globals (what
//     the default globals amount to; see useNoopGlobals);
//   - choreo-otel: the same with SDK tracer and meter providers installed as
//     globals (every span sampled, batched to an exporter that discards,
//     metrics aggregated by a reader nobody collects).
//
// The three alternate for BENCH_ROUNDS rounds (default 1), so that machine
// noise hits them alike. The measured time runs from creating the client to
// the last record handled (joining the group included; the shutdown and
// final commit are not). Each reports records/s.
func BenchmarkConsume(b *testing.B) {
	n := envInt(b, "BENCH_EVENTS", 100_000)
	rounds := envInt(b, "BENCH_ROUNDS", 1)
	e := newEnv(b)
	topic := e.cluster.Topic(b, consumePartitions)
	produceBacklog(b, e, topic, n, consumeKeys)
	useNoopGlobals()
	b.Logf("load average before measuring: %s", loadavg())

	run := func(name string, consume func(b *testing.B, e *env, topic string, n int) time.Duration) {
		b.Run(name, func(b *testing.B) {
			var total time.Duration
			for range b.N {
				total += consume(b, e, topic, n)
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "records/s")
			b.Logf("%s: %d records in %v (load average %s)", name, n*b.N, total.Round(time.Millisecond), loadavg())
		})
	}
	for range rounds {
		run("raw", consumeRaw)
		run("choreo", consumeChoreo)
		run("choreo-otel", consumeChoreoOTel)
	}
}

// consumeRaw consumes the n records of topic with a plain franz-go group
// consumer, decoding each value, and returns the measured time.
func consumeRaw(b *testing.B, e *env, topic string, n int) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	codec := schema.NewCodec(e.reg)
	reader := OrderPlaced{}.AvroSchema()
	group := kafkatest.Group(b)

	stop := profile(b, b.Name())
	b.ResetTimer()
	start := time.Now()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(e.conn.Brokers...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
	)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	var sum int64
	count := 0
	lastCommit := time.Now()
	var decodeErr error
	for count < n {
		fs := cl.PollFetches(ctx)
		if fs.IsClientClosed() || ctx.Err() != nil {
			b.Fatalf("raw consumer stopped after %d of %d records: %v", count, n, ctx.Err())
		}
		fs.EachError(func(t string, p int32, err error) { b.Fatalf("fetch %s/%d: %v", t, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			var ev OrderPlaced
			if _, err := codec.Decode(ctx, r.Value, reader, &ev); err != nil && decodeErr == nil {
				decodeErr = err
			}
			sum += ev.AmountCents
			count++
		})
		if decodeErr != nil {
			b.Fatalf("decode: %v", decodeErr)
		}
		if time.Since(lastCommit) >= time.Second {
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				b.Fatalf("commit: %v", err)
			}
			lastCommit = time.Now()
		}
	}
	took := time.Since(start)
	b.StopTimer()
	stop()
	if err := cl.CommitUncommittedOffsets(ctx); err != nil {
		b.Fatalf("final commit: %v", err)
	}
	if count != n || sum == 0 {
		b.Fatalf("raw consumer: got %d records; want %d", count, n)
	}
	return took
}

// consumeChoreo consumes the n records of topic with the choreo consumer
// and returns the measured time.
func consumeChoreo(b *testing.B, e *env, topic string, n int) time.Duration {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var handled, sum atomic.Int64
	all := make(chan struct{})

	stop := profile(b, b.Name())
	b.ResetTimer()
	start := time.Now()
	c, err := consumer.New(e.conn, e.reg, kafkatest.Group(b), consumer.Logger(quietLogger))
	if err != nil {
		b.Fatal(err)
	}
	consumer.Handle(c, topic, func(_ context.Context, ev consumer.Event[OrderPlaced]) error {
		sum.Add(ev.Data.AmountCents)
		if handled.Add(1) == int64(n) {
			close(all)
		}
		return nil
	})
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()
	select {
	case <-all:
	case err := <-runErr:
		b.Fatalf("Run returned after %d of %d records: %v", handled.Load(), n, err)
	case <-time.After(10 * time.Minute):
		b.Fatalf("choreo consumer: %d of %d records after 10 minutes; stats %+v", handled.Load(), n, c.Stats())
	}
	took := time.Since(start)
	b.StopTimer()
	stop()
	cancel()
	if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
		b.Fatalf("Run: %v", err)
	}
	if s := c.Stats(); s.DeadLettered != 0 || s.Skipped != 0 || s.Duplicates != 0 || s.Handled != int64(n) {
		b.Fatalf("choreo consumer stats %+v; want %d handled and nothing else", s, n)
	}
	return took
}

// consumeChoreoOTel is consumeChoreo with OpenTelemetry SDK providers as the
// process globals.
func consumeChoreoOTel(b *testing.B, e *env, topic string, n int) time.Duration {
	b.Helper()
	restore := installSDK(b)
	defer restore()
	return consumeChoreo(b, e, topic, n)
}

// discardExporter is a span exporter that drops what it is given.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// installSDK sets SDK tracer and meter providers and the W3C propagators as
// the OpenTelemetry globals, as tracing.Setup does in a service, with every
// span sampled and exported to nowhere through the usual batching processor,
// and metrics aggregated by a manual reader. It returns a function that
// shuts them down and puts the previous globals back.
func installSDK(tb testing.TB) (restore func()) {
	tb.Helper()
	prevTP, prevMP, prevProp := otel.GetTracerProvider(), otel.GetMeterProvider(), otel.GetTextMapPropagator()
	if _, ok := prevTP.(nooptrace.TracerProvider); !ok {
		tb.Fatalf("installSDK: the tracer provider is %T; call useNoopGlobals first", prevTP)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithBatcher(discardExporter{}),
	)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = tp.Shutdown(ctx)
		_ = mp.Shutdown(ctx)
		otel.SetTracerProvider(prevTP)
		otel.SetMeterProvider(prevMP)
		otel.SetTextMapPropagator(prevProp)
	}
}

// useNoopGlobals installs no-op tracer and meter providers as the
// OpenTelemetry globals. The default globals delegate, for good, to the
// first providers ever set: without this, the SDK providers of a
// choreo-otel round would stay behind the default globals (shut down, but
// still making spans) and tax the choreo rounds after it. With no-op
// providers set first, every choreo round runs with the same globals.
func useNoopGlobals() {
	otel.SetTracerProvider(nooptrace.NewTracerProvider())
	otel.SetMeterProvider(noopmetric.NewMeterProvider())
}
