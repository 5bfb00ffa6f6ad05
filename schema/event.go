package schema

// Event is a Go type bound to the Avro schema it is written with. The
// producer publishes Events and the consumer decodes records into them, so
// a type names its schema once:
//
//	type OrderPlaced struct {
//		OrderID string `avro:"order_id"`
//	}
//
//	func (OrderPlaced) AvroSchema() *schema.Schema { return orderPlacedSchema }
//
// Implement AvroSchema on the value receiver, so that both T and *T are
// Events and the consumer can ask a zero T for its schema.
type Event interface {
	AvroSchema() *Schema
}
