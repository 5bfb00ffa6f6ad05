package schema_test

import (
	"context"
	"encoding/binary"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/schema"
)

// rejSchema is the writer schema of the rejection table.
const rejSchema = `{"type":"record","name":"Rej","namespace":"test.choreo","fields":[
	{"name":"name","type":"string"},
	{"name":"count","type":"long"},
	{"name":"flag","type":"boolean"},
	{"name":"color","type":{"type":"enum","name":"Color","symbols":["A","B"]}},
	{"name":"tags","type":{"type":"array","items":"string"}},
	{"name":"note","type":["null","string"]}
]}`

type rej struct {
	Name  string   `avro:"name"`
	Count int64    `avro:"count"`
	Flag  bool     `avro:"flag"`
	Color string   `avro:"color"`
	Tags  []string `avro:"tags"`
	Note  *string  `avro:"note"`
}

// Avro binary pieces of a valid Rej, and the value it is.
var (
	rejName  = []byte{0x04, 'a', 'b'} // "ab"
	rejCount = []byte{0x02}           // 1
	rejFlag  = []byte{0x01}           // true
	rejColor = []byte{0x02}           // B
	rejTags  = []byte{0x02, 0x02, 'x', 0x00}
	rejNote  = []byte{0x00} // null
	rejValue = rej{Name: "ab", Count: 1, Flag: true, Color: "B", Tags: []string{"x"}}
)

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func wire(id int, body ...[]byte) []byte {
	return append(schema.AppendHeader(nil, id), cat(body...)...)
}

func varint(v int64) []byte { return binary.AppendVarint(nil, v) }

func TestDecodeRejections(t *testing.T) {
	ctx := context.Background()
	writer := mustParse(t, rejSchema)
	incompatible := mustParse(t, `{"type":"record","name":"Rej","namespace":"test.choreo","fields":[
		{"name":"name","type":"int"}]}`)
	codec := schema.NewCodec(schema.StaticSource{1: writer})
	small := schema.NewCodec(schema.StaticSource{1: writer}, schema.MaxBytesLength(1))

	valid := wire(1, rejName, rejCount, rejFlag, rejColor, rejTags, rejNote)
	var got rej
	if _, err := codec.Decode(ctx, valid, writer, &got); err != nil {
		t.Fatalf("valid value: %v", err)
	}
	if !reflect.DeepEqual(got, rejValue) {
		t.Fatalf("valid value decoded to %+v; want %+v", got, rejValue)
	}

	tests := []struct {
		name     string
		codec    *schema.Codec
		data     []byte
		reader   *schema.Schema
		kind     choreo.ErrorKind
		sentinel error
		inMsg    string // part of the message
	}{
		{"empty value", codec, nil, writer, choreo.KindEmptyValue, schema.ErrEmptyValue, ""},
		{"wrong magic byte", codec, append([]byte{1}, valid[1:]...), writer, choreo.KindBadMagicByte, schema.ErrBadMagicByte, "0x01"},
		{"json instead of avro", codec, []byte(`{"name":"ab"}`), writer, choreo.KindBadMagicByte, schema.ErrBadMagicByte, ""},
		{"shorter than header", codec, []byte{0, 0, 0, 1}, writer, choreo.KindTruncated, schema.ErrTruncated, "header"},
		{"unknown schema id", codec, wire(99, rejName), writer, choreo.KindUnknownSchema, schema.ErrUnknownSchema, "99"},
		{"header only", codec, wire(1), writer, choreo.KindTruncated, schema.ErrTruncated, "name"},
		{"truncated trailing optional field", codec, wire(1, rejName, rejCount, rejFlag, rejColor, rejTags), writer,
			choreo.KindTruncated, schema.ErrTruncated, "field note"},
		{"truncated inside a string", codec, wire(1, []byte{0x04, 'a'}), writer, choreo.KindTruncated, schema.ErrTruncated, "field name"},
		{"truncated varint", codec, wire(1, rejName, []byte{0x80}), writer, choreo.KindTruncated, schema.ErrTruncated, "field count"},
		{"trailing bytes", codec, append(valid, 0), writer, choreo.KindTrailingBytes, schema.ErrTrailingBytes, "1 bytes follow"},
		{"invalid union index", codec, wire(1, rejName, rejCount, rejFlag, rejColor, rejTags, varint(7)), writer,
			choreo.KindSchemaMismatch, schema.ErrSchemaMismatch, "field note: union index 7"},
		{"negative union index", codec, wire(1, rejName, rejCount, rejFlag, rejColor, rejTags, varint(-1)), writer,
			choreo.KindSchemaMismatch, schema.ErrSchemaMismatch, "union index -1"},
		{"negative string length", codec, wire(1, varint(-2), rejCount, rejFlag, rejColor, rejTags, rejNote), writer,
			choreo.KindSchemaMismatch, schema.ErrSchemaMismatch, "negative string length"},
		{"invalid enum index", codec, wire(1, rejName, rejCount, rejFlag, varint(5), rejTags, rejNote), writer,
			choreo.KindSchemaMismatch, schema.ErrSchemaMismatch, "field color: enum test.choreo.Color index 5"},
		{"long varint overflow", codec, wire(1, rejName, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, rejFlag, rejColor, rejTags, rejNote), writer,
			choreo.KindSchemaMismatch, schema.ErrSchemaMismatch, "overflows 64 bits"},
		{"varint of eleven bytes", codec, wire(1, rejName, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}), writer,
			choreo.KindSchemaMismatch, schema.ErrSchemaMismatch, "overflows 64 bits"},
		{"invalid boolean", codec, wire(1, rejName, rejCount, []byte{2}, rejColor, rejTags, rejNote), writer,
			choreo.KindSchemaMismatch, schema.ErrSchemaMismatch, "field flag: invalid boolean"},
		{"string not utf-8", codec, wire(1, []byte{0x04, 0xff, 0xfe}, rejCount, rejFlag, rejColor, rejTags, rejNote), writer,
			choreo.KindSchemaMismatch, schema.ErrSchemaMismatch, "UTF-8"},
		{"array item not utf-8", codec, wire(1, rejName, rejCount, rejFlag, rejColor, []byte{0x04, 0x02, 'x', 0x02, 0xc3, 0x00}, rejNote), writer,
			choreo.KindSchemaMismatch, schema.ErrSchemaMismatch, "field tags[1]"},
		{"2 GB string in a 5-byte body", codec, wire(1, varint(1<<31)), writer, choreo.KindTruncated, schema.ErrTruncated, "2147483648 bytes"},
		{"2^40-item array", codec, wire(1, rejName, rejCount, rejFlag, rejColor, varint(1<<40)), writer,
			choreo.KindTruncated, schema.ErrTruncated, "field tags"},
		{"block size that lies", codec, wire(1, rejName, rejCount, rejFlag, rejColor, varint(-1), varint(3), []byte{0x02, 'x', 0x00}, rejNote), writer,
			choreo.KindSchemaMismatch, schema.ErrSchemaMismatch, "block size 3"},
		{"negative block count overflow", codec, wire(1, rejName, rejCount, rejFlag, rejColor, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}), writer,
			choreo.KindSchemaMismatch, schema.ErrSchemaMismatch, "overflows"},
		{"string over the limit", small, valid, writer, choreo.KindTooLarge, schema.ErrTooLarge, "limit"},
		{"incompatible reader", codec, valid, incompatible, choreo.KindIncompatibleSchema, schema.ErrIncompatibleSchema, "test.choreo.Rej"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v rej
			var vp any = &v
			if tt.reader == incompatible {
				var m map[string]any
				vp = &m
			}
			_, err := tt.codec.Decode(ctx, tt.data, tt.reader, vp)
			wantKind(t, err, tt.kind, tt.sentinel)
			if !strings.Contains(err.Error(), tt.inMsg) {
				t.Errorf("error %q does not contain %q", err, tt.inMsg)
			}
			if !choreo.IsPermanent(err) {
				t.Errorf("IsPermanent(%v) = false; want true", err)
			}
			// The generic decoder and the validator reject alike (the
			// reader schema plays no part there).
			if tt.kind != choreo.KindIncompatibleSchema {
				_, _, gerr := tt.codec.DecodeGeneric(ctx, tt.data)
				wantKind(t, gerr, tt.kind, tt.sentinel)
				_, _, verr := tt.codec.Validate(ctx, tt.data)
				wantKind(t, verr, tt.kind, tt.sentinel)
			}
		})
	}
}

// A value claiming a huge string or array must be rejected without
// allocating anything like its claim.
func TestDecodeHugeClaimsDoNotAllocate(t *testing.T) {
	ctx := context.Background()
	writer := mustParse(t, rejSchema)
	nulls := mustParse(t, `{"type":"array","items":"null"}`)
	codec := schema.NewCodec(schema.StaticSource{1: writer, 2: nulls}, schema.MaxBytesLength(1<<31))
	for _, data := range [][]byte{
		wire(1, varint(1<<31)),
		wire(1, rejName, rejCount, rejFlag, rejColor, varint(1<<40)),
		wire(2, varint(1<<40)), // items that take no bytes at all
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range 10 {
			var v any
			if _, err := codec.Decode(ctx, data, nil, &v); err == nil {
				t.Fatalf("Decode(%x) succeeded", data)
			}
		}
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
			t.Errorf("Decode(%x) ×10 allocated %d bytes; want < 1 MiB", data, n)
		}
	}
}

func TestEvolution(t *testing.T) {
	ctx := context.Background()
	v1 := mustParse(t, orderPlacedV1)
	v2 := mustParse(t, orderPlacedV2)
	reg := newTestRegistry(t)
	id1, err := reg.Register(ctx, "orders-value", v1)
	if err != nil {
		t.Fatal(err)
	}
	codec := schema.NewCodec(reg)
	data, err := codec.Encode(id1, v1, sampleOrder())
	if err != nil {
		t.Fatal(err)
	}

	var got orderPlacedV2Go
	wid, err := codec.Decode(ctx, data, v2, &got)
	if err != nil {
		t.Fatalf("decode v1 data with v2 reader: %v", err)
	}
	if wid != id1 {
		t.Errorf("writer id = %d; want %d", wid, id1)
	}
	o := sampleOrder()
	want := orderPlacedV2Go{o.OrderID, o.CustomerID, o.AmountCents, o.Currency, o.Items, o.PlacedAt, "web"}
	if !got.PlacedAt.Equal(want.PlacedAt) {
		t.Errorf("placed_at = %v; want %v", got.PlacedAt, want.PlacedAt)
	}
	got.PlacedAt = want.PlacedAt
	if got != want {
		t.Errorf("got %+v; want %+v", got, want)
	}

	// Twice more: from the plan cache, and concurrently.
	done := make(chan error, 8)
	for range 8 {
		go func() {
			var g orderPlacedV2Go
			_, err := codec.Decode(ctx, data, v2, &g)
			if err == nil && g.Channel != "web" {
				err = errors.New("channel not defaulted")
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}

	bad := mustParse(t, orderPlacedNoDefault)
	var m map[string]any
	_, err = codec.Decode(ctx, data, bad, &m)
	wantKind(t, err, choreo.KindIncompatibleSchema, schema.ErrIncompatibleSchema)
	var ie *schema.IncompatibleError
	if !errors.As(err, &ie) || len(ie.Reasons) == 0 {
		t.Errorf("error %v is not an *IncompatibleError with reasons", err)
	}
	// The verdict is cached, and stays the same.
	_, err2 := codec.Decode(ctx, data, bad, &m)
	if err2 == nil || err2.Error() != err.Error() {
		t.Errorf("second decode: %v; want %v", err2, err)
	}
}

func TestEncodeRejectsBadValues(t *testing.T) {
	s := mustParse(t, rejSchema)
	codec := schema.NewCodec(schema.StaticSource{})
	note := "n"
	tests := []struct {
		name  string
		v     any
		inMsg string
	}{
		{"unknown enum symbol", rej{Name: "a", Color: "Z"}, "Z"},
		{"string not utf-8", rej{Name: "\xff", Color: "A"}, "field name"},
		{"missing map field", map[string]any{"name": "a", "count": int64(1)}, "flag"},
		{"wrong map field type", map[string]any{"name": 5, "count": int64(1), "flag": true, "color": "A", "tags": []string{}, "note": nil}, "name"},
		{"wrong union branch", map[string]any{"name": "a", "count": int64(1), "flag": true, "color": "A", "tags": []string{}, "note": 3.5}, "note"},
		{"struct missing fields", struct {
			Name string `avro:"name"`
		}{"a"}, "count"},
		{"nil", nil, "nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := codec.Encode(1, s, tt.v)
			if out != nil {
				t.Errorf("Encode returned %x with error", out)
			}
			wantKind(t, err, choreo.KindSchemaMismatch, schema.ErrSchemaMismatch)
			if !strings.Contains(err.Error(), tt.inMsg) {
				t.Errorf("error %q does not name %q", err, tt.inMsg)
			}
			dst := []byte("keep")
			got, err := codec.AppendEncode(dst, 1, s, tt.v)
			if err == nil || string(got) != "keep" {
				t.Errorf("AppendEncode = %q, %v; want dst unchanged and an error", got, err)
			}
		})
	}
	if _, err := codec.Encode(1, s, rej{Name: "a", Color: "A", Note: &note}); err != nil {
		t.Errorf("valid value: %v", err)
	}
	if _, err := codec.Encode(-1, s, rej{Name: "a", Color: "A"}); !choreo.IsPermanent(err) {
		t.Errorf("negative id: %v; want a permanent error", err)
	}
}

func TestAppendEncodeDoesNotAllocate(t *testing.T) {
	s := mustParse(t, orderPlacedV1)
	codec := schema.NewCodec(schema.StaticSource{1: s})
	v := sampleOrder()
	buf := make([]byte, 0, 256)
	if _, err := codec.AppendEncode(buf, 1, s, &v); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := codec.AppendEncode(buf[:0], 1, s, &v); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("AppendEncode allocated %v times per call; want 0", allocs)
	}
}

func TestWireFormat(t *testing.T) {
	ctx := context.Background()
	s := mustParse(t, rejSchema)
	codec := schema.NewCodec(schema.StaticSource{0x01020304: s})
	data, err := codec.Encode(0x01020304, s, rejValue)
	if err != nil {
		t.Fatal(err)
	}
	want := wire(0x01020304, rejName, rejCount, rejFlag, rejColor, rejTags, rejNote)
	if string(data) != string(want) {
		t.Fatalf("Encode = %x; want %x", data, want)
	}
	if data[0] != 0 || binary.BigEndian.Uint32(data[1:5]) != 0x01020304 {
		t.Fatalf("header %x; want 00 01020304", data[:5])
	}
	id, body, err := schema.ParseHeader(data)
	if err != nil || id != 0x01020304 || len(body) != len(data)-5 {
		t.Fatalf("ParseHeader = %d, %x, %v", id, body, err)
	}
	var got rej
	if wid, err := codec.Decode(ctx, data, nil, &got); err != nil || wid != 0x01020304 {
		t.Fatalf("Decode = %d, %v", wid, err)
	}
	if !reflect.DeepEqual(got, rejValue) {
		t.Fatalf("got %+v; want %+v", got, rejValue)
	}
}

func TestDecodeGeneric(t *testing.T) {
	ctx := context.Background()
	s := mustParse(t, `{"type":"record","name":"G","namespace":"test","fields":[
		{"name":"i","type":"int"},
		{"name":"l","type":"long"},
		{"name":"f","type":"float"},
		{"name":"d","type":"double"},
		{"name":"nan","type":"double"},
		{"name":"b","type":"bytes"},
		{"name":"fx","type":{"type":"fixed","name":"F2","size":2}},
		{"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"]}},
		{"name":"u","type":["null","string"]},
		{"name":"un","type":["null","string"]},
		{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
		{"name":"day","type":{"type":"int","logicalType":"date"}},
		{"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":6,"scale":2}},
		{"name":"arr","type":{"type":"array","items":"int"}},
		{"name":"m","type":{"type":"map","values":"boolean"}},
		{"name":"r","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"string"}]}}
	]}`)
	u := "hello"
	in := map[string]any{
		"i": 7, "l": int64(-9), "f": float32(1.5), "d": 2.25, "nan": nanValue(),
		"b": []byte("hi"), "fx": [2]byte{1, 2}, "e": "Y", "u": &u, "un": nil,
		"ts":  timeMillis(1_700_000_000_123),
		"day": timeMillis(86_400_000 * 3),
		"dec": ratValue(-1250, 100),
		"arr": []int{1, 2}, "m": map[string]bool{"k": true},
		"r": map[string]any{"x": "in"},
	}
	codec := schema.NewCodec(schema.StaticSource{3: s})
	data, err := codec.Encode(3, s, in)
	if err != nil {
		t.Fatal(err)
	}
	v, ws, err := codec.DecodeGeneric(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if ws.FullName() != "test.G" {
		t.Errorf("schema %s; want test.G", ws.FullName())
	}
	want := map[string]any{
		"i": int32(7), "l": int64(-9), "f": float32(1.5), "d": 2.25, "nan": "NaN",
		"b": "aGk=", "fx": "AQI=", "e": "Y", "u": "hello", "un": nil,
		"ts": "2023-11-14T22:13:20.123Z", "day": "1970-01-04", "dec": "-12.50",
		"arr": []any{int32(1), int32(2)}, "m": map[string]any{"k": true},
		"r": map[string]any{"x": "in"},
	}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("DecodeGeneric =\n%#v\nwant\n%#v", v, want)
	}
}

// Readers that differ only in a default have the same canonical form, but
// must not share a resolution.
func TestResolutionDependsOnDefaults(t *testing.T) {
	ctx := context.Background()
	v1 := mustParse(t, orderPlacedV1)
	web := mustParse(t, orderPlacedV2)
	app := mustParse(t, strings.Replace(orderPlacedV2, `"default":"web"`, `"default":"app"`, 1))
	none := mustParse(t, strings.Replace(orderPlacedV2, `,"default":"web"`, ``, 1))
	if !web.Equal(app) || !web.Equal(none) {
		t.Fatal("test premise: the three readers should share a canonical form")
	}
	codec := schema.NewCodec(schema.StaticSource{1: v1})
	data, err := codec.Encode(1, v1, sampleOrder())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		reader *schema.Schema
		want   string
	}{{web, "web"}, {app, "app"}, {none, ""}, {web, "web"}} {
		var got orderPlacedV2Go
		_, err := codec.Decode(ctx, data, tt.reader, &got)
		if tt.want == "" {
			wantKind(t, err, choreo.KindIncompatibleSchema, schema.ErrIncompatibleSchema)
			continue
		}
		if err != nil || got.Channel != tt.want {
			t.Errorf("channel = %q, %v; want %q", got.Channel, err, tt.want)
		}
	}
}

// hamba/avro writes a Go int into an Avro int as int32(v): 1<<40 would be
// sent as 0. The codec refuses it instead.
func TestEncodeRejectsIntOverflow(t *testing.T) {
	s := mustParse(t, `{"type":"record","name":"Counts","namespace":"test","fields":[
		{"name":"n","type":"int"},
		{"name":"opt","type":["null","int"],"default":null},
		{"name":"list","type":{"type":"array","items":"int"}},
		{"name":"by_key","type":{"type":"map","values":"int"}},
		{"name":"wide","type":"long"}
	]}`)
	type counts struct {
		N     int            `avro:"n"`
		Opt   *int           `avro:"opt"`
		List  []int          `avro:"list"`
		ByKey map[string]int `avro:"by_key"`
		Wide  int            `avro:"wide"`
	}
	big := 1 << 40
	codec := schema.NewCodec(schema.StaticSource{})
	tests := []struct {
		name  string
		v     any
		field string
	}{
		{"struct field", counts{N: big}, "field n"},
		{"negative", counts{N: -big}, "field n"},
		{"optional", counts{Opt: &big}, "field opt"},
		{"array item", counts{List: []int{1, big}}, "field list[1]"},
		{"map value", counts{ByKey: map[string]int{"k": big}}, `field by_key["k"]`},
		{"generic map", map[string]any{"n": big, "opt": nil, "list": []int{}, "by_key": map[string]int{}, "wide": 1}, "field n"},
		{"pointer to struct", &counts{N: big}, "field n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := codec.Encode(1, s, tt.v)
			wantKind(t, err, choreo.KindSchemaMismatch, schema.ErrSchemaMismatch)
			if !strings.Contains(err.Error(), tt.field) || !strings.Contains(err.Error(), "overflows Avro int") {
				t.Errorf("error %q does not name %s", err, tt.field)
			}
		})
	}
	// In range, and a Go int into an Avro long, are fine.
	small := 7
	if _, err := codec.Encode(1, s, counts{N: -1 << 31, Opt: &small, List: []int{1<<31 - 1}, Wide: big}); err != nil {
		t.Errorf("in-range values: %v", err)
	}
}

func TestEncodeErrorNamesAvroField(t *testing.T) {
	s := mustParse(t, orderPlacedV1)
	type wrong struct {
		OrderID     string `avro:"order_id"`
		CustomerID  string `avro:"customer_id"`
		AmountCents string `avro:"amount_cents"`
		Currency    string `avro:"currency"`
		Items       int32  `avro:"items"`
		PlacedAt    int64  `avro:"placed_at"`
	}
	_, err := schema.NewCodec(schema.StaticSource{}).Encode(1, s, wrong{})
	wantKind(t, err, choreo.KindSchemaMismatch, schema.ErrSchemaMismatch)
	if !strings.Contains(err.Error(), "field amount_cents (Go field AmountCents)") {
		t.Errorf("error %q does not name the Avro field", err)
	}
}
