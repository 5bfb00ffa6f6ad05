package benchkit

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

// produceDistinct is how many distinct events (and keys) the produce
// scenario cycles through; they are built before the measurement.
const produceDistinct = 4096

// produce compares, round by round, on a fresh topic each time:
//
//   - produce/raw: kgo Produce of the events encoded beforehand, with the
//     headers of a choreo record (one shared copy), until Flush returns;
//   - produce/choreo: PublishAsync of the same events (encoded, given ids,
//     headers and a send span by the producer) until Flush returns;
//   - produce-sync/raw and /choreo: one call at a time, kgo ProduceSync
//     against Publish, with the latency of each call.
//
// Both use the same client options: franz-go's 10 ms linger, acks=all.
func (r *runner) produce(ctx context.Context) error {
	n, parts := r.cfg.Events, r.cfg.Partitions
	calls := min(max(n/100, 1), 1000)
	distinct := min(n, produceDistinct)
	events := make([]OrderPlaced, distinct)
	keys := make([]string, distinct)
	for i := range events {
		events[i], keys[i] = r.events.Event(i, distinct), Key(i, distinct)
	}

	p, err := r.newProducer(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = p.Close(context.WithoutCancel(ctx)) }()
	opts, err := r.clientOpts(produceOpts()...)
	if err != nil {
		return err
	}
	raw, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer raw.Close()
	codec := schema.NewCodec(r.env.Registry)

	async := Settings{Events: n, Partitions: parts, Keys: distinct}
	sync := Settings{Events: calls, Partitions: parts, Keys: distinct}
	rawS := r.newSeries(Produce, "raw", "", async)
	choS := r.newSeries(Produce, "choreo", "raw", async)
	rawSync := r.newSeries("produce-sync", "raw", "", sync)
	choSync := r.newSeries("produce-sync", "choreo", "raw", sync)

	// rawSetup makes a fresh topic and the raw records' values and
	// headers, and sends one record to warm the client up.
	rawSetup := func(variant string, round int) (topic string, values [][]byte, t template, err error) {
		topic = r.env.Name("produce", variant, strconv.Itoa(round))
		if err := r.env.CreateTopic(ctx, topic, parts); err != nil {
			return "", nil, t, err
		}
		if t, err = r.newTemplate(ctx, p, topic); err != nil {
			return "", nil, t, err
		}
		values = make([][]byte, distinct)
		for i := range values {
			if values[i], err = codec.Encode(t.schemaID, orderPlacedSchema, events[i]); err != nil {
				return "", nil, t, fmt.Errorf("encode: %w", err)
			}
		}
		err = raw.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(keys[0]), Value: values[0], Headers: t.headers}).FirstErr()
		if err != nil {
			return "", nil, t, fmt.Errorf("warm-up record: %w", err)
		}
		return topic, values, t, nil
	}
	// choreoSetup makes a fresh topic and publishes one event to it.
	choreoSetup := func(variant string, round int) (string, error) {
		topic := r.env.Name("produce", variant, strconv.Itoa(round))
		if err := r.env.CreateTopic(ctx, topic, parts); err != nil {
			return "", err
		}
		if _, err := p.Publish(ctx, topic, keys[0], events[0]); err != nil {
			return "", fmt.Errorf("warm-up publish: %w", err)
		}
		return topic, nil
	}

	for round := 1; round <= r.cfg.Rounds; round++ {
		of := fmt.Sprintf("round %d/%d", round, r.cfg.Rounds)

		topic, values, tpl, err := rawSetup("raw", round)
		if err != nil {
			return err
		}
		_, err = r.step(ctx, rawS, "produce raw "+of, n, func(ctx context.Context, count *atomic.Int64) (measurement, error) {
			pc := &produceCounter{acked: count}
			done := func(_ *kgo.Record, err error) { pc.done(err) }
			start := time.Now()
			for i := range n {
				j := i % distinct
				raw.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(keys[j]), Value: values[j], Headers: tpl.headers}, done)
			}
			if err := raw.Flush(ctx); err != nil {
				return measurement{}, fmt.Errorf("flush: %w", err)
			}
			return measurement{n: n, took: time.Since(start)}, pc.err(n)
		})
		r.env.DeleteTopics(ctx, []string{topic})
		if err != nil {
			return err
		}

		if topic, err = choreoSetup("choreo", round); err != nil {
			return err
		}
		_, err = r.step(ctx, choS, "produce choreo "+of, n, func(ctx context.Context, count *atomic.Int64) (measurement, error) {
			pc := &produceCounter{acked: count}
			done := func(_ producer.Published, err error) { pc.done(err) }
			start := time.Now()
			for i := range n {
				j := i % distinct
				p.PublishAsync(ctx, topic, keys[j], events[j], done)
			}
			if err := p.Flush(ctx); err != nil {
				return measurement{}, err
			}
			return measurement{n: n, took: time.Since(start)}, pc.err(n)
		})
		r.env.DeleteTopics(ctx, []string{topic})
		if err != nil {
			return err
		}

		if topic, values, tpl, err = rawSetup("raw-sync", round); err != nil {
			return err
		}
		_, err = r.step(ctx, rawSync, "produce-sync raw "+of, calls, func(ctx context.Context, count *atomic.Int64) (measurement, error) {
			lat := make([]time.Duration, 0, calls)
			start := time.Now()
			for i := range calls {
				j := i % distinct
				t := time.Now()
				if err := raw.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(keys[j]), Value: values[j], Headers: tpl.headers}).FirstErr(); err != nil {
					return measurement{}, fmt.Errorf("produce: %w", err)
				}
				lat = append(lat, time.Since(t))
				count.Add(1)
			}
			return measurement{n: calls, took: time.Since(start), lat: lat}, nil
		})
		r.env.DeleteTopics(ctx, []string{topic})
		if err != nil {
			return err
		}

		if topic, err = choreoSetup("choreo-sync", round); err != nil {
			return err
		}
		_, err = r.step(ctx, choSync, "produce-sync choreo "+of, calls, func(ctx context.Context, count *atomic.Int64) (measurement, error) {
			lat := make([]time.Duration, 0, calls)
			start := time.Now()
			for i := range calls {
				j := i % distinct
				t := time.Now()
				if _, err := p.Publish(ctx, topic, keys[j], events[j]); err != nil {
					return measurement{}, err
				}
				lat = append(lat, time.Since(t))
				count.Add(1)
			}
			return measurement{n: calls, took: time.Since(start), lat: lat}, nil
		})
		r.env.DeleteTopics(ctx, []string{topic})
		if err != nil {
			return err
		}
	}
	return nil
}
