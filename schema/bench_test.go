package schema_test

import (
	"context"
	"testing"

	"github.com/choreokit/choreo/schema"
	"github.com/hamba/avro/v2"
)

// The benchmarks use a 6-field event (OrderPlaced: two ids, an amount, a
// currency, an item count and a timestamp-millis). BenchmarkRawHamba*
// measure hamba/avro alone on the same schema and value, so the cost of
// the wire format, the strictness checks and the caches is the difference.
//
//	go test -run '^$' -bench . -benchmem ./schema

func benchSetup(b *testing.B) (*schema.Codec, *schema.Schema, orderPlaced, []byte) {
	s := mustParse(b, orderPlacedV1)
	codec := schema.NewCodec(schema.StaticSource{7: s})
	v := sampleOrder()
	data, err := codec.Encode(7, s, &v)
	if err != nil {
		b.Fatal(err)
	}
	return codec, s, v, data
}

func BenchmarkEncode(b *testing.B) {
	codec, s, v, _ := benchSetup(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := codec.Encode(7, s, &v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendEncode(b *testing.B) {
	codec, s, v, _ := benchSetup(b)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = codec.AppendEncode(buf[:0], 7, s, &v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	codec, s, _, data := benchSetup(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		var v orderPlaced
		if _, err := codec.Decode(ctx, data, s, &v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeResolved reads v1 data with the v2 reader schema (one
// defaulted field more): the resolution is cached per (writer id, reader).
func BenchmarkDecodeResolved(b *testing.B) {
	codec, _, _, data := benchSetup(b)
	v2 := mustParse(b, orderPlacedV2)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		var v orderPlacedV2Go
		if _, err := codec.Decode(ctx, data, v2, &v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeParallel(b *testing.B) {
	codec, s, _, data := benchSetup(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var v orderPlaced
			if _, err := codec.Decode(ctx, data, s, &v); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkDecodeGeneric(b *testing.B) {
	codec, _, _, data := benchSetup(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := codec.DecodeGeneric(ctx, data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	codec, _, _, data := benchSetup(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := codec.Validate(ctx, data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawHambaMarshal(b *testing.B) {
	s := avro.MustParse(orderPlacedV1)
	v := sampleOrder()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := avro.Marshal(s, &v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawHambaUnmarshal(b *testing.B) {
	s := avro.MustParse(orderPlacedV1)
	v := sampleOrder()
	data, err := avro.Marshal(s, &v)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var v orderPlaced
		if err := avro.Unmarshal(s, data, &v); err != nil {
			b.Fatal(err)
		}
	}
}
