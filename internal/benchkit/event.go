package benchkit

import (
	_ "embed"
	"fmt"
	"strings"
	"time"

	"github.com/choreokit/choreo/schema"
)

//go:embed order_placed.avsc
var orderPlacedText string

var orderPlacedSchema = schema.MustParse(orderPlacedText)

// OrderPlaced is the event every scenario sends: six fields, its size set
// by the length of the shipping address (see Events).
type OrderPlaced struct {
	OrderID         string    `avro:"order_id"`
	CustomerEmail   string    `avro:"customer_email"`
	ShippingAddress string    `avro:"shipping_address"`
	AmountCents     int64     `avro:"amount_cents"`
	Currency        string    `avro:"currency"`
	PlacedAt        time.Time `avro:"placed_at"`
}

// AvroSchema binds OrderPlaced to its schema, choreo.bench.OrderPlaced.
func (OrderPlaced) AvroSchema() *schema.Schema { return orderPlacedSchema }

// Value sizes Events accepts: the encoded value, with the 5-byte wire
// format header, of an event with an empty address is a little under
// MinSize; MaxSize stays under Kafka's default limit of a record batch
// (1 MiB) with the headers added.
const (
	MinSize = 64
	MaxSize = 1_000_000
)

// Events makes the benchmark events of one value size.
type Events struct {
	pad  int    // length of the address
	text string // where addresses are cut from: len(text) > pad
	size int
}

// addressText returns n bytes of text made of short pseudo-random words,
// the same for every run. Addresses are cut from it at different offsets,
// so that events differ from one another and compress like text, not like
// one string repeated (franz-go compresses batches by default).
func addressText(n int) string {
	var b strings.Builder
	b.Grow(n + 16)
	x := uint64(0x9e3779b97f4a7c15)
	for b.Len() < n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for range 2 + x%7 {
			b.WriteByte(byte('a' + x%26))
			x /= 26
		}
		if x%5 == 0 {
			b.WriteString(", ")
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()[:n]
}

// NewEvents returns the events whose encoded values (wire format header
// included) are size bytes, give or take the two bytes an amount's
// varint varies by.
func NewEvents(size int) (*Events, error) {
	if size < MinSize || size > MaxSize {
		return nil, fmt.Errorf("value size %d: want %d to %d bytes", size, MinSize, MaxSize)
	}
	e := &Events{text: addressText(max(size, 64<<10) + 1)}
	codec := schema.NewCodec(schema.StaticSource{1: orderPlacedSchema})
	measure := func() (int, error) {
		v, err := codec.Encode(1, orderPlacedSchema, e.Event(0, 1))
		return len(v), err
	}
	base, err := measure()
	if err != nil {
		return nil, fmt.Errorf("encode the benchmark event: %w", err)
	}
	// The address's length prefix grows with it: shorten until it fits.
	for e.pad = size - base; e.pad > 0; e.pad-- {
		n, err := measure()
		if err != nil {
			return nil, fmt.Errorf("encode the benchmark event: %w", err)
		}
		if n <= size {
			break
		}
	}
	e.size, _ = measure()
	return e, nil
}

// Size returns the encoded size of the first event, header included.
func (e *Events) Size() int { return e.size }

// Key returns the key of the i-th event when there are keys distinct keys.
func Key(i, keys int) string { return fmt.Sprintf("order-%08d", i%keys) }

// address returns the address of the i-th event: pad bytes of the text,
// from an offset that varies with i.
func (e *Events) address(i int) string {
	off := int(uint64(i) * 7919 % uint64(len(e.text)-e.pad))
	return e.text[off : off+e.pad]
}

// Event returns the i-th event, keyed as Key(i, keys) says.
func (e *Events) Event(i, keys int) OrderPlaced {
	return OrderPlaced{
		OrderID:         Key(i, keys),
		CustomerEmail:   fmt.Sprintf("customer-%07d@example.com", i%1_000_003),
		ShippingAddress: e.address(i),
		AmountCents:     int64(100 + i%100_000),
		Currency:        [...]string{"EUR", "USD", "GBP"}[i%3],
		PlacedAt:        time.UnixMilli(1_760_000_000_000 + int64(i)).UTC(),
	}
}
