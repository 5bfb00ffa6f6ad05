package flows_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/flows"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		topic string
		want  flows.TopicRole
	}{
		{"orders", flows.TopicRole{Kind: flows.KindEvent}},
		{"payment-service.dlq", flows.TopicRole{Kind: flows.KindDeadLetter, Group: "payment-service"}},
		{"payment-service.redrive", flows.TopicRole{Kind: flows.KindRedrive, Group: "payment-service"}},
		{"payment-service.retry.1-10s", flows.TopicRole{Kind: flows.KindRetry, Group: "payment-service", Tier: 1, Delay: 10 * time.Second}},
		{"pay.retry.2-250ms", flows.TopicRole{Kind: flows.KindRetry, Group: "pay", Tier: 2, Delay: 250 * time.Millisecond}},
		{"pay.retry.3-1h30m", flows.TopicRole{Kind: flows.KindRetry, Group: "pay", Tier: 3, Delay: 90 * time.Minute}},
		{"pay.retry.1-10s.retry.1-10s", flows.TopicRole{Kind: flows.KindRetry, Group: "pay.retry.1-10s", Tier: 1, Delay: 10 * time.Second}},
		{"pay.retry.1-60s", flows.TopicRole{Kind: flows.KindEvent}}, // the consumer writes 1m
		{"pay.retry.0-10s", flows.TopicRole{Kind: flows.KindEvent}},
		{"pay.retry.x-10s", flows.TopicRole{Kind: flows.KindEvent}},
		{".dlq", flows.TopicRole{Kind: flows.KindEvent}},
		{"payment-service.dlq.redrives", flows.TopicRole{Kind: flows.KindEvent}},
	} {
		if got := flows.Classify(tc.topic); got != tc.want {
			t.Errorf("Classify(%q) = %+v; want %+v", tc.topic, got, tc.want)
		}
	}
}

func hdrs(kv ...string) []kgo.RecordHeader {
	var out []kgo.RecordHeader
	for i := 0; i < len(kv); i += 2 {
		out = append(out, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return out
}

func TestParse(t *testing.T) {
	ts := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	ev := &kgo.Record{Topic: "orders", Partition: 2, Offset: 7, Key: []byte("o-1"), Timestamp: ts,
		Value: []byte{0, 0, 0, 0, 42, 1, 2},
		Headers: hdrs("ce_id", "e1", "ce_type", "shop.OrderPlaced", "ce_source", "orders", "ce_time", "2026-05-01T11:59:59.5Z",
			"ce_correlationid", "c1", "ce_causationid", "e0")}
	r, ok, skip := flows.Parse(context.Background(), ev, nil)
	want := flows.Record{Topic: "orders", Partition: 2, Offset: 7, Kind: flows.KindEvent, EventID: "e1", Type: "shop.OrderPlaced",
		Source: "orders", Time: ts.Add(-500 * time.Millisecond), CorrelationID: "c1", CausationID: "e0", Key: "o-1",
		Timestamp: ts, SchemaID: 42, OriginalPartition: -1, OriginalOffset: -1}
	if !ok || skip != "" || r != want {
		t.Errorf("event:\n got %+v %v %q\nwant %+v", r, ok, skip, want)
	}

	retry := &kgo.Record{Topic: "pay.retry.1-10s", Offset: 3, Timestamp: ts, Key: []byte{0xff, 0x00},
		Headers: hdrs("ce_id", "e1", "ce_type", "shop.OrderPlaced", "choreo-attempt", "3", "choreo-not-before", "2026-05-01T12:00:10Z",
			"choreo-original-topic", "orders", "choreo-original-partition", "2", "choreo-original-offset", "7",
			"choreo-error-kind", "retryable", "choreo-error-message", "timeout")}
	r, ok, _ = flows.Parse(context.Background(), retry, nil)
	if !ok || r.Kind != flows.KindRetry || r.Group != "pay" || r.Attempt != 3 || !r.FailedAt.Equal(ts) ||
		r.OriginalTopic != "orders" || r.OriginalPartition != 2 || r.OriginalOffset != 7 || r.ErrorKind != "retryable" ||
		r.Key != "0xff00" || r.CorrelationID != "e1" || !r.Time.Equal(ts) || !r.Due().Equal(ts.Add(10*time.Second)) {
		t.Errorf("retry: %+v", r)
	}

	dead := &kgo.Record{Topic: "pay.dlq", Offset: 1, Timestamp: ts,
		Headers: hdrs("choreo-original-topic", "orders", "choreo-original-partition", "0", "choreo-original-offset", "9",
			"choreo-error-kind", "bad_magic_byte", "choreo-attempt", "1")}
	r, ok, _ = flows.Parse(context.Background(), dead, nil)
	if !ok || r.Kind != flows.KindDeadLetter || r.EventID != "" || r.CorrelationID != "" || r.Group != "pay" || r.ErrorKind != "bad_magic_byte" {
		t.Errorf("dead letter of a record without ce_id: %+v, %v; want indexed outside any flow", r, ok)
	}
}

// Malformed records are skipped or indexed as far as they can be read,
// never a panic.
func TestParseMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  *kgo.Record
		ok   bool
		skip string
	}{
		{"no headers", &kgo.Record{Topic: "orders", Value: []byte("junk")}, false, flows.SkipNoEventID},
		{"empty ce_id", &kgo.Record{Topic: "orders", Headers: hdrs("ce_id", "")}, false, flows.SkipNoEventID},
		{"bad time and numbers", &kgo.Record{Topic: "orders", Headers: hdrs("ce_id", "x", "ce_time", "yesterday", "choreo-attempt", "-1")}, true, ""},
		{"nil value, nil key", &kgo.Record{Topic: "orders", Headers: hdrs("ce_id", "x")}, true, ""},
		{"short wire prefix", &kgo.Record{Topic: "orders", Value: []byte{0, 1}, Headers: hdrs("ce_id", "x")}, true, ""},
		{"not UTF-8", &kgo.Record{Topic: "orders", Headers: hdrs("ce_id", "x", "ce_type", "\xff\xfe", "ce_source", string(make([]byte, 4096)))}, true, ""},
		{"dead-letter topic without its headers", &kgo.Record{Topic: "pay.dlq", Headers: hdrs("ce_id", "x")}, false, flows.SkipBadDeadLeter},
		{"dead letter with a bad offset", &kgo.Record{Topic: "pay.dlq", Headers: hdrs("choreo-original-topic", "o",
			"choreo-original-partition", "0", "choreo-original-offset", "nine")}, false, flows.SkipBadDeadLeter},
		{"retry with bad headers", &kgo.Record{Topic: "pay.retry.1-10s", Headers: hdrs("ce_id", "x", "choreo-not-before", "soon",
			"choreo-original-partition", "p")}, true, ""},
		{"redrive log", &kgo.Record{Topic: "pay.dlq.redrives", Value: []byte(`{"at":"now"}`)}, false, flows.SkipNoEventID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, ok, skip := flows.Parse(context.Background(), tc.rec, nil)
			if ok != tc.ok || skip != tc.skip {
				t.Errorf("got %v %q; want %v %q (%+v)", ok, skip, tc.ok, tc.skip, r)
			}
			if ok && (r.Time.IsZero() && !tc.rec.Timestamp.IsZero()) {
				t.Errorf("no time: %+v", r)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add("orders", []byte("k"), []byte{0, 0, 0, 0, 1}, "ce_id", "x", "choreo-original-offset", "1")
	f.Add("a.dlq", []byte(nil), []byte(nil), "choreo-original-topic", "t", "choreo-original-partition", "0")
	f.Add("a.retry.1-1s", []byte{0xff}, []byte("v"), "choreo-not-before", "2026-01-01T00:00:00Z", "ce_id", "y")
	f.Fuzz(func(t *testing.T, topic string, key, value []byte, k1, v1, k2, v2 string) {
		rec := &kgo.Record{Topic: topic, Key: key, Value: value, Headers: hdrs(k1, v1, k2, v2)}
		r, ok, _ := flows.Parse(context.Background(), rec, nil)
		if ok && r.Kind != flows.KindDeadLetter && r.EventID == "" {
			t.Errorf("indexed without an event id: %+v", r)
		}
	})
}
