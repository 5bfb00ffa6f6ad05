package flows_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/flows"
	"github.com/choreokit/choreo/kafkatest"
)

// benchRecords returns n records of flows of four events each (a chain
// of causation), as a producer writes them, spread over topic's
// partitions.
func benchRecords(topic string, n int) []*kgo.Record {
	recs := make([]*kgo.Record, 0, n)
	now := time.Now().UTC()
	var corr, parent string
	for i := range n {
		id := choreo.NewID()
		if i%4 == 0 {
			corr, parent = id, ""
		}
		h := []kgo.RecordHeader{
			{Key: choreo.HeaderSpecVersion, Value: []byte("1.0")},
			{Key: choreo.HeaderID, Value: []byte(id)},
			{Key: choreo.HeaderType, Value: []byte("bench.Step" + strconv.Itoa(i%4))},
			{Key: choreo.HeaderSource, Value: []byte("service-" + strconv.Itoa(i%4))},
			{Key: choreo.HeaderTime, Value: []byte(now.Add(time.Duration(i) * time.Microsecond).Format(time.RFC3339Nano))},
			{Key: choreo.HeaderCorrelationID, Value: []byte(corr)},
			{Key: choreo.HeaderContentType, Value: []byte("application/avro")},
			{Key: choreo.HeaderTraceParent, Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
		}
		if parent != "" {
			h = append(h, kgo.RecordHeader{Key: choreo.HeaderCausationID, Value: []byte(parent)})
		}
		parent = id
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % 3), Offset: int64(i), Key: []byte(corr[24:]),
			Value: make([]byte, 200), Headers: h, Timestamp: now})
	}
	return recs
}

// BenchmarkIndexStore measures the indexer's own work per event without
// Kafka: reading the headers (Parse) and writing batches of 5000 to the
// embedded SQLite store, flow summaries included.
func BenchmarkIndexStore(b *testing.B) {
	st := openStore(b, b.TempDir())
	recs := benchRecords("orders", b.N)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < len(recs); i += 5000 {
		batch := make([]flows.Record, 0, 5000)
		for _, rec := range recs[i:min(i+5000, len(recs))] {
			r, ok, _ := flows.Parse(ctx, rec, nil)
			if !ok {
				b.Fatal("not indexed")
			}
			batch = append(batch, r)
		}
		if err := st.Write(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkIndexer measures indexing end to end: b.N events (flows of
// four) are on a topic of the embedded broker (or KAFKA_BROKERS'), and an
// indexer in a new group reads, parses, writes them to SQLite and commits,
// until its store has every one.
func BenchmarkIndexer(b *testing.B) {
	c := kafkatest.New(b)
	topic := c.Topic(b, 3)
	cl := c.Client(b, kgo.ProducerLinger(5*time.Millisecond))
	recs := benchRecords(topic, b.N)
	for i := 0; i < len(recs); i += 10000 {
		part := recs[i:min(i+10000, len(recs))]
		for _, r := range part {
			r.Offset = 0
		}
		if err := cl.ProduceSync(context.Background(), part...).FirstErr(); err != nil {
			b.Fatal(err)
		}
	}
	st := openStore(b, b.TempDir())
	ix, err := flows.NewIndexer(connection.Config{Brokers: c.Seeds()}, st, flows.ConsumerGroup(kafkatest.Group(b)),
		flows.Topics("^"+topic+"$"), flows.Logger(slog.New(slog.NewTextHandler(io.Discard, nil))), flows.RefreshInterval(time.Minute))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() { done <- ix.Run(ctx) }()
	for ix.Stats().Indexed < int64(b.N) {
		select {
		case err := <-done:
			b.Fatalf("indexer stopped: %v", err)
		case <-time.After(time.Millisecond):
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("indexed %d of %d in 5 minutes", ix.Stats().Indexed, b.N)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	<-done
	n, nf, _ := st.Counts(context.Background())
	if n != int64(b.N) || nf != int64((b.N+3)/4) {
		b.Fatalf("%d records, %d flows in the store; want %d, %d", n, nf, b.N, (b.N+3)/4)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}
