package benchkit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

// source is the ce_source of the events a run publishes.
const source = "choreo-bench"

// quietLogger is the choreo consumers' logger: the progress lines are the
// run's output. The consumer logs nothing per record at its default level.
var quietLogger = slog.New(slog.DiscardHandler)

// produceOpts are the franz-go producer options of both the choreo
// producer and the raw clients, so that both batch alike: franz-go's
// default linger, made explicit, and acks=all (the choreo producer's
// setting; idempotent writes are franz-go's default).
func produceOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.ProducerLinger(10 * time.Millisecond),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	}
}

// clientOpts returns the options that reach the cluster, and extra.
func (r *runner) clientOpts(extra ...kgo.Opt) ([]kgo.Opt, error) {
	opts, err := r.env.Conn.ClientOptions()
	if err != nil {
		return nil, fmt.Errorf("kafka settings: %w", err)
	}
	return append(opts, extra...), nil
}

// newProducer returns a choreo producer with the benchmark's options.
func (r *runner) newProducer(ctx context.Context) (*producer.Producer, error) {
	p, err := producer.New(ctx, r.env.Conn, r.env.Registry, producer.Source(source), producer.ClientOptions(produceOpts()...))
	if err != nil {
		return nil, fmt.Errorf("choreo producer: %w", err)
	}
	return p, nil
}

// template is a record as the choreo producer writes it to a topic: its
// headers and the schema id of its value.
type template struct {
	headers  []kgo.RecordHeader
	schemaID int
}

// newTemplate builds one record with p (registering the schema under
// topic's subject) and keeps its headers and schema id.
func (r *runner) newTemplate(ctx context.Context, p *producer.Producer, topic string) (template, error) {
	rec, _, err := p.Record(ctx, topic, Key(0, 1), r.events.Event(0, 1))
	if err != nil {
		return template{}, fmt.Errorf("build a record: %w", err)
	}
	id, _, err := schema.ParseHeader(rec.Value)
	if err != nil {
		return template{}, fmt.Errorf("build a record: %w", err)
	}
	return template{headers: rec.Headers, schemaID: id}, nil
}

// withID returns a copy of the template's headers with a fresh ce_id, the
// correlation id of an event that starts a transaction.
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

// produceCounter counts acknowledged and failed records, remembering the
// first failure.
type produceCounter struct {
	acked  *atomic.Int64
	failed atomic.Int64
	first  atomic.Value
}

func (c *produceCounter) done(err error) {
	if err != nil {
		if c.failed.Add(1) == 1 {
			c.first.Store(err)
		}
		return
	}
	c.acked.Add(1)
}

func (c *produceCounter) err(total int) error {
	if n := c.failed.Load(); n > 0 {
		first, _ := c.first.Load().(error)
		return fmt.Errorf("%d of %d records failed; first: %w", n, total, first)
	}
	return nil
}

// backlog writes n events to topic with a raw client: values encoded with
// the schema codec, headers those of a choreo record with a fresh ce_id
// each, keys cycling through keys distinct ids. It counts acknowledged
// records in count.
func (r *runner) backlog(ctx context.Context, topic string, n, keys int, count *atomic.Int64) (measurement, error) {
	p, err := r.newProducer(ctx)
	if err != nil {
		return measurement{}, err
	}
	tpl, err := r.newTemplate(ctx, p, topic)
	_ = p.Close(ctx)
	if err != nil {
		return measurement{}, err
	}
	opts, err := r.clientOpts(append(produceOpts(), kgo.MaxBufferedRecords(50_000))...)
	if err != nil {
		return measurement{}, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return measurement{}, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	codec := schema.NewCodec(r.env.Registry)
	pc := &produceCounter{acked: count}
	start := time.Now()
	for i := range n {
		v, err := codec.Encode(tpl.schemaID, orderPlacedSchema, r.events.Event(i, keys))
		if err != nil {
			return measurement{}, fmt.Errorf("encode: %w", err)
		}
		rec := &kgo.Record{Topic: topic, Key: []byte(Key(i, keys)), Value: v, Headers: tpl.withID()}
		cl.Produce(ctx, rec, func(_ *kgo.Record, err error) { pc.done(err) })
		if ctx.Err() != nil {
			break
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return measurement{}, fmt.Errorf("flush: %w", err)
	}
	if err := pc.err(n); err != nil {
		return measurement{}, err
	}
	return measurement{n: n, took: time.Since(start)}, nil
}

// runConsumer runs c until done is closed, then stops it. It returns
// early with an error if Run returns first or ctx ends.
func runConsumer(ctx context.Context, c *consumer.Consumer, done <-chan struct{}) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(rctx) }()
	select {
	case <-done:
		cancel()
		if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("choreo consumer: %w", err)
		}
		return nil
	case err := <-runErr:
		if err == nil {
			err = errors.New("returned before the last event")
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("choreo consumer: %w", err)
	case <-ctx.Done():
		cancel()
		<-runErr
		return ctx.Err()
	}
}

// checkStats fails unless the consumer handled every record and nothing
// else happened to any.
func checkStats(c *consumer.Consumer, n int) error {
	s := c.Stats()
	if s.DeadLettered != 0 || s.Skipped != 0 || s.Forwarded != 0 || s.Handled < int64(n) {
		return fmt.Errorf("choreo consumer: handled %d of %d, dead-lettered %d, skipped %d, forwarded %d: want every record handled",
			s.Handled, n, s.DeadLettered, s.Skipped, s.Forwarded)
	}
	return nil
}

// firstTime keeps the time of the first of many events, cheaply.
type firstTime struct{ ns atomic.Int64 }

func (f *firstTime) mark() {
	if f.ns.Load() == 0 {
		f.ns.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// rawConsumerOpts are the options of a raw group consumer of topics.
func (r *runner) rawConsumerOpts(group string, topics ...string) ([]kgo.Opt, error) {
	return r.clientOpts(
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
	)
}

// fetchErr returns the first error of fs that is not the end of ctx.
func fetchErr(fs kgo.Fetches) error {
	var first error
	fs.EachError(func(t string, p int32, err error) {
		if first == nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			first = fmt.Errorf("fetch %s/%d: %w", t, p, err)
		}
	})
	return first
}
