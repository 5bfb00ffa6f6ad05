// Package events holds the domain events of the example shop: their Avro
// schemas (the .avsc files in this directory, embedded into the binary) and
// the Go types the services publish and handle.
//
// # Topics
//
// One topic per aggregate, several event types per topic, every record
// keyed by the order id so that all the events of one order stay in order
// within their topic:
//
//	orders     OrderPlaced, OrderCompleted, OrderCancelled   (order-service)
//	payments   PaymentAuthorized, PaymentDeclined            (payment-service)
//	shipments  ShipmentScheduled, ShipmentDispatched         (shipping-service)
//
// Because a topic carries several record types, producers name registry
// subjects per type with producer.Subjects(schema.TopicRecordNameStrategy)
// ("orders-shop.orders.OrderPlaced" …). Under the default
// TopicNameStrategy the topic's one subject would hold one evolving type
// only, and the registry would refuse the second type as incompatible.
//
// # Evolution
//
// Every schema here is version 2: version 1 plus one field with a default
// (testdata/v1 keeps version 1). A consumer built with version 2 reads
// events written with version 1 (the field takes its default), and one
// still on version 1 reads events written with version 2 (it ignores the
// new field): the change is FULL_TRANSITIVE compatible, so producers and
// consumers can be upgraded in any order. events_test.go proves it, with
// choreo's compatibility check and through a registry.
package events

import (
	"embed"

	"github.com/choreokit/choreo/schema"
)

// The topics of the shop, one per aggregate.
const (
	TopicOrders    = "orders"    // OrderPlaced, OrderCompleted, OrderCancelled
	TopicPayments  = "payments"  // PaymentAuthorized, PaymentDeclined
	TopicShipments = "shipments" // ShipmentScheduled, ShipmentDispatched
)

//go:embed *.avsc
var files embed.FS

// The parsed schemas. A schema file that does not parse is a bug found by
// the first test or the first start, so parsing panics.
var (
	orderPlaced        = mustParse("order_placed.avsc")
	orderCompleted     = mustParse("order_completed.avsc")
	orderCancelled     = mustParse("order_cancelled.avsc")
	paymentAuthorized  = mustParse("payment_authorized.avsc")
	paymentDeclined    = mustParse("payment_declined.avsc")
	shipmentScheduled  = mustParse("shipment_scheduled.avsc")
	shipmentDispatched = mustParse("shipment_dispatched.avsc")
)

func mustParse(name string) *schema.Schema {
	s, err := schema.ParseFile(files, name)
	if err != nil {
		panic(err)
	}
	return s
}

// All returns one value of every event type, for code that registers or
// checks all the schemas (producer.Require, tests).
func All() []schema.Event {
	return []schema.Event{
		OrderPlaced{}, OrderCompleted{}, OrderCancelled{},
		PaymentAuthorized{}, PaymentDeclined{},
		ShipmentScheduled{}, ShipmentDispatched{},
	}
}

// OrderPlaced says a customer placed an order (shop.orders.OrderPlaced, on
// topic orders).
type OrderPlaced struct {
	OrderID     string `avro:"order_id"`
	Customer    string `avro:"customer"`     // e-mail address
	AmountCents int64  `avro:"amount_cents"` // in the currency's minor unit
	Currency    string `avro:"currency"`     // ISO 4217; v2, "EUR" in v1 events
}

// AvroSchema returns the schema of OrderPlaced.
func (OrderPlaced) AvroSchema() *schema.Schema { return orderPlaced }

// OrderCompleted says the order was paid and dispatched
// (shop.orders.OrderCompleted, on topic orders).
type OrderCompleted struct {
	OrderID    string `avro:"order_id"`
	ShipmentID string `avro:"shipment_id"` // v2, "" in v1 events
}

// AvroSchema returns the schema of OrderCompleted.
func (OrderCompleted) AvroSchema() *schema.Schema { return orderCompleted }

// Codes of OrderCancelled.Code.
const (
	CancelPaymentDeclined = "payment_declined"
	CancelUnspecified     = "unspecified" // the default of v1 events
)

// OrderCancelled says the order was cancelled, the compensation of a
// declined payment (shop.orders.OrderCancelled, on topic orders).
type OrderCancelled struct {
	OrderID string `avro:"order_id"`
	Reason  string `avro:"reason"` // for people
	Code    string `avro:"code"`   // for programs; v2, CancelUnspecified in v1 events
}

// AvroSchema returns the schema of OrderCancelled.
func (OrderCancelled) AvroSchema() *schema.Schema { return orderCancelled }

// PaymentAuthorized says the customer was charged for the order
// (shop.payments.PaymentAuthorized, on topic payments).
type PaymentAuthorized struct {
	OrderID         string `avro:"order_id"`
	AuthorizationID string `avro:"authorization_id"` // the gateway's id of the charge
	AmountCents     int64  `avro:"amount_cents"`
	Currency        string `avro:"currency"` // v2, "EUR" in v1 events
}

// AvroSchema returns the schema of PaymentAuthorized.
func (PaymentAuthorized) AvroSchema() *schema.Schema { return paymentAuthorized }

// PaymentDeclined says the order was not charged and will not be
// (shop.payments.PaymentDeclined, on topic payments).
type PaymentDeclined struct {
	OrderID     string `avro:"order_id"`
	AmountCents int64  `avro:"amount_cents"`
	Reason      string `avro:"reason"`
	LimitCents  int64  `avro:"limit_cents"` // the limit exceeded; v2, 0 in v1 events
}

// AvroSchema returns the schema of PaymentDeclined.
func (PaymentDeclined) AvroSchema() *schema.Schema { return paymentDeclined }

// ShipmentScheduled says a paid order got a shipment
// (shop.shipping.ShipmentScheduled, on topic shipments).
type ShipmentScheduled struct {
	OrderID       string `avro:"order_id"`
	ShipmentID    string `avro:"shipment_id"`
	Carrier       string `avro:"carrier"`
	EstimatedDays int32  `avro:"estimated_days"` // v2, 3 in v1 events
}

// AvroSchema returns the schema of ShipmentScheduled.
func (ShipmentScheduled) AvroSchema() *schema.Schema { return shipmentScheduled }

// ShipmentDispatched says the parcel left the warehouse
// (shop.shipping.ShipmentDispatched, on topic shipments).
type ShipmentDispatched struct {
	OrderID        string `avro:"order_id"`
	ShipmentID     string `avro:"shipment_id"`
	TrackingNumber string `avro:"tracking_number"`
	Carrier        string `avro:"carrier"` // v2, "" in v1 events
}

// AvroSchema returns the schema of ShipmentDispatched.
func (ShipmentDispatched) AvroSchema() *schema.Schema { return shipmentDispatched }
