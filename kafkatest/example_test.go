package kafkatest_test

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/kafkatest"
)

// A test of your own service gets a broker, a fresh topic and clients; with
// KAFKA_BROKERS set, the same test runs against that cluster.
func ExampleNew() {
	var t *testing.T // in a real test, the test's t

	c := kafkatest.New(t)
	topic := c.Topic(t, 3)
	cl := c.Client(t, kgo.DefaultProduceTopic(topic),
		kgo.ConsumeTopics(topic), kgo.ConsumerGroup(kafkatest.Group(t)))

	ctx := context.Background()
	if err := cl.ProduceSync(ctx, kgo.StringRecord("hello")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for _, r := range cl.PollFetches(ctx).Records() {
		t.Logf("got %s", r.Value)
	}
}
