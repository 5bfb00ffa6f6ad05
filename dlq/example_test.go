package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http/httptest"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/schema/registry"
)

// A service dead-letters a record it cannot handle, and an operator reads
// the dead letter back and redrives it to that service.
func ExampleWriter() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// An embedded broker and registry; in production, KAFKA_BROKERS and
	// SCHEMA_REGISTRY_URL.
	group := "payment-service"
	topic, err := dlq.TopicFor(group) // "payment-service.dlq"
	if err != nil {
		log.Fatal(err)
	}
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders", topic, dlq.RedriveTopic(group)))
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()
	embedded, err := registry.New(registry.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(embedded)
	defer srv.Close()
	reg, err := schema.NewRegistry([]string{srv.URL})
	if err != nil {
		log.Fatal(err)
	}
	// franz-go's defaults: idempotent writes, acks=all.
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.ListenAddrs()...))
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()

	// The consumer runtime gives up on a record.
	failed := &kgo.Record{Topic: "orders", Partition: 0, Offset: 41, Key: []byte("ord-1"), Value: []byte("{oops"),
		Headers: []kgo.RecordHeader{{Key: choreo.HeaderID, Value: []byte("0190d6e2-6a5c-7c3e-9f1a-3b2c1d0e9f8a")},
			{Key: "authorization", Value: []byte("Bearer s3cret")}}}
	dl := dlq.New(failed, dlq.Failure{
		Err:      choreo.Permanent(errors.New("value is not Avro")),
		Attempts: 1,
		Service:  "payment",
		Group:    group,
	})
	w := dlq.NewWriter(cl, reg, dlq.Redact("authorization"))
	if err := w.Write(ctx, topic, dl); err != nil {
		log.Fatal(err) // do not commit past the failed record; try again
	}

	// An operator reads it back.
	rd, err := kgo.NewClient(kgo.SeedBrokers(broker.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		log.Fatal(err)
	}
	defer rd.Close()
	var recs []*kgo.Record
	for len(recs) == 0 && ctx.Err() == nil {
		recs = rd.PollFetches(ctx).Records()
	}
	if len(recs) == 0 {
		log.Fatal("no dead letter")
	}
	rec := recs[0]
	back, err := dlq.Decode(ctx, schema.NewCodec(reg), rec)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s/%d/%d failed in %s: %s (%s)\n", back.Original.Topic, back.Original.Partition, back.Original.Offset,
		back.Service, back.Error.Message, back.Error.Kind)
	for _, h := range back.Original.Headers {
		fmt.Printf("  %s: %s\n", h.Key, h.Value)
	}

	// Once the cause is fixed, the record goes back to the service that
	// failed, through its redrive topic, which no other service reads.
	replay := back.Replay(rec)
	if err := cl.ProduceSync(ctx, replay).FirstErr(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("redriven to", replay.Topic, "from", string(replay.Headers[len(replay.Headers)-1].Value))
	// Output:
	// orders/0/41 failed in payment: permanent: value is not Avro (permanent)
	//   ce_id: 0190d6e2-6a5c-7c3e-9f1a-3b2c1d0e9f8a
	//   authorization: [redacted]
	// redriven to payment-service.redrive from payment-service.dlq/0/0
}
