package bench

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

// produceDistinct is how many distinct events (and keys) the producer
// benchmarks cycle through; building them is outside the measurement.
const produceDistinct = 4096

// produceCounter counts failed produces and remembers the first error.
type produceCounter struct {
	failed atomic.Int64
	first  atomic.Value
}

func (c *produceCounter) add(err error) {
	if err != nil && c.failed.Add(1) == 1 {
		c.first.Store(err)
	}
}

func (c *produceCounter) check(b *testing.B) {
	if n := c.failed.Load(); n > 0 {
		b.Fatalf("%d of %d records failed; first: %v", n, b.N, c.first.Load())
	}
}

// reportRate reports records/s over the benchmark's measured time.
func reportRate(b *testing.B, records int) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(records)/s, "records/s")
	}
}

// BenchmarkPublishAsync measures the choreo producer: each op is one
// PublishAsync of a 6-field Avro event (encoded, given its headers, a send
// span and a metric point by the producer); the measurement ends when Flush
// has every record acknowledged. Compare with BenchmarkRawFranzGoProduce.
func BenchmarkPublishAsync(b *testing.B) {
	e := newEnv(b)
	topic := e.cluster.Topic(b, 12)
	ctx := context.Background()
	p, err := producer.New(ctx, e.conn, e.reg, producer.Source("bench-orders"), producer.ClientOptions(produceOpts()...))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = p.Close(ctx) }()
	events := make([]OrderPlaced, produceDistinct)
	keys := make([]string, produceDistinct)
	for i := range events {
		events[i], keys[i] = order(i, produceDistinct), keyOf(i, produceDistinct)
	}
	// Warm up: register the schema, load metadata, connect.
	if _, err := p.Publish(ctx, topic, keys[0], events[0]); err != nil {
		b.Fatal(err)
	}
	var errs produceCounter
	done := func(_ producer.Published, err error) { errs.add(err) }

	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		j := i % produceDistinct
		p.PublishAsync(ctx, topic, keys[j], events[j], done)
	}
	if err := p.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	errs.check(b)
	reportRate(b, b.N)
}

// BenchmarkRawFranzGoProduce is the baseline of BenchmarkPublishAsync: each
// op is one kgo.Client.Produce of the same events, encoded before the
// measurement, with the headers a choreo record has (one shared copy), on a
// client with the same options. The measurement ends when Flush returns.
func BenchmarkRawFranzGoProduce(b *testing.B) {
	e := newEnv(b)
	topic := e.cluster.Topic(b, 12)
	ctx := context.Background()
	tpl := newTemplate(b, e, topic)
	codec := schema.NewCodec(e.reg)
	values := make([][]byte, produceDistinct)
	keys := make([][]byte, produceDistinct)
	for i := range values {
		v, err := codec.Encode(tpl.schemaID, orderPlacedSchema, order(i, produceDistinct))
		if err != nil {
			b.Fatal(err)
		}
		values[i], keys[i] = v, []byte(keyOf(i, produceDistinct))
	}
	headers := tpl.withID()
	cl := e.cluster.Client(b, produceOpts()...)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(wctx, &kgo.Record{Topic: topic, Key: keys[0], Value: values[0], Headers: headers}).FirstErr(); err != nil {
		b.Fatal(err)
	}
	var errs produceCounter
	done := func(_ *kgo.Record, err error) { errs.add(err) }

	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		j := i % produceDistinct
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: keys[j], Value: values[j], Headers: headers}, done)
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	errs.check(b)
	reportRate(b, b.N)
}
