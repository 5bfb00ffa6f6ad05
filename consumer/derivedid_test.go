package consumer_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/kafkatest"
)

// TestRetriedHandlerRepublishesUnderTheSameID: a handler publishes a
// downstream event and then fails; its retry publishes the event again.
// Both copies must carry the same ce_id, derived from the handled event,
// so that the downstream service handles the event once.
func TestRetriedHandlerRepublishesUnderTheSameID(t *testing.T) {
	h := newHarness(t, 1)
	downstream := h.cluster.Topic(t, 1)
	pubs := h.publish(1, func(int) string { return "order-1" })
	group := kafkatest.Group(t)

	c := h.consumer(group, consumer.Retry(consumer.RetryPolicy{
		MaxAttempts: 3, InitialInterval: 10 * time.Millisecond, MaxInterval: 20 * time.Millisecond, Multiplier: 2,
	}))
	var mu sync.Mutex
	var published []string
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		p, err := h.prod.Publish(ctx, downstream, ev.Data.OrderID, PaymentRequested{OrderID: ev.Data.OrderID, AmountCents: ev.Data.AmountCents})
		if err != nil {
			return err
		}
		mu.Lock()
		published = append(published, p.Metadata.ID)
		mu.Unlock()
		if ev.Attempt == 1 {
			return errors.New("payment gateway busy") // retryable, after the publish
		}
		return nil
	})
	stop := running(t, c)
	eventually(t, 30*time.Second, "the order handled", func() bool { return c.Stats().Handled == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	recs := consumeAll(t, h, downstream, 2)
	a, b := header(recs[0], choreo.HeaderID), header(recs[1], choreo.HeaderID)
	if a != b {
		t.Fatalf("the retry republished under a new ce_id: %s, then %s; want the same id twice", a, b)
	}
	want := choreo.DerivedID(pubs[0].Metadata.ID, group, PaymentRequested{}.AvroSchema().FullName(), 0)
	if a != want {
		t.Errorf("ce_id %s; want DerivedID(handled id, group, type, 0) = %s", a, want)
	}
	if len(published) != 2 || published[0] != a || published[1] != a {
		t.Errorf("Publish reported ids %v; want [%s %s]", published, a, a)
	}
	for _, r := range recs {
		if got := header(r, choreo.HeaderCausationID); got != pubs[0].Metadata.ID {
			t.Errorf("causation id %s; want the handled event's %s", got, pubs[0].Metadata.ID)
		}
	}

	// The downstream service, with the (default) memory store, handles it once.
	d := h.consumer(kafkatest.Group(t))
	var calls int
	consumer.Handle(d, downstream, func(ctx context.Context, ev consumer.Event[PaymentRequested]) error {
		mu.Lock()
		calls++
		mu.Unlock()
		return nil
	})
	stopD := running(t, d)
	eventually(t, 30*time.Second, "both downstream records done", func() bool { s := d.Stats(); return s.Handled+s.Duplicates == 2 })
	if err := stopD(); err != nil {
		t.Fatal(err)
	}
	if s := d.Stats(); s.Handled != 1 || s.Duplicates != 1 || calls != 1 {
		t.Fatalf("downstream: handled %d, duplicates %d, handler calls %d; want 1, 1, 1", s.Handled, s.Duplicates, calls)
	}
}
