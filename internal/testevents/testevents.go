// Package testevents holds the event types the project's own tests publish
// and consume: Go types bound to Avro schemas, as a service would define
// them.
package testevents

import (
	"embed"
	"time"

	"github.com/choreokit/choreo/schema"
)

//go:embed *.avsc
var files embed.FS

var (
	orderPlacedSchema      = mustParse("order_placed.avsc")
	paymentRequestedSchema = mustParse("payment_requested.avsc")
)

func mustParse(name string) *schema.Schema {
	s, err := schema.ParseFile(files, name)
	if err != nil {
		panic(err)
	}
	return s
}

// OrderPlaced is a six-field event (choreo.test.OrderPlaced).
type OrderPlaced struct {
	OrderID     string    `avro:"order_id"`
	CustomerID  string    `avro:"customer_id"`
	AmountCents int64     `avro:"amount_cents"`
	Currency    string    `avro:"currency"`
	Items       int32     `avro:"items"`
	PlacedAt    time.Time `avro:"placed_at"`
}

// AvroSchema returns the schema of OrderPlaced.
func (OrderPlaced) AvroSchema() *schema.Schema { return orderPlacedSchema }

// PaymentRequested is a two-field event (choreo.test.PaymentRequested).
type PaymentRequested struct {
	OrderID     string `avro:"order_id"`
	AmountCents int64  `avro:"amount_cents"`
}

// AvroSchema returns the schema of PaymentRequested.
func (PaymentRequested) AvroSchema() *schema.Schema { return paymentRequestedSchema }
