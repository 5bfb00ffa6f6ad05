package consumer_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/schema/registry"
)

var chargeSchema = schema.MustParse(`{"type": "record", "name": "ChargeRequested", "namespace": "shop",
  "fields": [{"name": "order_id", "type": "string"}, {"name": "amount_cents", "type": "long"}]}`)

// ChargeRequested is an event type: a Go struct bound to its Avro schema.
type ChargeRequested struct {
	OrderID     string `avro:"order_id"`
	AmountCents int64  `avro:"amount_cents"`
}

func (ChargeRequested) AvroSchema() *schema.Schema { return chargeSchema }

// A payment service: it handles ChargeRequested events from the charges
// topic. Here an embedded broker and registry stand in for a real cluster.
func Example() {
	broker, _ := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "charges"))
	defer broker.Close()
	reg, _ := registry.New()
	srv := httptest.NewServer(reg)
	defer srv.Close()

	conn := connection.Config{Brokers: broker.ListenAddrs()} // or connection.FromEnv()
	schemas, _ := schema.NewRegistry([]string{srv.URL})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	c, err := consumer.New(conn, schemas, "payment-service",
		consumer.Logger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan struct{})
	consumer.Handle(c, "charges", func(ctx context.Context, ev consumer.Event[ChargeRequested]) error {
		fmt.Printf("charging %s: %d cents (attempt %d)\n", ev.Data.OrderID, ev.Data.AmountCents, ev.Attempt)
		close(done)
		return nil
	})
	stopped := make(chan error, 1)
	go func() { stopped <- c.Run(ctx) }()

	p, _ := producer.New(ctx, conn, schemas, producer.Source("order-service"))
	defer p.Close(context.Background())
	if _, err := p.Publish(ctx, "charges", "order-1", ChargeRequested{OrderID: "order-1", AmountCents: 1999}); err != nil {
		fmt.Println(err)
		return
	}
	<-done
	cancel()
	fmt.Println("stopped:", <-stopped)
	// Output:
	// charging order-1: 1999 cents (attempt 1)
	// stopped: <nil>
}
