package benchkit

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/schema"
)

// The slow-handler workload: one partition, 1,000 keys, a handler that
// takes 2 ms.
const (
	slowSleep   = 2 * time.Millisecond
	slowKeys    = 1_000
	slowPerKey  = 20_000 // most events of the per-key rounds
	slowPrefix  = 2_000  // most events of the sequential variants (2 ms each)
	slowWorkers = 64     // Concurrency of the per-key consumer
)

// slow measures what per-key ordering buys when handlers are slow. On one
// partition of 1,000 keys, with a handler that decodes and sleeps 2 ms:
//
//   - slow/raw-sequential: a kgo group poll loop handling one record at a
//     time (what a plain consumer does), once;
//   - slow/per-partition: the choreo consumer with PerPartition ordering:
//     one handler at a time, once;
//   - slow/per-key: the choreo consumer with PerKey ordering and
//     Concurrency 64, every round.
//
// The sequential variants handle the first 2,000 events (at most): their
// time is the sleep, 4 s and more, and hardly varies. Per-key handles
// 20,000. Both choreo variants check that each key's offsets arrive
// strictly increasing.
func (r *runner) slow(ctx context.Context) error {
	nKey := min(r.cfg.Events, slowPerKey)
	nSeq := min(r.cfg.Events, slowPrefix)
	keys := min(nKey, slowKeys)
	topic := r.env.Name("slow")
	defer r.env.DeleteTopics(context.WithoutCancel(ctx), []string{topic})
	if err := r.env.CreateTopic(ctx, topic, 1); err != nil {
		return err
	}
	if _, err := r.step(ctx, nil, "slow: writing the backlog", nKey, func(ctx context.Context, count *atomic.Int64) (measurement, error) {
		return r.backlog(ctx, topic, nKey, keys, count)
	}); err != nil {
		return err
	}
	handler := "decode, sleep 2ms"
	seq := Settings{Events: nSeq, Partitions: 1, Keys: min(nSeq, keys), Handler: handler}
	rawS := r.newSeries(Slow, "raw-sequential", "", seq)
	seq.Concurrency = 1
	partS := r.newSeries(Slow, "per-partition", "raw-sequential", seq)
	keyS := r.newSeries(Slow, "per-key", "per-partition", Settings{Events: nKey, Partitions: 1, Keys: keys, Concurrency: slowWorkers, Handler: handler})

	group := r.env.Name("slow", "raw")
	if _, err := r.step(ctx, rawS, "slow raw-sequential", nSeq, func(ctx context.Context, count *atomic.Int64) (measurement, error) {
		return r.slowRaw(ctx, topic, group, nSeq, count)
	}); err != nil {
		return err
	}
	group = r.env.Name("slow", "per-partition")
	_, err := r.step(ctx, partS, "slow per-partition", nSeq, func(ctx context.Context, count *atomic.Int64) (measurement, error) {
		return r.slowChoreo(ctx, topic, group, nSeq, count, consumer.WithOrdering(consumer.PerPartition))
	})
	r.env.DeleteTopics(context.WithoutCancel(ctx), nil, group)
	if err != nil {
		return err
	}
	for round := 1; round <= r.cfg.Rounds; round++ {
		group := r.env.Name("slow", "per-key", strconv.Itoa(round))
		_, err := r.step(ctx, keyS, fmt.Sprintf("slow per-key round %d/%d", round, r.cfg.Rounds), nKey, func(ctx context.Context, count *atomic.Int64) (measurement, error) {
			return r.slowChoreo(ctx, topic, group, nKey, count, consumer.WithOrdering(consumer.PerKey), consumer.Concurrency(slowWorkers))
		})
		r.env.DeleteTopics(context.WithoutCancel(ctx), nil, group)
		if err != nil {
			return err
		}
	}
	return nil
}

// slowRaw handles the first n records of topic one at a time.
func (r *runner) slowRaw(ctx context.Context, topic, group string, n int, count *atomic.Int64) (measurement, error) {
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
	var start time.Time
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return measurement{}, ctx.Err()
		}
		if err := fetchErr(fs); err != nil {
			return measurement{}, err
		}
		for it := fs.RecordIter(); !it.Done() && got < n; {
			rec := it.Next()
			if start.IsZero() {
				start = time.Now()
			}
			var ev OrderPlaced
			if _, err := codec.Decode(ctx, rec.Value, orderPlacedSchema, &ev); err != nil {
				return measurement{}, fmt.Errorf("decode: %w", err)
			}
			time.Sleep(slowSleep)
			got++
			count.Add(1)
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			return measurement{}, fmt.Errorf("commit: %w", err)
		}
	}
	return measurement{n: got, took: time.Since(start)}, nil
}

// slowChoreo handles the first n records of topic with a choreo consumer
// with opts and a 2 ms handler, checking that the offsets of each key
// arrive in order.
func (r *runner) slowChoreo(ctx context.Context, topic, group string, n int, count *atomic.Int64, opts ...consumer.Option) (measurement, error) {
	c, err := consumer.New(r.env.Conn, r.env.Registry, group, append([]consumer.Option{consumer.Logger(quietLogger)}, opts...)...)
	if err != nil {
		return measurement{}, fmt.Errorf("choreo consumer: %w", err)
	}
	var (
		mu         sync.Mutex
		lastOffset = make(map[string]int64, slowKeys)
		violations int
		first      firstTime
		last       atomic.Int64
		reached    = make(chan struct{})
	)
	consumer.Handle(c, topic, func(_ context.Context, ev consumer.Event[OrderPlaced]) error {
		first.mark()
		mu.Lock()
		if prev, ok := lastOffset[ev.Key]; ok && ev.Offset <= prev {
			violations++
		}
		lastOffset[ev.Key] = ev.Offset
		mu.Unlock()
		time.Sleep(slowSleep)
		if count.Add(1) == int64(n) {
			last.Store(time.Now().UnixNano())
			close(reached)
		}
		return nil
	})
	if err := runConsumer(ctx, c, reached); err != nil {
		return measurement{}, err
	}
	mu.Lock()
	defer mu.Unlock()
	if violations > 0 {
		return measurement{}, fmt.Errorf("per-key order broken %d times: a key's offsets must arrive strictly increasing", violations)
	}
	return measurement{n: n, took: time.Duration(last.Load() - first.ns.Load())}, nil
}
