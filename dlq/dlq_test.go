package dlq_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/schema"
)

var orderPlacedSchema = schema.MustParse(`{"type":"record","name":"OrderPlaced","namespace":"choreo.dlqtest","fields":[
	{"name":"order_id","type":"string"},
	{"name":"amount_cents","type":"long"}
]}`)

type OrderPlaced struct {
	OrderID     string `avro:"order_id"`
	AmountCents int64  `avro:"amount_cents"`
}

func (OrderPlaced) AvroSchema() *schema.Schema { return orderPlacedSchema }

// bigBatches lets a client produce records up to 16 MiB.
var bigBatches = kgo.ProducerBatchMaxBytes(16 << 20)

// env is a broker and a registry for one test.
type env struct {
	c     *kafkatest.Cluster
	reg   *schema.Registry
	codec *schema.Codec
}

func newEnv(t *testing.T) env {
	t.Helper()
	c := kafkatest.New(t)
	reg, err := schema.NewRegistry([]string{kafkatest.SchemaRegistry(t)})
	if err != nil {
		t.Fatal(err)
	}
	return env{c: c, reg: reg, codec: schema.NewCodec(reg)}
}

// dlqTopic creates the dead-letter topic of a new group, admitting records
// of maxBytes when maxBytes > 0, and returns the group and the topic.
func (e env) dlqTopic(t *testing.T, maxBytes int) (group, topic string) {
	t.Helper()
	group = kafkatest.Group(t)
	topic, err := dlq.TopicFor(group)
	if err != nil {
		t.Fatal(err)
	}
	e.c.CreateTopic(t, topic, 1)
	if maxBytes > 0 {
		v := strconv.Itoa(maxBytes)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resps, err := e.c.Admin().AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &v}}, topic)
		if err == nil {
			_, err = resps.On(topic, nil)
		}
		if err != nil {
			t.Fatalf("set max.message.bytes of %s: %v", topic, err)
		}
	}
	return group, topic
}

// consume reads n records of topic from its start.
func (e env) consume(t *testing.T, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := e.c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(32<<20))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records of %s before the timeout", len(out), n, topic)
		}
		if err := fs.Err0(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("consume %s: %v", topic, err)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

// original produces rec to a new topic and returns it as consumed, so it
// has real coordinates and timestamp.
func (e env) original(t *testing.T, rec *kgo.Record) *kgo.Record {
	t.Helper()
	if rec.Topic == "" {
		rec.Topic = e.c.Topic(t, 3)
	}
	cl := e.c.Client(t, bigBatches)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatalf("produce original: %v", err)
	}
	return e.consume(t, rec.Topic, 1)[0]
}

func header(r *kgo.Record, key string) (string, int) {
	v, n := "", 0
	for _, h := range r.Headers {
		if h.Key == key {
			v, n = string(h.Value), n+1
		}
	}
	return v, n
}

func ptr[T any](v T) *T { return &v }

func eqPtr(a, b *string) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }

func show(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return strconv.Quote(*p)
}

func TestWriteReadRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	group, topic := e.dlqTopic(t, 0)

	// The original: a registered event with the wire contract's headers,
	// plus a secret, a repeated header and a null-valued one.
	srcTopic := e.c.Topic(t, 3)
	id, err := e.reg.Register(ctx, schema.TopicNameStrategy(srcTopic, orderPlacedSchema), orderPlacedSchema)
	if err != nil {
		t.Fatal(err)
	}
	value, err := e.codec.Encode(id, orderPlacedSchema, OrderPlaced{OrderID: "ord-7", AmountCents: 1999})
	if err != nil {
		t.Fatal(err)
	}
	const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	orig := e.original(t, &kgo.Record{
		Topic: srcTopic,
		Key:   []byte("ord-7"),
		Value: value,
		Headers: []kgo.RecordHeader{
			{Key: choreo.HeaderSpecVersion, Value: []byte("1.0")},
			{Key: choreo.HeaderID, Value: []byte("0190d6e2-6a5c-7c3e-9f1a-3b2c1d0e9f8a")},
			{Key: choreo.HeaderType, Value: []byte(orderPlacedSchema.FullName())},
			{Key: choreo.HeaderCorrelationID, Value: []byte("corr-1")},
			{Key: choreo.HeaderTraceParent, Value: []byte(traceparent)},
			{Key: "Authorization", Value: []byte("Bearer s3cret")},
			{Key: "x-dup", Value: []byte("one")},
			{Key: "x-dup", Value: []byte("two")},
			{Key: "x-null", Value: nil},
			{Key: "x-empty", Value: []byte{}},
		},
	})

	first := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	last := time.Now().Add(-time.Second).Truncate(time.Millisecond)
	cause := &json.SyntaxError{Offset: 3}
	dl := dlq.New(orig, dlq.Failure{
		Err:          fmt.Errorf("charge %s: %w", "ord-7", cause),
		Kind:         choreo.KindRetriesExhausted,
		Attempts:     4,
		FirstFailure: first,
		LastFailure:  last,
		Service:      "payment-service",
		Group:        group,
	})
	w := dlq.NewWriter(e.c.Client(t), e.reg, dlq.Redact("authorization"))
	if err := w.Write(ctx, topic, dl); err != nil {
		t.Fatalf("Write: %v", err)
	}

	got := e.consume(t, topic, 1)[0]
	if !bytes.Equal(got.Key, orig.Key) {
		t.Errorf("dead-letter key %q; want the original key %q", got.Key, orig.Key)
	}

	// Readable headers.
	wantHeaders := []kgo.RecordHeader{
		{Key: choreo.HeaderOriginalTopic, Value: []byte(srcTopic)},
		{Key: choreo.HeaderOriginalPartition, Value: []byte(strconv.Itoa(int(orig.Partition)))},
		{Key: choreo.HeaderOriginalOffset, Value: []byte(strconv.FormatInt(orig.Offset, 10))},
		{Key: choreo.HeaderErrorKind, Value: []byte("retries_exhausted")},
		{Key: choreo.HeaderErrorMessage, Value: []byte("charge ord-7: " + cause.Error())},
		{Key: choreo.HeaderAttempt, Value: []byte("4")},
		{Key: choreo.HeaderContentType, Value: []byte(choreo.ContentTypeAvro)},
		{Key: choreo.HeaderID, Value: []byte("0190d6e2-6a5c-7c3e-9f1a-3b2c1d0e9f8a")},
		{Key: choreo.HeaderType, Value: []byte(orderPlacedSchema.FullName())},
		{Key: choreo.HeaderCorrelationID, Value: []byte("corr-1")},
		{Key: choreo.HeaderTraceParent, Value: []byte(traceparent)},
	}
	if len(got.Headers) != len(wantHeaders) {
		t.Errorf("got %d headers %v; want %d", len(got.Headers), got.Headers, len(wantHeaders))
	}
	for i := range min(len(got.Headers), len(wantHeaders)) {
		if g, w := got.Headers[i], wantHeaders[i]; g.Key != w.Key || !bytes.Equal(g.Value, w.Value) {
			t.Errorf("header %d: got %s=%q; want %s=%q", i, g.Key, g.Value, w.Key, w.Value)
		}
	}

	// The envelope.
	back, err := dlq.Decode(ctx, e.codec, got)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	o := back.Original
	if o.Topic != srcTopic || o.Partition != orig.Partition || o.Offset != orig.Offset {
		t.Errorf("original at %s/%d/%d; want %s/%d/%d", o.Topic, o.Partition, o.Offset, srcTopic, orig.Partition, orig.Offset)
	}
	if !o.Timestamp.Equal(orig.Timestamp.Truncate(time.Millisecond)) {
		t.Errorf("original timestamp %v; want %v", o.Timestamp, orig.Timestamp)
	}
	if !bytes.Equal(o.Key, orig.Key) || !bytes.Equal(o.Value, orig.Value) {
		t.Errorf("original key/value %q/%x; want %q/%x", o.Key, o.Value, orig.Key, orig.Value)
	}
	if len(o.Headers) != len(orig.Headers) {
		t.Fatalf("%d original headers; want %d", len(o.Headers), len(orig.Headers))
	}
	for i, h := range orig.Headers {
		want := h.Value
		if h.Key == "Authorization" {
			want = []byte(dlq.Redacted)
		}
		g := o.Headers[i]
		if g.Key != h.Key || !bytes.Equal(g.Value, want) || (g.Value == nil) != (want == nil) {
			t.Errorf("original header %d: got %s=%q (nil %v); want %s=%q (nil %v)", i, g.Key, g.Value, g.Value == nil, h.Key, want, want == nil)
		}
	}
	wantErr := dlq.ErrorInfo{Kind: choreo.KindRetriesExhausted, Message: "charge ord-7: " + cause.Error(), Type: "*json.SyntaxError"}
	if back.Error != wantErr {
		t.Errorf("error %+v; want %+v", back.Error, wantErr)
	}
	if back.Attempts != 4 || !back.FirstFailure.Equal(first) || !back.LastFailure.Equal(last) {
		t.Errorf("attempts %d, failures %v … %v; want 4, %v … %v", back.Attempts, back.FirstFailure, back.LastFailure, first, last)
	}
	if back.Service != "payment-service" || back.Group != group {
		t.Errorf("service %q group %q; want payment-service %q", back.Service, back.Group, group)
	}
	if !eqPtr(back.EventID, ptr("0190d6e2-6a5c-7c3e-9f1a-3b2c1d0e9f8a")) || !eqPtr(back.EventType, ptr(orderPlacedSchema.FullName())) ||
		!eqPtr(back.CorrelationID, ptr("corr-1")) {
		t.Errorf("event id/type/correlation %s %s %s", show(back.EventID), show(back.EventType), show(back.CorrelationID))
	}
	if !back.DeadLetteredAt.Equal(dl.DeadLetteredAt.Truncate(time.Millisecond)) || !got.Timestamp.Equal(back.DeadLetteredAt) {
		t.Errorf("dead-lettered at %v, record timestamp %v; want %v", back.DeadLetteredAt, got.Timestamp, dl.DeadLetteredAt)
	}

	// The view decodes the original value.
	v := back.View(ctx, e.codec)
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"order_id":"ord-7"`, `"value_schema":"choreo.dlqtest.OrderPlaced"`, `"key":"ord-7"`,
		`{"key":"x-null","value":null}`, `{"key":"Authorization","value":"[redacted]"}`, `"known_kind":true`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("view %s\nlacks %s", js, want)
		}
	}

	// Replay redrives it to the failing service's redrive topic only.
	redrive := dlq.RedriveTopic(group)
	e.c.CreateTopic(t, redrive, 3)
	replay := back.Replay(got)
	pcl := e.c.Client(t)
	if err := pcl.ProduceSync(ctx, replay).FirstErr(); err != nil {
		t.Fatalf("produce redrive: %v", err)
	}
	r := e.consume(t, redrive, 1)[0]
	if !bytes.Equal(r.Key, orig.Key) || !bytes.Equal(r.Value, orig.Value) {
		t.Errorf("redrive key %q; want key %q, same value", r.Key, orig.Key)
	}
	from := fmt.Sprintf("%s/%d/%d", topic, got.Partition, got.Offset)
	for _, h := range []struct{ key, want string }{
		{choreo.HeaderOriginalTopic, srcTopic},
		{choreo.HeaderOriginalPartition, strconv.Itoa(int(orig.Partition))},
		{choreo.HeaderOriginalOffset, strconv.FormatInt(orig.Offset, 10)},
		{choreo.HeaderRedriveCount, "1"},
		{choreo.HeaderReplayedFrom, from},
		{choreo.HeaderID, "0190d6e2-6a5c-7c3e-9f1a-3b2c1d0e9f8a"},
	} {
		if v, n := header(r, h.key); n != 1 || v != h.want {
			t.Errorf("redrive header %s = %q (%d of them); want one, %q", h.key, v, n, h.want)
		}
	}
	if len(r.Headers) != len(orig.Headers)+5 {
		t.Errorf("redrive has %d headers; want the original's %d and 5", len(r.Headers), len(orig.Headers))
	}

	// ReplayTo republishes to a topic of the caller's choosing: here the
	// original topic, whose partitioner puts it with its key.
	again := back.ReplayTo(srcTopic, got)
	if err := pcl.ProduceSync(ctx, again).FirstErr(); err != nil {
		t.Fatalf("produce replay: %v", err)
	}
	r = e.consume(t, srcTopic, 2)[1]
	if r.Partition != orig.Partition || !bytes.Equal(r.Key, orig.Key) || !bytes.Equal(r.Value, orig.Value) {
		t.Errorf("replay at partition %d key %q; want partition %d key %q, same value", r.Partition, r.Key, orig.Partition, orig.Key)
	}
	if len(r.Headers) != len(orig.Headers)+2 {
		t.Fatalf("replay has %d headers; want %d", len(r.Headers), len(orig.Headers)+2)
	}
	if v, n := header(r, choreo.HeaderReplayedFrom); n != 1 || v != from {
		t.Errorf("%s = %q (%d); want %s", choreo.HeaderReplayedFrom, v, n, from)
	}
	if _, n := header(r, choreo.HeaderOriginalTopic); n != 0 {
		t.Errorf("replay to a topic has %d %s headers; want none", n, choreo.HeaderOriginalTopic)
	}
	if v, _ := header(r, choreo.HeaderID); v != "0190d6e2-6a5c-7c3e-9f1a-3b2c1d0e9f8a" {
		t.Errorf("replay ce_id %q; want the original's", v)
	}
}

func TestLongMessageCutOnUTF8Boundary(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, topic := e.dlqTopic(t, 0)

	// "é" is two bytes and "€" three: 1 byte of padding puts the 1 KiB
	// mark inside a rune, and the 16 KiB mark too.
	msg := "x" + strings.Repeat("é€", 8000)
	dl := dlq.New(&kgo.Record{Topic: "orders", Key: nil, Value: []byte{1}}, dlq.Failure{Err: errors.New(msg)})
	w := dlq.NewWriter(e.c.Client(t), e.reg)
	if err := w.Write(ctx, topic, dl); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got := e.consume(t, topic, 1)[0]
	if got.Key != nil {
		t.Errorf("key %q; want nil like the original", got.Key)
	}
	h, _ := header(got, choreo.HeaderErrorMessage)
	if len(h) > dlq.MaxHeaderMessageLen || len(h) < dlq.MaxHeaderMessageLen-3 || !utf8.ValidString(h) || !strings.HasPrefix(msg, h) {
		t.Errorf("header message of %d bytes (valid UTF-8 %v, prefix %v); want a prefix of at most %d bytes on a rune boundary",
			len(h), utf8.ValidString(h), strings.HasPrefix(msg, h), dlq.MaxHeaderMessageLen)
	}
	back, err := dlq.Decode(ctx, e.codec, got)
	if err != nil {
		t.Fatal(err)
	}
	m := back.Error.Message
	if len(m) > dlq.MaxMessageLen || len(m) < dlq.MaxMessageLen-3 || !utf8.ValidString(m) || !strings.HasPrefix(msg, m) {
		t.Errorf("envelope message of %d bytes; want a prefix of at most %d bytes on a rune boundary", len(m), dlq.MaxMessageLen)
	}
	if back.Error.Kind != choreo.KindRetryable || back.Error.Type != "*errors.errorString" {
		t.Errorf("kind %q type %q; want retryable *errors.errorString", back.Error.Kind, back.Error.Type)
	}
}

func TestLargeOriginalRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, topic := e.dlqTopic(t, 8<<20)

	value := make([]byte, 3<<20)
	_, _ = rand.Read(value)
	orig := &kgo.Record{Topic: "big", Partition: 2, Offset: 99, Key: []byte("k"), Value: value, Timestamp: time.UnixMilli(1_700_000_000_000)}
	w := dlq.NewWriter(e.c.Client(t, bigBatches), e.reg)
	if err := w.Write(ctx, topic, dlq.New(orig, dlq.Failure{Err: choreo.Errorf(choreo.KindTooLarge, "value of %d bytes", len(value))})); err != nil {
		t.Fatalf("Write of a 3 MiB original: %v", err)
	}
	got := e.consume(t, topic, 1)[0]
	back, err := dlq.Decode(ctx, e.codec, got)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if !bytes.Equal(back.Original.Value, value) {
		t.Errorf("original value of %d bytes came back as %d different bytes", len(value), len(back.Original.Value))
	}
	if back.Error.Kind != choreo.KindTooLarge || back.Original.Offset != 99 || back.Original.Partition != 2 {
		t.Errorf("kind %q at %d/%d; want too_large at 2/99", back.Error.Kind, back.Original.Partition, back.Original.Offset)
	}
}

func TestWriteFailures(t *testing.T) {
	e := newEnv(t)
	_, topic := e.dlqTopic(t, 0)
	dl := dlq.New(&kgo.Record{Topic: "orders", Value: []byte("v")}, dlq.Failure{Err: errors.New("boom")})

	t.Run("broker refuses a record over max.message.bytes", func(t *testing.T) {
		big := dl
		big.Original.Value = make([]byte, 2<<20) // the topic takes about 1 MiB
		_, _ = rand.Read(big.Original.Value)     // (batches are compressed)
		w := dlq.NewWriter(e.c.Client(t, bigBatches, kgo.RecordRetries(2)), e.reg)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := w.Write(ctx, topic, big)
		if !errors.Is(err, kerr.MessageTooLarge) {
			t.Fatalf("Write: %v; want an error wrapping %v", err, kerr.MessageTooLarge)
		}
		if !strings.Contains(err.Error(), topic) {
			t.Errorf("error %q does not name the topic", err)
		}
	})
	t.Run("closed client", func(t *testing.T) {
		cl := e.c.Client(t)
		cl.Close()
		err := dlq.NewWriter(cl, e.reg).Write(context.Background(), topic, dl)
		if !errors.Is(err, kgo.ErrClientClosed) {
			t.Fatalf("Write: %v; want an error wrapping kgo.ErrClientClosed", err)
		}
	})
	t.Run("invalid topic name", func(t *testing.T) {
		err := dlq.NewWriter(e.c.Client(t), e.reg).Write(context.Background(), "no spaces.dlq", dl)
		if !errors.Is(err, dlq.ErrInvalidTopic) {
			t.Fatalf("Write: %v; want an error wrapping ErrInvalidTopic", err)
		}
	})
	t.Run("context done", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		w := dlq.NewWriter(e.c.Client(t), e.reg)
		if err := w.Write(ctx, topic, dl); err == nil {
			t.Fatal("Write with a canceled context returned nil")
		}
	})
	t.Run("registry down", func(t *testing.T) {
		reg, err := schema.NewRegistry([]string{"http://127.0.0.1:1"}, schema.Timeout(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		err = dlq.NewWriter(e.c.Client(t), reg).Write(context.Background(), topic, dl)
		if err == nil {
			t.Fatal("Write with an unreachable registry returned nil")
		}
		if choreo.IsPermanent(err) {
			t.Errorf("registry outage %v is permanent; want retryable", err)
		}
	})
	t.Run("no registry", func(t *testing.T) {
		if err := dlq.NewWriter(e.c.Client(t), nil).Write(context.Background(), topic, dl); err == nil {
			t.Fatal("Write without a registry returned nil")
		}
	})
}

func TestProductionLooksUp(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, topic := e.dlqTopic(t, 0)
	dl := dlq.New(&kgo.Record{Topic: "orders", Value: []byte("v")}, dlq.Failure{Err: errors.New("boom")})
	w := dlq.NewWriter(e.c.Client(t), e.reg, dlq.Production())
	if err := w.Write(ctx, topic, dl); !errors.Is(err, schema.ErrNotRegistered) {
		t.Fatalf("Write before registration: %v; want schema.ErrNotRegistered", err)
	}
	if _, err := e.reg.Register(ctx, topic+"-value", dlq.Schema()); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, topic, dl); err != nil {
		t.Fatalf("Write after registration: %v", err)
	}
	if got := e.consume(t, topic, 1); len(got) != 1 {
		t.Fatalf("%d records; want 1", len(got))
	}
}

// TestRecordCopiesLineage: a dead letter of a redriven record carries its
// redrive count and the dead letter it came from in readable headers, so
// tools see the link without a registry.
func TestRecordCopiesLineage(t *testing.T) {
	reg, err := schema.NewRegistry([]string{kafkatest.SchemaRegistry(t)})
	if err != nil {
		t.Fatal(err)
	}
	failed := &kgo.Record{Topic: "orders", Partition: 1, Offset: 7, Key: []byte("k"), Value: []byte("v"), Headers: []kgo.RecordHeader{
		{Key: choreo.HeaderID, Value: []byte("id-1")},
		{Key: choreo.HeaderRedriveCount, Value: []byte("2")},
		{Key: choreo.HeaderReplayedFrom, Value: []byte("svc.dlq/0/3")},
	}}
	dl := dlq.New(failed, dlq.Failure{Err: errors.New("again\n\tand again"), Group: "svc"})
	rec, err := dlq.NewWriter(nil, reg).Record(context.Background(), kafkatest.Name(t, "svc")+".dlq", dl)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dlq.Peek(rec)
	if err != nil {
		t.Fatal(err)
	}
	if s.RedriveCount != 2 || s.ReplayedFrom != "svc.dlq/0/3" || s.EventID != "id-1" || s.OriginalOffset != 7 {
		t.Errorf("Peek of the dead letter = %+v; want redrive count 2 from svc.dlq/0/3, event id-1, original offset 7", s)
	}
	if n := dl.RedriveCount(); n != 2 {
		t.Errorf("RedriveCount = %d; want 2", n)
	}
	if s.Message != "again  and again" || dl.Error.Message != "again\n\tand again" {
		t.Errorf("header message %q, envelope message %q; want the header on one line, the envelope as it was", s.Message, dl.Error.Message)
	}
}
