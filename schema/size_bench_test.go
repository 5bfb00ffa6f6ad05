package schema_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/choreokit/choreo/schema"
)

// The benchmarks of bench_test.go use a small event (about 50 bytes).
// These add what the producer and the consumer see at other sizes, and
// encoding from several goroutines at once, as several publishers do:
//
//	go test -run '^$' -bench 'Size|EncodeParallel' ./schema

// orderWithNote is orderPlacedV1 with a free-text note that sets the size.
const orderWithNote = `{"type":"record","name":"OrderNoted","namespace":"com.acme.orders","fields":[
	{"name":"order_id","type":"string"},
	{"name":"customer_id","type":"string"},
	{"name":"amount_cents","type":"long"},
	{"name":"currency","type":"string"},
	{"name":"items","type":"int"},
	{"name":"note","type":"string"}
]}`

type orderNoted struct {
	OrderID     string `avro:"order_id"`
	CustomerID  string `avro:"customer_id"`
	AmountCents int64  `avro:"amount_cents"`
	Currency    string `avro:"currency"`
	Items       int32  `avro:"items"`
	Note        string `avro:"note"`
}

// BenchmarkSize measures Encode, AppendEncode (into a reused buffer) and
// Decode of a six-field event of about 64 B, 200 B (the consume
// benchmark's), 1 KiB and 16 KiB, most of it one string. It reports the
// value size as bytes/op's MB/s.
func BenchmarkSize(b *testing.B) {
	s := mustParse(b, orderWithNote)
	codec := schema.NewCodec(schema.StaticSource{7: s})
	ctx := context.Background()
	for _, size := range []int{64, 200, 1024, 16 << 10} {
		v := orderNoted{OrderID: "ord-7f3a9c", CustomerID: "cus-1042", AmountCents: 129_99, Currency: "EUR", Items: 3}
		base, err := codec.Encode(7, s, &v)
		if err != nil {
			b.Fatal(err)
		}
		v.Note = strings.Repeat("n", max(size-len(base)-2, 0))
		data, err := codec.Encode(7, s, &v)
		if err != nil {
			b.Fatal(err)
		}
		name := strconv.Itoa(size) + "B"
		b.Run("encode/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := codec.Encode(7, s, &v); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("append-encode/"+name, func(b *testing.B) {
			buf := make([]byte, 0, 2*len(data))
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if buf, err = codec.AppendEncode(buf[:0], 7, s, &v); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("decode/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				var out orderNoted
				if _, err := codec.Decode(ctx, data, s, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodeParallel is BenchmarkEncode from GOMAXPROCS goroutines
// sharing one codec, as concurrent publishers share a producer's.
func BenchmarkEncodeParallel(b *testing.B) {
	codec, s, v, _ := benchSetup(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		v := v
		for pb.Next() {
			if _, err := codec.Encode(7, s, &v); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
