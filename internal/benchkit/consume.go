package benchkit

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/schema"
)

// consumeKeys is the most distinct keys of the consume backlog: many, as
// for order ids, so per-key ordering leaves the workers plenty to do.
const consumeKeys = 100_000

// consume writes a backlog of cfg.Events events on cfg.Partitions
// partitions once, then reads it whole in each round, each time with a new
// consumer group:
//
//   - consume/raw: a kgo group poll loop that decodes every value with
//     schema.Codec.Decode into the event struct and commits every second,
//     on one goroutine;
//   - consume/choreo: the choreo consumer with every default (Concurrency
//     16, per-key ordering, the in-memory idempotency store, commit
//     tracking) and a handler that counts.
//
// The time runs from the first record read (raw) or handled (choreo) to
// the last, so joining the group is left out of both.
func (r *runner) consume(ctx context.Context) error {
	n, parts := r.cfg.Events, r.cfg.Partitions
	keys := min(n, consumeKeys)
	topic := r.env.Name("consume")
	defer r.env.DeleteTopics(context.WithoutCancel(ctx), []string{topic})
	if err := r.env.CreateTopic(ctx, topic, parts); err != nil {
		return err
	}
	if _, err := r.step(ctx, nil, "consume: writing the backlog", n, func(ctx context.Context, count *atomic.Int64) (measurement, error) {
		return r.backlog(ctx, topic, n, keys, count)
	}); err != nil {
		return err
	}

	set := Settings{Events: n, Partitions: parts, Keys: keys, Handler: "count"}
	rawS := r.newSeries(Consume, "raw", "", set)
	set.Concurrency = 16
	choS := r.newSeries(Consume, "choreo", "raw", set)
	for round := 1; round <= r.cfg.Rounds; round++ {
		of := fmt.Sprintf("round %d/%d", round, r.cfg.Rounds)
		group := r.env.Name("consume", "raw", strconv.Itoa(round))
		if _, err := r.step(ctx, rawS, "consume raw "+of, n, func(ctx context.Context, count *atomic.Int64) (measurement, error) {
			return r.consumeRaw(ctx, topic, group, n, count)
		}); err != nil {
			return err
		}
		group = r.env.Name("consume", "choreo", strconv.Itoa(round))
		_, err := r.step(ctx, choS, "consume choreo "+of, n, func(ctx context.Context, count *atomic.Int64) (measurement, error) {
			return r.consumeChoreo(ctx, topic, group, n, count)
		})
		r.env.DeleteTopics(context.WithoutCancel(ctx), nil, group) // its dead-letter and retry topics
		if err != nil {
			return err
		}
	}
	return nil
}

// consumeRaw reads the n records of topic with a kgo group consumer,
// decoding each value.
func (r *runner) consumeRaw(ctx context.Context, topic, group string, n int, count *atomic.Int64) (measurement, error) {
	opts, err := r.rawConsumerOpts(group, topic)
	if err != nil {
		return measurement{}, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return measurement{}, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	codec := schema.NewCodec(r.env.Registry)
	var (
		start      time.Time
		got        int
		sum        int64
		decodeErr  error
		lastCommit = time.Now()
	)
	for got < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return measurement{}, ctx.Err()
		}
		if err := fetchErr(fs); err != nil {
			return measurement{}, err
		}
		if start.IsZero() && !fs.Empty() {
			start = time.Now()
		}
		before := got
		fs.EachRecord(func(rec *kgo.Record) {
			var ev OrderPlaced
			if _, err := codec.Decode(ctx, rec.Value, orderPlacedSchema, &ev); err != nil && decodeErr == nil {
				decodeErr = err
			}
			sum += ev.AmountCents
			got++
		})
		count.Add(int64(got - before))
		if decodeErr != nil {
			return measurement{}, fmt.Errorf("decode: %w", decodeErr)
		}
		if time.Since(lastCommit) >= time.Second {
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				return measurement{}, fmt.Errorf("commit: %w", err)
			}
			lastCommit = time.Now()
		}
	}
	took := time.Since(start)
	if err := cl.CommitUncommittedOffsets(ctx); err != nil {
		return measurement{}, fmt.Errorf("commit: %w", err)
	}
	if sum == 0 {
		return measurement{}, fmt.Errorf("decoded %d records with no amounts", got)
	}
	return measurement{n: got, took: took}, nil
}

// consumeChoreo reads the n records of topic with a choreo consumer with
// default options and a handler that counts.
func (r *runner) consumeChoreo(ctx context.Context, topic, group string, n int, count *atomic.Int64) (measurement, error) {
	c, err := consumer.New(r.env.Conn, r.env.Registry, group, consumer.Logger(quietLogger))
	if err != nil {
		return measurement{}, fmt.Errorf("choreo consumer: %w", err)
	}
	var (
		first firstTime
		sum   atomic.Int64
		last  atomic.Int64
		all   = make(chan struct{})
	)
	consumer.Handle(c, topic, func(_ context.Context, ev consumer.Event[OrderPlaced]) error {
		first.mark()
		sum.Add(ev.Data.AmountCents)
		if count.Add(1) == int64(n) {
			last.Store(time.Now().UnixNano())
			close(all)
		}
		return nil
	})
	if err := runConsumer(ctx, c, all); err != nil {
		return measurement{}, err
	}
	took := time.Duration(last.Load() - first.ns.Load())
	if err := checkStats(c, n); err != nil {
		return measurement{}, err
	}
	if sum.Load() == 0 {
		return measurement{}, fmt.Errorf("handled %d events with no amounts", n)
	}
	return measurement{n: n, took: took}, nil
}
