package consumer

import (
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
)

// benchRecord is a record as the choreo producer writes it: the
// CloudEvents headers and a W3C traceparent, about 200 bytes of value.
func benchRecord(i int) *kgo.Record {
	id := choreo.NewID()
	h := func(k, v string) kgo.RecordHeader { return kgo.RecordHeader{Key: k, Value: []byte(v)} }
	return &kgo.Record{
		Topic:     "orders",
		Partition: int32(i % 12),
		Offset:    int64(i),
		Key:       []byte("order-" + strconv.Itoa(i%100_000)),
		Value:     make([]byte, 200),
		Headers: []kgo.RecordHeader{
			h(choreo.HeaderSpecVersion, choreo.SpecVersion),
			h(choreo.HeaderID, id),
			h(choreo.HeaderType, "choreo.bench.OrderPlaced"),
			h(choreo.HeaderSource, "orders"),
			h(choreo.HeaderTime, time.Unix(1_760_000_000, int64(i)).UTC().Format(time.RFC3339Nano)),
			h(choreo.HeaderCorrelationID, id),
			h(choreo.HeaderContentType, choreo.ContentTypeAvro),
			h("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
		},
	}
}

// BenchmarkReadMetadata measures reading a record's ce_ headers into the
// event metadata (handle.go), ce_time parse included.
func BenchmarkReadMetadata(b *testing.B) {
	recs := make([]*kgo.Record, 1024)
	for i := range recs {
		recs[i] = benchRecord(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d := delivery{rec: recs[i%len(recs)]}
		if err := d.readMetadata(); err != nil || d.md.Time.IsZero() {
			b.Fatalf("readMetadata = %v, time %v", err, d.md.Time)
		}
		i++
	}
}
