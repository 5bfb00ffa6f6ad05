package schema_test

import (
	"errors"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/schema/registry"
)

// Schemas shared by the tests of this package (external test package, so
// that it can use the embedded registry, which imports schema).

const orderPlacedV1 = `{"type":"record","name":"OrderPlaced","namespace":"com.acme.orders","fields":[
	{"name":"order_id","type":"string"},
	{"name":"customer_id","type":"string"},
	{"name":"amount_cents","type":"long"},
	{"name":"currency","type":"string"},
	{"name":"items","type":"int"},
	{"name":"placed_at","type":{"type":"long","logicalType":"timestamp-millis"}}
]}`

// v2 adds a defaulted field: backward compatible with v1.
const orderPlacedV2 = `{"type":"record","name":"OrderPlaced","namespace":"com.acme.orders","fields":[
	{"name":"order_id","type":"string"},
	{"name":"customer_id","type":"string"},
	{"name":"amount_cents","type":"long"},
	{"name":"currency","type":"string"},
	{"name":"items","type":"int"},
	{"name":"placed_at","type":{"type":"long","logicalType":"timestamp-millis"}},
	{"name":"channel","type":"string","default":"web"}
]}`

// incompatible with v1 as a reader: a new field without a default.
const orderPlacedNoDefault = `{"type":"record","name":"OrderPlaced","namespace":"com.acme.orders","fields":[
	{"name":"order_id","type":"string"},
	{"name":"coupon","type":"string"}
]}`

type orderPlaced struct {
	OrderID     string    `avro:"order_id"`
	CustomerID  string    `avro:"customer_id"`
	AmountCents int64     `avro:"amount_cents"`
	Currency    string    `avro:"currency"`
	Items       int32     `avro:"items"`
	PlacedAt    time.Time `avro:"placed_at"`
}

type orderPlacedV2Go struct {
	OrderID     string    `avro:"order_id"`
	CustomerID  string    `avro:"customer_id"`
	AmountCents int64     `avro:"amount_cents"`
	Currency    string    `avro:"currency"`
	Items       int32     `avro:"items"`
	PlacedAt    time.Time `avro:"placed_at"`
	Channel     string    `avro:"channel"`
}

func sampleOrder() orderPlaced {
	return orderPlaced{
		OrderID:     "ord-7f3a9c",
		CustomerID:  "cus-1042",
		AmountCents: 129_99,
		Currency:    "EUR",
		Items:       3,
		PlacedAt:    time.UnixMilli(1_700_000_000_123).UTC(),
	}
}

// sampleSchema has every kind the property test covers.
const sampleSchema = `{"type":"record","name":"Sample","namespace":"test.choreo","fields":[
	{"name":"s","type":"string"},
	{"name":"l","type":"long"},
	{"name":"d","type":"double"},
	{"name":"ok","type":"boolean"},
	{"name":"raw","type":"bytes"},
	{"name":"color","type":{"type":"enum","name":"Color","symbols":["RED","GREEN","BLUE"]}},
	{"name":"note","type":["null","string"],"default":null},
	{"name":"tags","type":{"type":"array","items":"string"}},
	{"name":"attrs","type":{"type":"map","values":"long"}}
]}`

type sample struct {
	S     string           `avro:"s"`
	L     int64            `avro:"l"`
	D     float64          `avro:"d"`
	OK    bool             `avro:"ok"`
	Raw   []byte           `avro:"raw"`
	Color string           `avro:"color"`
	Note  *string          `avro:"note"`
	Tags  []string         `avro:"tags"`
	Attrs map[string]int64 `avro:"attrs"`
}

func mustParse(t testing.TB, text string) *schema.Schema {
	t.Helper()
	s, err := schema.Parse(text)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return s
}

// newTestRegistryURL serves choreo's embedded schema registry (BACKWARD
// compatibility) for the test and returns its URL.
func newTestRegistryURL(t testing.TB) string {
	t.Helper()
	reg, err := registry.New(registry.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return srv.URL
}

func newTestRegistry(t testing.TB, opts ...schema.RegistryOption) *schema.Registry {
	t.Helper()
	reg, err := schema.NewRegistry([]string{newTestRegistryURL(t)}, opts...)
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	return reg
}

// wantKind fails the test unless err is of kind and wraps sentinel.
func wantKind(t testing.TB, err error, kind choreo.ErrorKind, sentinel error) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil; want kind %s", kind)
	}
	if got := choreo.KindOf(err); got != kind {
		t.Fatalf("KindOf(%v) = %s; want %s", err, got, kind)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Fatalf("errors.Is(%v, %v) = false; want true", err, sentinel)
	}
}
