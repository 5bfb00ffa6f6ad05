package consumer

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/internal/testevents"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/schema"
)

// The scheduler and pipeline benchmarks push records straight into a
// running consumer's dispatch, as its poll loop does, and let its own
// workers take them: they measure the consumer's per-record work without
// the broker's (no fetch, no decompression, no network). The consumer runs
// for real on an embedded broker (Run, on an empty topic) only so that
// its runtime is built by Run itself and stays in step with it.

// benchPartitions is the partition count of the benchmark topic.
const benchPartitions = 12

// benchEnv is an embedded broker and registry shared by the consumers of
// one top-level benchmark.
type benchEnv struct {
	cluster *kafkatest.Cluster
	reg     *schema.Registry
}

// newBenchEnv starts them; they stop when b's function returns (call it
// in the top-level benchmark, not in a sub-benchmark, which the testing
// package runs several times).
func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	cluster := kafkatest.New(b, kafkatest.EmbeddedOnly("benchmarks the consumer without a broker's cost"))
	reg, err := schema.NewRegistry([]string{kafkatest.SchemaRegistry(b)})
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{cluster: cluster, reg: reg}
}

// benchConsumer is a running consumer whose runtime a benchmark feeds.
type benchConsumer struct {
	c          *Consumer
	rt         *runtime
	topic      string
	codec      *schema.Codec
	id         int // schema id of testevents.OrderPlaced under topic
	handled    atomic.Int64
	offsetBase int // records built so far: the next record's index
}

// newBenchConsumer runs a consumer with opts and a handler of
// testevents.OrderPlaced that only counts, on an empty topic of its own,
// and waits until it owns every partition. It stops when b's function
// returns.
func (e *benchEnv) newBenchConsumer(b *testing.B, opts ...Option) *benchConsumer {
	b.Helper()
	reg := e.reg
	bc := &benchConsumer{topic: e.cluster.Topic(b, benchPartitions), codec: schema.NewCodec(reg)}
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	if bc.id, err = reg.Register(ctx, schema.TopicNameStrategy(bc.topic, nil), testevents.OrderPlaced{}.AvroSchema()); err != nil {
		b.Fatal(err)
	}
	opts = append([]Option{Logger(slog.New(slog.DiscardHandler))}, opts...)
	c, err := New(connection.Config{Brokers: e.cluster.Seeds()}, reg, kafkatest.Group(b), opts...)
	if err != nil {
		b.Fatal(err)
	}
	Handle(c, bc.topic, func(context.Context, Event[testevents.OrderPlaced]) error {
		bc.handled.Add(1)
		return nil
	})
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
			b.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for c.Stats().Assigned < benchPartitions || c.rt.Load() == nil {
		if time.Now().After(deadline) {
			b.Fatalf("consumer owns %d of %d partitions after 30s", c.Stats().Assigned, benchPartitions)
		}
		time.Sleep(10 * time.Millisecond)
	}
	bc.c, bc.rt = c, c.rt.Load()
	return bc
}

// records returns n records of the benchmark topic from the i-th on, as
// the choreo producer writes them, with keys cycling through keys ids.
// Each has an id of its own, so the idempotency store sees no duplicate.
func (bc *benchConsumer) records(b *testing.B, from, n, keys int) []*kgo.Record {
	b.Helper()
	shared := func(k, v string) kgo.RecordHeader { return kgo.RecordHeader{Key: k, Value: []byte(v)} }
	spec, typ, src, ct := shared(choreo.HeaderSpecVersion, choreo.SpecVersion), shared(choreo.HeaderType, "choreo.test.OrderPlaced"),
		shared(choreo.HeaderSource, "orders"), shared(choreo.HeaderContentType, choreo.ContentTypeAvro)
	tm := shared(choreo.HeaderTime, time.Unix(1_760_000_000, 0).UTC().Format(time.RFC3339Nano))
	out := make([]*kgo.Record, n)
	for j := range out {
		i := from + j
		key := "order-" + strconv.Itoa(i%keys)
		v, err := bc.codec.Encode(bc.id, testevents.OrderPlaced{}.AvroSchema(), testevents.OrderPlaced{
			OrderID: key, CustomerID: "c-" + strconv.Itoa(i%1000), AmountCents: int64(100 + i%1000), Currency: "EUR",
			Items: int32(i % 7), PlacedAt: time.UnixMilli(1_760_000_000_000 + int64(i)).UTC(),
		})
		if err != nil {
			b.Fatal(err)
		}
		id := []byte(choreo.NewID())
		out[j] = &kgo.Record{
			Topic: bc.topic, Partition: int32(i % benchPartitions), Offset: int64(i / benchPartitions),
			Key: []byte(key), Value: v,
			Headers: []kgo.RecordHeader{spec, {Key: choreo.HeaderID, Value: id}, typ, src, tm,
				{Key: choreo.HeaderCorrelationID, Value: id}, ct},
		}
	}
	return out
}

// feed dispatches rs as the poll loop would, within the consumer's
// in-flight cap.
func (bc *benchConsumer) feed(rs []*kgo.Record) {
	c, rt := bc.c, bc.rt
	limit := int64(c.cfg.maxInFlight)
	var tick *time.Ticker // made once, so that waiting allocates nothing per record
	for _, r := range rs {
		for c.stats.inFlight.Load() >= limit {
			if tick == nil {
				tick = time.NewTicker(time.Millisecond)
				defer tick.Stop()
			}
			select { // the poll loop waits on rt.space too: do not rely on getting the signal
			case <-rt.space:
			case <-tick.C:
			}
		}
		rt.dispatch(r, rt.partitionOf(r), 0)
	}
}

// waitIdle waits until nothing is in flight.
func (bc *benchConsumer) waitIdle(b *testing.B) {
	deadline := time.Now().Add(time.Minute)
	for bc.c.stats.inFlight.Load() > 0 {
		if time.Now().After(deadline) {
			b.Fatalf("%d records still in flight after a minute; stats %+v", bc.c.stats.inFlight.Load(), bc.c.Stats())
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// chunk is how many records the benchmarks build at a time, outside the
// measurement.
const chunk = 16_384

// run pushes b.N records through the consumer: each chunk is built with
// the timer stopped, then dispatched and waited for. prepare, if not nil,
// is applied to each chunk before it is dispatched (untimed).
func (bc *benchConsumer) run(b *testing.B, keys int, prepare func([]*kgo.Record)) {
	b.ReportAllocs()
	b.ResetTimer()
	for from := 0; from < b.N; from += chunk {
		b.StopTimer()
		rs := bc.records(b, bc.offsetBase+from, min(chunk, b.N-from), keys)
		if prepare != nil {
			prepare(rs)
		}
		b.StartTimer()
		bc.feed(rs)
		bc.waitIdle(b)
	}
	b.StopTimer()
	bc.offsetBase += b.N
}

// BenchmarkScheduler measures handing records from dispatch to the
// workers through the lanes (the lane map, the ready queue, the in-flight
// counts, a worker's turn) with nothing else: the records' partitions are
// stopped, so a worker takes each off its lane without handling it (as for
// a revoked partition) and the lane moves on. Concurrency is the default
// (16).
//
//   - per-key: 100,000 keys over 12 partitions (the consume benchmark's);
//   - per-key-hot: one key: every record waits for the one before;
//   - per-partition: one lane per partition;
//   - unordered: a lane per record.
func BenchmarkScheduler(b *testing.B) {
	e := newBenchEnv(b)
	for _, tc := range []struct {
		name  string
		keys  int
		order Ordering
	}{
		{"per-key", 100_000, PerKey},
		{"per-key-hot", 1, PerKey},
		{"per-partition", 100_000, PerPartition},
		{"unordered", 100_000, Unordered},
	} {
		bc := e.newBenchConsumer(b, WithOrdering(tc.order))
		b.Run(tc.name, func(b *testing.B) {
			bc.run(b, tc.keys, func(rs []*kgo.Record) {
				// Records of partitions 1000+ of the topic: tracked, never
				// committed, and stopped, so never handled.
				for _, r := range rs {
					r.Partition += 1000
					bc.rt.partitionOf(r).stop()
				}
			})
			if s := bc.c.Stats(); s.Handled != 0 {
				b.Fatalf("%d records handled; want none", s.Handled)
			}
		})
	}
}

// BenchmarkPipeline measures the consumer's whole per-record work but the
// broker's: dispatch, the lanes, a worker, reading the metadata, the
// process span (no-op globals), the in-memory idempotency store, the
// handler deadline, the decode of a six-field Avro value, a handler that
// counts, the done-tracking and the metrics, with every option at its
// default. allocs/op is what the consumer allocates per event, the
// decode's included. Records have 100,000 keys over 12 partitions.
func BenchmarkPipeline(b *testing.B) {
	bc := newBenchEnv(b).newBenchConsumer(b)
	b.Run("defaults", func(b *testing.B) {
		before := bc.handled.Load()
		bc.run(b, 100_000, nil)
		if got := bc.handled.Load() - before; got != int64(b.N) {
			b.Fatalf("%d records handled; want %d (stats %+v)", got, b.N, bc.c.Stats())
		}
	})
}
