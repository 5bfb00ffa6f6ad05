package consumer_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

// TestOrderingModes checks what may run at once: per partition, one record
// per partition in offset order; unordered, even one key's records overlap.
func TestOrderingModes(t *testing.T) {
	for _, tc := range []struct {
		mode consumer.Ordering
		keys int
	}{
		{consumer.PerPartition, 50},
		{consumer.Unordered, 1},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			h := newHarness(t, 2)
			const n = 200
			h.publish(n, func(i int) string { return "k" + string(rune('a'+i%tc.keys)) })
			c := h.consumer(kafkatest.Group(t), consumer.WithOrdering(tc.mode), consumer.Concurrency(8))
			var mu sync.Mutex
			running := map[int32]int{}
			last := map[int32]int64{}
			var active, peak atomic.Int64
			var handled atomic.Int64
			consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
				if a := active.Add(1); a > peak.Load() {
					peak.Store(a)
				}
				defer active.Add(-1)
				mu.Lock()
				running[ev.Partition]++
				if tc.mode == consumer.PerPartition {
					if running[ev.Partition] > 1 {
						t.Errorf("partition %d: two records at once", ev.Partition)
					}
					if prev, ok := last[ev.Partition]; ok && ev.Offset <= prev {
						t.Errorf("partition %d: offset %d after %d", ev.Partition, ev.Offset, prev)
					}
					last[ev.Partition] = ev.Offset
				}
				mu.Unlock()
				time.Sleep(time.Millisecond)
				mu.Lock()
				running[ev.Partition]--
				mu.Unlock()
				handled.Add(1)
				return nil
			})
			stop := startRunning(t, c)
			eventually(t, 60*time.Second, "all handled", func() bool { return handled.Load() == n })
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			switch tc.mode {
			case consumer.PerPartition:
				if peak.Load() > 2 {
					t.Errorf("peak concurrency %d over 2 partitions; want at most 2", peak.Load())
				}
			case consumer.Unordered:
				if peak.Load() < 2 {
					t.Errorf("peak concurrency %d with one key, unordered; want records to overlap", peak.Load())
				}
			}
		})
	}
}

var startRunning = running

// TestUnknownTypes: a type without a handler is skipped by default, and
// dead-lettered as unknown_type when the service asks for it.
func TestUnknownTypes(t *testing.T) {
	for _, deadLetter := range []bool{false, true} {
		name := "skip"
		if deadLetter {
			name = "dead-letter"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, 1)
			ctx := context.Background()
			// Two event types on one topic need a subject per type: under
			// TopicNameStrategy the registry would refuse the second schema.
			p, err := producer.New(ctx, h.conn, h.reg, producer.Subjects(schema.TopicRecordNameStrategy))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close(ctx)
			if _, err := p.Publish(ctx, h.topic, "k", PaymentRequested{OrderID: "o", AmountCents: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Publish(ctx, h.topic, "k", order("o", 1)); err != nil {
				t.Fatal(err)
			}
			group := kafkatest.Group(t)
			var opts []consumer.Option
			if deadLetter {
				opts = append(opts, consumer.OnUnknownType(consumer.DeadLetterUnknown))
			}
			c := h.consumer(group, opts...)
			consumer.Handle(c, h.topic, func(context.Context, consumer.Event[OrderPlaced]) error { return nil })
			stop := running(t, c)
			eventually(t, 30*time.Second, "both records done", func() bool { return h.committed(group)[0] == 2 })
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			s := c.Stats()
			if s.Handled != 1 {
				t.Errorf("handled %d; want 1", s.Handled)
			}
			if deadLetter {
				dls := h.readDeadLetters(t, dlq.Topic(group), 1, 5*time.Second)
				if len(dls) != 1 || dls[0].Error.Kind != choreo.KindUnknownType {
					t.Fatalf("dead letters %v; want one of kind unknown_type", dls)
				}
			} else if s.Skipped != 1 || s.DeadLettered != 0 {
				t.Errorf("skipped %d, dead-lettered %d; want 1 and 0", s.Skipped, s.DeadLettered)
			}
		})
	}
}
