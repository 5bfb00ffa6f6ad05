package consumer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/kafkatest"
)

// TestRedactedHeadersReachNoRetryTopic: a header named in RedactHeaders
// is redacted in the record forwarded to a retry topic, as in the dead
// letter, and the forwarded record is still handled (ce_id and ce_type
// kept).
func TestRedactedHeadersReachNoRetryTopic(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	const secret = "Bearer s3cret-token"
	ctx := context.Background()
	rec, _, err := h.prod.Record(ctx, h.topic, "k", order("flaky", 1))
	if err != nil {
		t.Fatal(err)
	}
	rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: "Authorization", Value: []byte(secret)})
	if err := h.cluster.Client(t).ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	c := h.consumer(group, consumer.RedactHeaders("authorization"), consumer.RetryTopics(100*time.Millisecond),
		consumer.Retry(consumer.RetryPolicy{MaxAttempts: 1, Multiplier: 1}))
	var seen []string
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		for _, hd := range ev.Headers {
			if hd.Key == "Authorization" {
				seen = append(seen, string(hd.Value))
			}
		}
		if ev.Attempt == 1 {
			return errors.New("busy") // forwarded to the retry topic
		}
		return nil
	})
	stop := running(t, c)
	eventually(t, 30*time.Second, "handled from the retry topic", func() bool { return c.Stats().Handled == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	rs := consumeAll(t, h, group+".retry.1-100ms", 1)
	for _, hd := range rs[0].Headers {
		if hd.Key == "Authorization" && string(hd.Value) != dlq.Redacted {
			t.Errorf("retry topic record has %s: %q; want %q", hd.Key, hd.Value, dlq.Redacted)
		}
		if string(hd.Value) == secret {
			t.Errorf("the secret reached the retry topic in header %s", hd.Key)
		}
	}
	if got := header(rs[0], choreo.HeaderID); got == "" || got == dlq.Redacted {
		t.Errorf("forwarded ce_id %q; want it kept", got)
	}
	if len(seen) != 2 || seen[0] != secret || seen[1] != dlq.Redacted {
		t.Errorf("the handler saw Authorization %q; want the secret, then %q from the retry topic", seen, dlq.Redacted)
	}
}
