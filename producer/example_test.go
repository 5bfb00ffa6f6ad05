package producer_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/schema/registry"
)

var shippedSchema = schema.MustParse(`{"type": "record", "name": "OrderShipped", "namespace": "shop",
  "fields": [{"name": "order_id", "type": "string"}, {"name": "carrier", "type": "string"}]}`)

// OrderShipped is an event type: a Go struct bound to its Avro schema.
type OrderShipped struct {
	OrderID string `avro:"order_id"`
	Carrier string `avro:"carrier"`
}

func (OrderShipped) AvroSchema() *schema.Schema { return shippedSchema }

// Publishing an event. Inside a handler, pass the handler's context instead:
// the event then continues the handled event's transaction.
func ExampleProducer_Publish() {
	broker, _ := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "shipments"))
	defer broker.Close()
	reg, _ := registry.New()
	srv := httptest.NewServer(reg)
	defer srv.Close()
	schemas, _ := schema.NewRegistry([]string{srv.URL})
	ctx := context.Background()

	p, err := producer.New(ctx, connection.Config{Brokers: broker.ListenAddrs()}, schemas,
		producer.Source("shipping-service"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close(ctx)

	// Continue a transaction that started elsewhere (say, an HTTP request).
	ctx = choreo.WithMetadata(ctx, choreo.Metadata{CorrelationID: "checkout-7"})
	pub, err := p.Publish(ctx, "shipments", "order-1", OrderShipped{OrderID: "order-1", Carrier: "DHL"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(pub.Topic, pub.Partition, pub.Offset, pub.Metadata.Type, pub.Metadata.CorrelationID)
	// Output: shipments 0 0 shop.OrderShipped checkout-7
}
