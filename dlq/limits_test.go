package dlq_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/schema"
)

// envelopeV1Text is the envelope schema as first released, before the
// value_size, value_sha256, value_truncated and headers_truncated fields.
//
//go:embed testdata/deadletter-v1.avsc
var envelopeV1Text string

// wireBytes is the size of a batch of one record, uncompressed, as
// franz-go counts it against ProducerBatchMaxBytes, give or take the
// varint sizes.
func wireBytes(r *kgo.Record) int {
	n := 61 + 4 + 21 + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += 2 + len(h.Key) + len(h.Value)
	}
	return n
}

// A 2 MiB value on a dead-letter topic that takes records of 1 MiB and
// 64 KiB: the writer keeps its first bytes, its size and its hash, and
// says so; the broker takes it.
func TestWriterCutsTooLargeValue(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const limit = 64<<10 + 1<<20 // what a consumer with MaxValueBytes(64 KiB) provisions
	_, topic := e.dlqTopic(t, limit)

	value := make([]byte, 2<<20)
	_, _ = rand.Read(value) // incompressible
	orig := &kgo.Record{Topic: "orders", Partition: 1, Offset: 7, Key: []byte("k"), Value: value,
		Headers: []kgo.RecordHeader{{Key: choreo.HeaderID, Value: []byte("id-1")}, {Key: "x-null"}}}
	w := dlq.NewWriter(e.c.Client(t, kgo.ProducerBatchMaxBytes(limit)), e.reg, dlq.MaxRecordBytes(limit))
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := w.Write(wctx, topic, dlq.New(orig, dlq.Failure{Err: choreo.Errorf(choreo.KindTooLarge, "too large")})); err != nil {
		t.Fatalf("Write of a 2 MiB original under a %d-byte limit: %v", limit, err)
	}
	got := e.consume(t, topic, 1)[0]
	if n := wireBytes(got); n > limit {
		t.Errorf("dead letter of about %d bytes; want at most %d", n, limit)
	}
	back, err := dlq.Decode(ctx, e.codec, got)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	o := back.Original
	sum := sha256.Sum256(value)
	switch {
	case !o.ValueTruncated || o.HeadersTruncated || !o.Truncated():
		t.Errorf("value truncated %v, headers truncated %v; want true, false", o.ValueTruncated, o.HeadersTruncated)
	case o.ValueSize == nil || *o.ValueSize != int64(len(value)):
		t.Errorf("value size %v; want %d", o.ValueSize, len(value))
	case !bytes.Equal(o.ValueSHA256, sum[:]):
		t.Errorf("value sha256 %x; want %x", o.ValueSHA256, sum)
	case len(o.Value) < 1<<20 || !bytes.HasPrefix(value, o.Value):
		t.Errorf("kept %d bytes (a prefix: %v); want the first megabyte or more of the value", len(o.Value), bytes.HasPrefix(value, o.Value))
	case len(o.Headers) != 2 || string(o.Headers[0].Value) != "id-1" || o.Headers[1].Value != nil:
		t.Errorf("headers %v; want them whole", o.Headers)
	}
	if v := back.View(ctx, e.codec); !v.Original.ValueTruncated || !strings.HasPrefix(v.Original.ValueError, "truncated") {
		t.Errorf("view: truncated %v, value error %q; want true, truncated", v.Original.ValueTruncated, v.Original.ValueError)
	}
}

// Headers larger than the record may be are cut, the largest first: the
// small ones and the value stay whole.
func TestWriterCutsLargeHeaders(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const limit = 1 << 20
	_, topic := e.dlqTopic(t, limit)

	huge := bytes.Repeat([]byte("h"), 3<<20)
	orig := &kgo.Record{Topic: "orders", Key: []byte("k"), Value: []byte("small value"),
		Headers: []kgo.RecordHeader{
			{Key: choreo.HeaderID, Value: []byte("id-1")},
			{Key: "x-huge", Value: huge},
			{Key: choreo.HeaderTraceParent, Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")},
		}}
	w := dlq.NewWriter(e.c.Client(t, kgo.ProducerBatchMaxBytes(limit)), e.reg, dlq.MaxRecordBytes(limit))
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := w.Write(wctx, topic, dlq.New(orig, dlq.Failure{Err: errors.New("boom")})); err != nil {
		t.Fatalf("Write with a 3 MiB header under a %d-byte limit: %v", limit, err)
	}
	got := e.consume(t, topic, 1)[0]
	if n := wireBytes(got); n > limit {
		t.Errorf("dead letter of about %d bytes; want at most %d", n, limit)
	}
	back, err := dlq.Decode(ctx, e.codec, got)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	o := back.Original
	if !o.HeadersTruncated || o.ValueTruncated || string(o.Value) != "small value" {
		t.Errorf("headers truncated %v, value truncated %v, value %q; want true, false, the value whole", o.HeadersTruncated, o.ValueTruncated, o.Value)
	}
	if len(o.Headers) != 3 || string(o.Headers[0].Value) != "id-1" || string(o.Headers[2].Value) != string(orig.Headers[2].Value) {
		t.Fatalf("headers %d; want 3, the small ones whole", len(o.Headers))
	}
	if h := o.Headers[1].Value; len(h) < limit/2 || len(h) >= limit || !bytes.HasPrefix(huge, h) {
		t.Errorf("huge header cut to %d bytes; want a prefix of what fits (between half the limit and the limit)", len(h))
	}
	if v, _ := header(got, choreo.HeaderTraceParent); v != string(orig.Headers[2].Value) {
		t.Errorf("copied traceparent %q; want it whole", v)
	}
}

// Without MaxRecordBytes, only the codec's limit cuts: a value over it is
// cut to it instead of failing every Write.
func TestWriterCutsValueOverCodecLimit(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, topic := e.dlqTopic(t, 1<<20)
	value := make([]byte, 300<<10)
	_, _ = rand.Read(value)
	w := dlq.NewWriter(e.c.Client(t), e.reg, dlq.MaxBytesLength(100<<10))
	if err := w.Write(ctx, topic, dlq.New(&kgo.Record{Topic: "orders", Value: value}, dlq.Failure{Err: errors.New("boom")})); err != nil {
		t.Fatalf("Write: %v", err)
	}
	back, err := dlq.Decode(ctx, schema.NewCodec(e.reg), e.consume(t, topic, 1)[0])
	if err != nil {
		t.Fatal(err)
	}
	if o := back.Original; !o.ValueTruncated || len(o.Value) != 100<<10 || *o.ValueSize != int64(len(value)) {
		t.Errorf("truncated %v, kept %d of %v bytes; want true, 100 KiB of %d", o.ValueTruncated, len(o.Value), *o.ValueSize, len(value))
	}
}

// The envelope evolves compatibly: the fields added for cut originals
// have defaults, so a reader of the first version reads new envelopes and
// this version reads old ones, and a registry with either compatibility
// direction takes the new version after the old.
func TestEnvelopeCompatibleWithFirstVersion(t *testing.T) {
	if err := schema.CheckCompatibility(schema.CompatFullTransitive, dlq.Schema().Text(), []string{envelopeV1Text}); err != nil {
		t.Fatalf("envelope schema is not fully compatible with its first version: %v", err)
	}
	v1 := schema.MustParse(envelopeV1Text)
	codec := schema.NewCodec(schema.StaticSource{1: v1, 2: dlq.Schema()})
	ctx := context.Background()

	// Old writer, new reader: the new fields take their defaults.
	old := encode(t, codec, 1, v1, sample())
	dl, err := dlq.Decode(ctx, codec, &kgo.Record{Value: old})
	if err != nil {
		t.Fatalf("Decode of a first-version envelope: %v", err)
	}
	if o := dl.Original; o.ValueSize != nil || o.ValueSHA256 != nil || o.Truncated() || o.Topic != "orders" {
		t.Errorf("first-version envelope read as size %v, sha %x, truncated %v, topic %q; want nil, nil, false, orders",
			o.ValueSize, o.ValueSHA256, o.Truncated(), o.Topic)
	}

	// New writer, old reader: the new fields are skipped.
	cut := sample()
	cut.Original.ValueTruncated = true
	n := int64(1 << 30)
	cut.Original.ValueSize = &n
	var asV1 map[string]any
	if _, err := codec.Decode(ctx, encode(t, codec, 2, dlq.Schema(), cut), v1, &asV1); err != nil {
		t.Fatalf("first-version reader of a new envelope: %v", err)
	}
	orig, _ := asV1["original"].(map[string]any)
	if orig["topic"] != "orders" {
		t.Errorf("first-version reader got original %v", orig)
	}
	if _, ok := orig["value_truncated"]; ok {
		t.Errorf("first-version reader sees a field it does not have")
	}
}

// New fills in the size and hash of the value; a tombstone has none.
func TestNewDescribesValue(t *testing.T) {
	v := []byte("some value")
	dl := dlq.New(&kgo.Record{Topic: "orders", Value: v}, dlq.Failure{})
	sum := sha256.Sum256(v)
	if o := dl.Original; o.ValueSize == nil || *o.ValueSize != int64(len(v)) || !bytes.Equal(o.ValueSHA256, sum[:]) || o.Truncated() {
		t.Errorf("size %v sha %x truncated %v; want %d %x false", o.ValueSize, o.ValueSHA256, o.Truncated(), len(v), sum)
	}
	if o := dlq.New(&kgo.Record{Topic: "orders"}, dlq.Failure{}).Original; o.ValueSize != nil || o.ValueSHA256 != nil {
		t.Errorf("tombstone: size %v sha %x; want none", o.ValueSize, o.ValueSHA256)
	}
}
