package producer_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/producer"
)

type txKey struct{}

// fakeOutbox queues records when the context carries txKey, as
// pgstore.Outbox does with a handler's transaction.
type fakeOutbox struct {
	mu   sync.Mutex
	recs []*kgo.Record
	err  error
}

func (f *fakeOutbox) Enqueue(ctx context.Context, rec *kgo.Record) (bool, error) {
	if ctx.Value(txKey{}) == nil {
		return false, nil
	}
	if f.err != nil {
		return false, f.err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs = append(f.recs, rec)
	return true, nil
}

func TestOutboxQueuesInsideATransactionOnly(t *testing.T) {
	e := newEnv(t, 1)
	ob := &fakeOutbox{}
	p := e.producer(t, producer.Outbox(ob), producer.Source("payment"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	handled := choreo.Metadata{ID: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", CorrelationID: "corr-1"}
	txCtx := context.WithValue(choreo.WithHandlerScope(choreo.WithMetadata(ctx, handled), "payment-service"), txKey{}, true)
	pub, err := p.Publish(txCtx, e.topic, "order-1", order("order-1"))
	if err != nil {
		t.Fatalf("queued Publish: %v", err)
	}
	want := choreo.DerivedID(handled.ID, "payment-service", orderPlacedSchema.FullName(), 0)
	if !pub.Queued || pub.Partition != -1 || pub.Offset != -1 || pub.Metadata.ID != want {
		t.Fatalf("queued Publish = %+v; want Queued, partition and offset -1, id %s", pub, want)
	}
	if len(ob.recs) != 1 {
		t.Fatalf("outbox holds %d records; want 1", len(ob.recs))
	}
	r := ob.recs[0]
	if r.Topic != e.topic || string(r.Key) != "order-1" || len(r.Value) < 5 || r.Value[0] != 0 {
		t.Errorf("queued record %s/%q/%x; want the topic, the key and a wire-format value", r.Topic, r.Key, r.Value)
	}
	if v, n := header(r, choreo.HeaderID); v != want || n != 1 {
		t.Errorf("queued record's ce_id %q (%d times); want %s once", v, n, want)
	}
	if v, _ := header(r, choreo.HeaderCausationID); v != handled.ID {
		t.Errorf("queued record's causation id %q; want %s", v, handled.ID)
	}

	// Outside a transaction: published directly.
	pub, err = p.Publish(ctx, e.topic, "order-2", order("order-2"))
	if err != nil || pub.Queued || pub.Offset != 0 {
		t.Fatalf("direct Publish = %+v, %v; want offset 0, not queued", pub, err)
	}
	recs := e.consume(t, 1)
	if v, _ := header(recs[0], choreo.HeaderID); v != pub.Metadata.ID || string(recs[0].Key) != "order-2" {
		t.Errorf("topic holds %q with id %s; want order-2 with id %s (the queued one must not be produced)", recs[0].Key, v, pub.Metadata.ID)
	}

	// A failing outbox fails the publish; nothing is produced instead.
	ob.err = errors.New("connection reset")
	if _, err := p.Publish(txCtx, e.topic, "order-3", order("order-3")); !errors.Is(err, ob.err) {
		t.Fatalf("Publish with a failing outbox: %v; want it to wrap %v", err, ob.err)
	}
}
