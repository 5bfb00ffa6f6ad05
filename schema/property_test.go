package schema_test

import (
	"context"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/schema"
)

// randString returns a string of random runes: ASCII, multi-byte, and
// now and then an empty one.
func randString(r *rand.Rand) string {
	n := r.IntN(12)
	var b strings.Builder
	for range n {
		switch r.IntN(4) {
		case 0:
			b.WriteRune(rune(0x20 + r.IntN(0x5f)))
		case 1:
			b.WriteRune(rune(0xa0 + r.IntN(0x700)))
		case 2:
			b.WriteRune(rune(0x1f300 + r.IntN(0x300))) // four bytes in UTF-8
		default:
			b.WriteRune(rune(r.IntN(0x80)))
		}
	}
	return b.String()
}

func randSample(r *rand.Rand) sample {
	v := sample{
		S:     randString(r),
		L:     int64(r.Uint64()),
		OK:    r.IntN(2) == 1,
		Raw:   make([]byte, r.IntN(20)),
		Color: []string{"RED", "GREEN", "BLUE"}[r.IntN(3)],
		Tags:  make([]string, r.IntN(5)),
		Attrs: make(map[string]int64),
	}
	switch r.IntN(4) { // edges as often as random values
	case 0:
		v.L = []int64{0, -1, 1, math.MinInt64, math.MaxInt64}[r.IntN(5)]
	}
	for {
		v.D = math.Float64frombits(r.Uint64())
		if !math.IsNaN(v.D) { // NaN != NaN would fail the comparison, not the codec
			break
		}
	}
	for i := range v.Raw {
		v.Raw[i] = byte(r.Uint32())
	}
	if r.IntN(2) == 1 {
		note := randString(r)
		v.Note = &note
	}
	for i := range v.Tags {
		v.Tags[i] = randString(r)
	}
	for range r.IntN(5) {
		v.Attrs[randString(r)] = r.Int64() - math.MaxInt64/2
	}
	return v
}

// Encode then Decode is the identity, and DecodeGeneric agrees, on random
// values of a schema with strings, longs, doubles, booleans, bytes, an
// enum, an optional union, an array and a map.
func TestEncodeDecodeIdentity(t *testing.T) {
	ctx := context.Background()
	s := mustParse(t, sampleSchema)
	codec := schema.NewCodec(schema.StaticSource{11: s})
	for _, seed := range []uint64{1, 2, 3, 42, 2024} {
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		for i := range 500 {
			in := randSample(r)
			data, err := codec.Encode(11, s, in)
			if err != nil {
				t.Fatalf("seed %d #%d: Encode(%+v): %v", seed, i, in, err)
			}
			var out sample
			if _, err := codec.Decode(ctx, data, s, &out); err != nil {
				t.Fatalf("seed %d #%d: Decode: %v", seed, i, err)
			}
			if !reflect.DeepEqual(in, out) {
				t.Fatalf("seed %d #%d: round trip\n got %#v\nwant %#v", seed, i, out, in)
			}
			g, _, err := codec.DecodeGeneric(ctx, data)
			if err != nil {
				t.Fatalf("seed %d #%d: DecodeGeneric: %v", seed, i, err)
			}
			m := g.(map[string]any)
			if m["s"] != in.S || m["l"] != in.L || m["ok"] != in.OK || m["color"] != in.Color ||
				len(m["tags"].([]any)) != len(in.Tags) || len(m["attrs"].(map[string]any)) != len(in.Attrs) {
				t.Fatalf("seed %d #%d: DecodeGeneric = %v; want %+v", seed, i, m, in)
			}
			if (in.Note == nil) != (m["note"] == nil) {
				t.Fatalf("seed %d #%d: note %v; want %v", seed, i, m["note"], in.Note)
			}
			// Every strict prefix is truncated, never accepted.
			if cut := 5 + r.IntN(len(data)-5); cut < len(data) {
				var v sample
				if _, err := codec.Decode(ctx, data[:cut], s, &v); choreo.KindOf(err) != choreo.KindTruncated {
					t.Fatalf("seed %d #%d: prefix of %d/%d bytes: %v; want truncated", seed, i, cut, len(data), err)
				}
			}
		}
	}
}
