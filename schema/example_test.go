package schema_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http/httptest"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/schema/registry"
)

var orderPlacedSchema = schema.MustParse(`{"type":"record","name":"OrderPlaced","namespace":"com.acme.orders","fields":[
	{"name":"order_id","type":"string"},
	{"name":"amount_cents","type":"long"},
	{"name":"coupon","type":["null","string"],"default":null}
]}`)

type OrderPlaced struct {
	OrderID     string  `avro:"order_id"`
	AmountCents int64   `avro:"amount_cents"`
	Coupon      *string `avro:"coupon"`
}

// A producer registers its schema and encodes; a consumer decodes with
// its own reader schema, and tells poison from outages by the error kind.
func Example() {
	ctx := context.Background()
	// An embedded registry; in production, SCHEMA_REGISTRY_URL.
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
	codec := schema.NewCodec(reg)

	// Producer.
	subject := schema.TopicNameStrategy("orders", orderPlacedSchema)
	id, err := reg.Register(ctx, subject, orderPlacedSchema)
	if err != nil {
		log.Fatal(err)
	}
	value, err := codec.Encode(id, orderPlacedSchema, OrderPlaced{OrderID: "ord-1", AmountCents: 4200})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("ce_type %s, subject %s, value % x\n", orderPlacedSchema.FullName(), subject, value)

	// Consumer.
	var order OrderPlaced
	if _, err := codec.Decode(ctx, value, orderPlacedSchema, &order); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("decoded %s %d %v\n", order.OrderID, order.AmountCents, order.Coupon)

	// A value cut short is poison: permanent, with a kind for the DLQ.
	_, err = codec.Decode(ctx, value[:len(value)-1], orderPlacedSchema, &order)
	fmt.Println(choreo.KindOf(err), choreo.IsPermanent(err), errors.Is(err, schema.ErrTruncated))
	fmt.Println(err)
	// Output:
	// ce_type com.acme.orders.OrderPlaced, subject orders-value, value 00 00 00 00 01 0a 6f 72 64 2d 31 d0 41 00
	// decoded ord-1 4200 <nil>
	// truncated true true
	// truncated: schema: decode com.acme.orders.OrderPlaced (schema id 1): field coupon: data ends before the value: truncated avro data
}

// DecodeGeneric turns any value into JSON-ready Go values, with its writer
// schema: what a CLI prints.
func ExampleCodec_DecodeGeneric() {
	ctx := context.Background()
	codec := schema.NewCodec(schema.StaticSource{7: orderPlacedSchema})
	coupon := "SPRING"
	value, err := codec.Encode(7, orderPlacedSchema, OrderPlaced{OrderID: "ord-2", AmountCents: 999, Coupon: &coupon})
	if err != nil {
		log.Fatal(err)
	}
	v, writer, err := codec.DecodeGeneric(ctx, value)
	if err != nil {
		log.Fatal(err)
	}
	out, _ := json.Marshal(v)
	fmt.Println(writer.FullName(), string(out))
	// Output:
	// com.acme.orders.OrderPlaced {"amount_cents":999,"coupon":"SPRING","order_id":"ord-2"}
}

// Encode checks the value before anything is sent.
func ExampleCodec_Encode() {
	codec := schema.NewCodec(schema.StaticSource{})
	_, err := codec.Encode(7, orderPlacedSchema, map[string]any{"order_id": "ord-3", "amount_cents": "ten"})
	fmt.Println(choreo.KindOf(err))
	fmt.Println(err)
	// Output:
	// schema_mismatch
	// schema_mismatch: schema: encode com.acme.orders.OrderPlaced: amount_cents: avro: string is unsupported for Avro long: data does not match schema
}
