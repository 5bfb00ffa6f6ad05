package schema_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/schema"
)

// fuzzSchemas are the writer schemas the fuzz targets decode with, by id.
// Id 4 is recursive, so the walker's depth limit is exercised.
func fuzzCodec(t testing.TB) (*schema.Codec, map[int]*schema.Schema) {
	schemas := map[int]*schema.Schema{
		1: mustParse(t, rejSchema),
		2: mustParse(t, sampleSchema),
		3: mustParse(t, orderPlacedV1),
		4: mustParse(t, `{"type":"record","name":"Node","namespace":"test","fields":[
			{"name":"v","type":"int"},
			{"name":"f","type":"float"},
			{"name":"fx","type":{"type":"fixed","name":"Four","size":4}},
			{"name":"next","type":["null","Node"]},
			{"name":"kids","type":{"type":"array","items":"Node"}}]}`),
		5: mustParse(t, `{"type":"array","items":"null"}`),
	}
	return schema.NewCodec(schema.StaticSource(schemas), schema.MaxBytesLength(1<<16)), schemas
}

// codecKinds are the kinds a decode may fail with on any input.
var codecKinds = map[choreo.ErrorKind]bool{
	choreo.KindEmptyValue:         true,
	choreo.KindBadMagicByte:       true,
	choreo.KindUnknownSchema:      true,
	choreo.KindTruncated:          true,
	choreo.KindTrailingBytes:      true,
	choreo.KindSchemaMismatch:     true,
	choreo.KindIncompatibleSchema: true,
	choreo.KindTooLarge:           true,
}

func fuzzSeeds(f *testing.F) {
	codec, schemas := fuzzCodec(f)
	good := [][]byte{
		wire(1, rejName, rejCount, rejFlag, rejColor, rejTags, rejNote),
		wire(4, []byte{0x02, 0, 0, 0x80, 0x3f, 1, 2, 3, 4, 0x02, 0x04, 0, 0, 0, 0, 5, 6, 7, 8, 0x00, 0x00, 0x00}),
		wire(5, []byte{0x06, 0x00}),
	}
	if d, err := codec.Encode(2, schemas[2], sample{S: "s", Color: "RED", Tags: []string{"a"}, Attrs: map[string]int64{"k": 1}}); err == nil {
		good = append(good, d)
	}
	if d, err := codec.Encode(3, schemas[3], sampleOrder()); err == nil {
		good = append(good, d)
	}
	for _, d := range good {
		f.Add(d)
		f.Add(d[:len(d)-1])                // truncated
		f.Add(append(d, 0))                // trailing
		f.Add(append([]byte{1}, d[1:]...)) // magic
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0})
	f.Add(wire(1, varint(1<<31)))
	f.Add(wire(1, rejName, rejCount, rejFlag, rejColor, varint(1<<40)))
	f.Add(wire(5, varint(-(1 << 40)), varint(0)))
	f.Add(wire(99, []byte{0}))
}

func FuzzDecode(f *testing.F) {
	fuzzSeeds(f)
	codec, schemas := fuzzCodec(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, reader := range []*schema.Schema{nil, schemas[1], schemas[3]} {
			var v any
			id, err := codec.Decode(ctx, data, reader, &v)
			if err != nil {
				if !codecKinds[choreo.KindOf(err)] {
					t.Fatalf("Decode(%x): %v has kind %s", data, err, choreo.KindOf(err))
				}
				continue
			}
			// A value that decodes validates, and re-encodes to itself
			// with its writer schema.
			if reader == nil {
				if _, err := codec.Encode(id, schemas[id], v); err != nil {
					t.Fatalf("Decode(%x) = %#v, which does not re-encode: %v", data, v, err)
				}
			}
		}
	})
}

func FuzzDecodeGeneric(f *testing.F) {
	fuzzSeeds(f)
	codec, _ := fuzzCodec(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, data []byte) {
		v, s, err := codec.DecodeGeneric(ctx, data)
		_, _, verr := codec.Validate(ctx, data)
		if (err == nil) != (verr == nil) {
			t.Fatalf("DecodeGeneric(%x) = %v but Validate = %v", data, err, verr)
		}
		if err != nil {
			if !codecKinds[choreo.KindOf(err)] {
				t.Fatalf("DecodeGeneric(%x): %v has kind %s", data, err, choreo.KindOf(err))
			}
			return
		}
		if s == nil {
			t.Fatalf("DecodeGeneric(%x) returned no schema", data)
		}
		if _, err := json.Marshal(v); err != nil {
			t.Fatalf("DecodeGeneric(%x) = %#v, not JSON-ready: %v", data, v, err)
		}
	})
}
