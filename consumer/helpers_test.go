package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/internal/testevents"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

// The shared test event types.
type (
	OrderPlaced      = testevents.OrderPlaced
	PaymentRequested = testevents.PaymentRequested
)

func order(id string, n int) OrderPlaced {
	return OrderPlaced{OrderID: id, CustomerID: "c", AmountCents: int64(n), Currency: "EUR", Items: int32(n % 7),
		PlacedAt: time.UnixMilli(1_700_000_000_000 + int64(n)).UTC()}
}

// harness is a broker, a registry, a producer and a topic for one test.
type harness struct {
	t       *testing.T
	cluster *kafkatest.Cluster
	regURL  string
	reg     *schema.Registry
	conn    connection.Config
	prod    *producer.Producer
	topic   string
}

func newHarness(t *testing.T, partitions int32, opts ...kafkatest.Option) *harness {
	t.Helper()
	c := kafkatest.New(t, opts...)
	url := kafkatest.SchemaRegistry(t)
	reg, err := schema.NewRegistry([]string{url})
	if err != nil {
		t.Fatal(err)
	}
	conn := connection.Config{Brokers: c.Seeds()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := producer.New(ctx, conn, reg, producer.Source("test"), producer.ClientOptions(kgo.ProducerLinger(5*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return &harness{t: t, cluster: c, regURL: url, reg: reg, conn: conn, prod: p, topic: c.Topic(t, partitions)}
}

// publish sends n orders with keys from keyOf, and waits for all acks.
func (h *harness) publish(n int, keyOf func(i int) string) []producer.Published {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	out := make([]producer.Published, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range n {
		wg.Add(1)
		key := keyOf(i)
		h.prod.PublishAsync(ctx, h.topic, key, order(key, i), func(p producer.Published, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			out[i] = p
		})
	}
	wg.Wait()
	if firstErr != nil {
		h.t.Fatalf("publish: %v", firstErr)
	}
	return out
}

// consumer returns a consumer of the harness topic in group with options.
func (h *harness) consumer(group string, opts ...consumer.Option) *consumer.Consumer {
	h.t.Helper()
	opts = append([]consumer.Option{consumer.CommitInterval(100 * time.Millisecond)}, opts...)
	c, err := consumer.New(h.conn, h.reg, group, opts...)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// running runs c until the returned stop is called (or the test ends) and
// returns Run's error from stop.
func running(t *testing.T, c *consumer.Consumer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				err = fmt.Errorf("Run did not return within 60s of cancellation")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// committed returns the group's committed offset per partition of topic.
func (h *harness) committed(group string) map[int32]int64 {
	h.t.Helper()
	offs, err := h.cluster.Admin().FetchOffsets(context.Background(), group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return map[int32]int64{} // nothing committed yet
	}
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[int32]int64{}
	for p, o := range offs[h.topic] {
		out[p] = o.At
	}
	return out
}
