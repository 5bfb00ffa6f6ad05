package consumer_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/schema"
)

// behaviour picks what the test handler does with an order.
func behaviour(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
	switch ev.Data.OrderID {
	case "panic":
		panic("handler bug")
	case "timeout":
		<-ctx.Done()
		return ctx.Err()
	case "permanent":
		return choreo.Permanent(errors.New("order rejected by the business rules"))
	case "fail":
		return errors.New("downstream unavailable")
	}
	return nil
}

// poison is one record the consumer must dead-letter.
type poison struct {
	name string
	kind choreo.ErrorKind
	rec  *kgo.Record
}

// corpus builds the poison records of every kind for topic, from a valid
// template record.
func (h *harness) corpus(t *testing.T, maxValue int) []poison {
	t.Helper()
	ctx := context.Background()
	tmpl := func(id string) *kgo.Record {
		r, _, err := h.prod.Record(ctx, h.topic, "k", order(id, 1))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	withValue := func(v []byte) *kgo.Record { r := tmpl("x"); r.Value = v; return r }
	without := func(header string) *kgo.Record {
		r := tmpl("x")
		kept := r.Headers[:0]
		for _, hd := range r.Headers {
			if hd.Key != header {
				kept = append(kept, hd)
			}
		}
		r.Headers = kept
		return r
	}
	valid := tmpl("x").Value
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 64)
	for i := range random {
		random[i] = byte(rng.UintN(256))
	}
	random[0] = 0xa7 // never the magic byte
	wrongMagic := append([]byte{1}, valid[1:]...)
	unknownID := append([]byte{0}, binary.BigEndian.AppendUint32(nil, 0x7ffffff0)...)
	unknownID = append(unknownID, valid[5:]...)

	// Valid Avro of another schema, registered under another topic.
	other := h.cluster.Topic(t, 1)
	otherRec, _, err := h.prod.Record(ctx, other, "k", PaymentRequested{OrderID: "o", AmountCents: 5})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, maxValue+1)
	copy(big, valid)

	return []poison{
		{"empty value", choreo.KindEmptyValue, withValue(nil)},
		{"random bytes", choreo.KindBadMagicByte, withValue(random)},
		{"wrong magic byte", choreo.KindBadMagicByte, withValue(wrongMagic)},
		{"unknown schema id", choreo.KindUnknownSchema, withValue(unknownID)},
		{"truncated avro", choreo.KindTruncated, withValue(valid[:len(valid)-3])},
		{"trailing garbage", choreo.KindTrailingBytes, withValue(append(append([]byte(nil), valid...), 0xde, 0xad))},
		{"valid avro of another schema", choreo.KindIncompatibleSchema, withValue(otherRec.Value)},
		{"missing ce_id", choreo.KindMissingHeader, without(choreo.HeaderID)},
		{"missing ce_type", choreo.KindMissingHeader, without(choreo.HeaderType)},
		{"handler panic", choreo.KindPanic, tmpl("panic")},
		{"handler timeout (retried, then exhausted)", choreo.KindRetriesExhausted, tmpl("timeout")},
		{"permanent error", choreo.KindPermanent, tmpl("permanent")},
		{"retries exhausted", choreo.KindRetriesExhausted, tmpl("fail")},
		{"value over the max size", choreo.KindTooLarge, withValue(big)},
	}
}

// readDeadLetters reads n envelopes from the topic.
func (h *harness) readDeadLetters(t *testing.T, topic string, n int, wait time.Duration) []*dlq.DeadLetter {
	t.Helper()
	cl := h.cluster.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	codec := schema.NewCodec(h.reg)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var out []*dlq.DeadLetter
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		for _, r := range fs.Records() {
			dl, err := dlq.Decode(ctx, codec, r)
			if err != nil {
				t.Fatalf("dead letter at %d is not a valid envelope: %v", r.Offset, err)
			}
			out = append(out, dl)
		}
		if len(out) >= n && wait < 10*time.Second {
			break
		}
		if len(out) >= n {
			// Keep reading briefly to catch any extra copy.
			cancel()
			ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
			defer cancel2()
			for _, r := range cl.PollFetches(ctx2).Records() {
				if dl, err := dlq.Decode(ctx2, codec, r); err == nil {
					out = append(out, dl)
				}
			}
			break
		}
	}
	return out
}

// TestPoisonCorpusIsDeadLetteredOnce sends every kind of poison record,
// each followed by a good record with the same key on the same partition.
// Each poison record must land in the DLQ exactly once as a valid envelope
// of the right kind, and every good record must be handled.
func TestPoisonCorpusIsDeadLetteredOnce(t *testing.T) {
	h := newHarness(t, 1)
	const maxValue = 4 << 10
	poisons := h.corpus(t, maxValue)
	group := kafkatest.Group(t)
	cl := h.cluster.Client(t)
	ctx := context.Background()
	offsetOf := map[int64]poison{}
	for i, p := range poisons {
		p.rec.Topic, p.rec.Key = h.topic, []byte("k")
		p.rec.Headers = append(p.rec.Headers, kgo.RecordHeader{Key: "authorization", Value: []byte("Bearer s3cret")})
		res, err := cl.ProduceSync(ctx, p.rec).First()
		if err != nil {
			t.Fatalf("produce %s: %v", p.name, err)
		}
		offsetOf[res.Offset] = p
		if _, err := h.prod.Publish(ctx, h.topic, "k", order("good-"+strconv.Itoa(i), i)); err != nil {
			t.Fatal(err)
		}
	}

	c := h.consumer(group, consumer.MaxValueBytes(maxValue), consumer.HandlerTimeout(300*time.Millisecond),
		consumer.RedactHeaders("Authorization"),
		consumer.BlockingRetries(), consumer.Retry(consumer.RetryPolicy{MaxAttempts: 3, InitialInterval: 5 * time.Millisecond,
			MaxInterval: 10 * time.Millisecond, Multiplier: 2}))
	var mu sync.Mutex
	var good []string
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		if err := behaviour(ctx, ev); err != nil {
			return err
		}
		mu.Lock()
		good = append(good, ev.Data.OrderID)
		mu.Unlock()
		return nil
	})
	stop := running(t, c)
	eventually(t, 60*time.Second, "every record done", func() bool {
		s := c.Stats()
		return s.Handled == int64(len(poisons)) && s.DeadLettered == int64(len(poisons))
	})
	eventually(t, 10*time.Second, "the whole partition committed", func() bool {
		return h.committed(group)[0] == int64(2*len(poisons))
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	mu.Lock()
	if len(good) != len(poisons) {
		t.Errorf("handled good records %v; want %d", good, len(poisons))
	}
	mu.Unlock()
	dls := h.readDeadLetters(t, dlq.Topic(group), len(poisons), 30*time.Second)
	if len(dls) != len(poisons) {
		t.Fatalf("%d dead letters; want exactly %d", len(dls), len(poisons))
	}
	seen := map[int64]bool{}
	for _, dl := range dls {
		p, ok := offsetOf[dl.Original.Offset]
		if !ok || dl.Original.Topic != h.topic {
			t.Errorf("dead letter of %s/%d is not a poison record", dl.Original.Topic, dl.Original.Offset)
			continue
		}
		if seen[dl.Original.Offset] {
			t.Errorf("%s dead-lettered twice", p.name)
		}
		seen[dl.Original.Offset] = true
		if dl.Error.Kind != p.kind {
			t.Errorf("%s: kind %q (%s); want %q", p.name, dl.Error.Kind, dl.Error.Message, p.kind)
		}
		if string(dl.Original.Key) != "k" || dl.Group != group || dl.Service != group {
			t.Errorf("%s: key %q group %q service %q", p.name, dl.Original.Key, dl.Group, dl.Service)
		}
		if string(dl.Original.Value) != string(p.rec.Value) {
			t.Errorf("%s: original value not kept whole", p.name)
		}
		for _, hd := range dl.Original.Headers {
			if hd.Key == "authorization" && string(hd.Value) != dlq.Redacted {
				t.Errorf("%s: authorization header kept as %q; want it redacted", p.name, hd.Value)
			}
		}
		wantAttempts := int32(1)
		if p.kind == choreo.KindRetriesExhausted {
			wantAttempts = 3
		}
		if dl.Attempts != wantAttempts {
			t.Errorf("%s: attempts %d; want %d", p.name, dl.Attempts, wantAttempts)
		}
	}
}

// TestRetryTopicsDelayAndCountAttempts fails a record twice, then lets it
// pass: it goes through both retry topics, after their delays, and is
// handled once, while other keys are not held up.
func TestRetryTopicsDelayAndCountAttempts(t *testing.T) {
	h := newHarness(t, 2)
	group := kafkatest.Group(t)
	delays := []time.Duration{400 * time.Millisecond, 800 * time.Millisecond}
	c := h.consumer(group, consumer.RetryTopics(delays...), consumer.Retry(consumer.RetryPolicy{MaxAttempts: 1, Multiplier: 1}))
	var mu sync.Mutex
	attempts := map[string][]int{}
	at := map[string][]time.Time{}
	var successes atomic.Int64
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		mu.Lock()
		defer mu.Unlock()
		attempts[ev.Key] = append(attempts[ev.Key], ev.Attempt)
		at[ev.Key] = append(at[ev.Key], time.Now())
		if ev.Key == "flaky" && ev.Attempt < 3 {
			return errors.New("not yet:\n\tthe gateway said no")
		}
		successes.Add(1)
		return nil
	})
	stop := running(t, c)
	eventually(t, 20*time.Second, "consumer ready", c.Ready)
	start := time.Now()
	if _, err := h.prod.Publish(context.Background(), h.topic, "flaky", order("flaky", 1)); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := h.prod.Publish(context.Background(), h.topic, fmt.Sprintf("steady-%d", i), order("s", i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "all handled", func() bool { return successes.Load() == 21 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := fmt.Sprint(attempts["flaky"]); got != "[1 2 3]" {
		t.Fatalf("flaky attempts %s; want [1 2 3]", got)
	}
	ts := at["flaky"]
	if gap := ts[1].Sub(ts[0]); gap < delays[0] {
		t.Errorf("second attempt %v after the first; want at least the tier-1 delay %v", gap, delays[0])
	}
	if gap := ts[2].Sub(ts[1]); gap < delays[1] {
		t.Errorf("third attempt %v after the second; want at least the tier-2 delay %v", gap, delays[1])
	}
	var steadyDone time.Time
	for k, tt := range at {
		if k != "flaky" && tt[len(tt)-1].After(steadyDone) {
			steadyDone = tt[len(tt)-1]
		}
	}
	if !steadyDone.Before(ts[1]) {
		t.Errorf("other keys finished %v after start, not before the flaky key's first retry (%v): they were held up",
			steadyDone.Sub(start), ts[1].Sub(start))
	}
	if s := c.Stats(); s.Forwarded != 2 || s.DeadLettered != 0 {
		t.Errorf("stats %+v; want 2 forwards, no dead letters", s)
	}
	// The retry records carry the attempt count.
	for i, topic := range []string{fmt.Sprintf("%s.retry.1-400ms", group), fmt.Sprintf("%s.retry.2-800ms", group)} {
		rs := consumeAll(t, h, topic, 1)
		if got := header(rs[0], choreo.HeaderAttempt); got != strconv.Itoa(i+1) {
			t.Errorf("%s: %s = %q; want %d", topic, choreo.HeaderAttempt, got, i+1)
		}
		if got := header(rs[0], choreo.HeaderErrorMessage); got != "not yet:  the gateway said no" {
			t.Errorf("%s: %s = %q; want the error on one line", topic, choreo.HeaderErrorMessage, got)
		}
		if got := header(rs[0], choreo.HeaderOriginalTopic); got != h.topic {
			t.Errorf("%s: original topic %q; want %s", topic, got, h.topic)
		}
	}
}

// TestLastRetryTierDeadLetters exhausts every tier.
func TestLastRetryTierDeadLetters(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	c := h.consumer(group, consumer.RetryTopics(100*time.Millisecond), consumer.Retry(consumer.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Millisecond, Multiplier: 1}))
	consumer.Handle(c, h.topic, behaviour)
	stop := running(t, c)
	pub, err := h.prod.Publish(context.Background(), h.topic, "k", order("fail", 1))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "dead letter", func() bool { return c.Stats().DeadLettered == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	dls := h.readDeadLetters(t, dlq.Topic(group), 1, 5*time.Second)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters; want 1", len(dls))
	}
	dl := dls[0]
	if dl.Error.Kind != choreo.KindRetriesExhausted || dl.Attempts != 4 {
		t.Errorf("kind %s attempts %d; want retries_exhausted after 4 (2 in process × 2 tiers)", dl.Error.Kind, dl.Attempts)
	}
	// The first failure is the source topic's, a tier's delay (100ms)
	// before the retry topic's attempts.
	if span := dl.LastFailure.Sub(dl.FirstFailure); span < 100*time.Millisecond {
		t.Errorf("first failure %v, last %v: %v apart; want the first failure in the source topic, at least the tier's 100ms before",
			dl.FirstFailure, dl.LastFailure, span)
	}
	if dl.Original.Topic != h.topic || dl.Original.Offset != pub.Offset || dl.Original.Partition != pub.Partition {
		t.Errorf("original %s/%d/%d; want the source record %s/%d/%d", dl.Original.Topic, dl.Original.Partition,
			dl.Original.Offset, h.topic, pub.Partition, pub.Offset)
	}
	for _, hd := range dl.Original.Headers {
		if len(hd.Key) > 7 && hd.Key[:7] == "choreo-" {
			t.Errorf("original headers carry retry header %s", hd.Key)
		}
	}
}

// TestTooLargeForRetryTopicIsDeadLettered: a record its retry topic
// refuses as too large does not hold its partition: it is dead-lettered
// (kind too_large, saying why and the handler's error), and the records
// after it are committed.
func TestTooLargeForRetryTopicIsDeadLettered(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	c := h.consumer(group, consumer.RetryTopics(100*time.Millisecond), consumer.Retry(consumer.RetryPolicy{MaxAttempts: 1, Multiplier: 1}),
		consumer.StuckAfter(time.Minute))
	consumer.Handle(c, h.topic, behaviour)
	stop := running(t, c)
	eventually(t, 20*time.Second, "consumer ready", c.Ready)
	retryTopic := fmt.Sprintf("%s.retry.1-100ms", group)
	h.limitTopic(t, retryTopic, 64) // no forward fits
	ctx := context.Background()
	for i, id := range []string{"ok", "fail", "ok"} {
		if _, err := h.prod.Publish(ctx, h.topic, "k", order(id, i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "the refused forward dead-lettered", func() bool { return c.Stats().DeadLettered == 1 })
	eventually(t, 10*time.Second, "commit past it", func() bool { return h.committed(group)[0] == 3 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Forwarded != 0 || s.Handled != 2 {
		t.Errorf("stats %+v; want no forward and 2 handled", s)
	}
	dls := h.readDeadLetters(t, dlq.Topic(group), 1, 5*time.Second)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters; want 1", len(dls))
	}
	dl := dls[0]
	if dl.Error.Kind != choreo.KindTooLarge || dl.Attempts != 1 || dl.Original.Offset != 1 ||
		!strings.Contains(dl.Error.Message, retryTopic) || !strings.Contains(dl.Error.Message, "downstream unavailable") {
		t.Errorf("dead letter kind %s, attempts %d, offset %d, message %q; want too_large after 1 attempt of offset 1, naming %s and the handler's error",
			dl.Error.Kind, dl.Attempts, dl.Original.Offset, dl.Error.Message, retryTopic)
	}
}

// TestDeadLetterOutageLosesNothing deletes the DLQ topic under a running
// consumer (which creates its topics only at start): the consumer must not
// commit past the poison record, and must write the dead letter once the
// topic exists again.
func TestDeadLetterOutageLosesNothing(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	ctx := context.Background()
	c := h.consumer(group, consumer.BlockingRetries())
	consumer.Handle(c, h.topic, behaviour)
	stop := running(t, c)
	eventually(t, 20*time.Second, "consumer ready", c.Ready)
	if _, err := h.cluster.Admin().DeleteTopics(ctx, dlq.Topic(group)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "DLQ topic deleted", func() bool {
		td, err := h.cluster.Admin().ListTopics(ctx, dlq.Topic(group))
		return err == nil && td[dlq.Topic(group)].Err != nil
	})
	keys := []string{"a", "poison", "b", "c"}
	for i, k := range keys {
		id := "ok"
		if k == "poison" {
			id = "permanent"
		}
		if _, err := h.prod.Publish(ctx, h.topic, k, order(id, i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the good records handled", func() bool { return c.Stats().Handled == 3 })
	time.Sleep(500 * time.Millisecond) // several commit intervals
	if got := h.committed(group)[0]; got != 1 {
		t.Fatalf("committed %d while the dead letter cannot be written; want 1 (the poison record's offset)", got)
	}
	eventually(t, 60*time.Second, "a failed dead-letter write", func() bool { return c.Stats().WriteFailures > 0 })
	if got := h.committed(group)[0]; got != 1 {
		t.Fatalf("committed %d after a failed dead-letter write; want 1", got)
	}
	if n := c.Stats().DeadLettered; n != 0 {
		t.Fatalf("dead-lettered %d with no DLQ topic", n)
	}

	h.cluster.CreateTopic(t, dlq.Topic(group), 1) // the DLQ comes back
	eventually(t, 60*time.Second, "dead letter written", func() bool { return c.Stats().DeadLettered == 1 })
	eventually(t, 10*time.Second, "commit past the poison record", func() bool { return h.committed(group)[0] == 4 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	dls := h.readDeadLetters(t, dlq.Topic(group), 1, 5*time.Second)
	if len(dls) != 1 || dls[0].Original.Offset != 1 || dls[0].Error.Kind != choreo.KindPermanent {
		t.Fatalf("dead letters %v; want one, of offset 1, kind permanent", dls)
	}
}

func TestKindsInCorpusAreDistinctEnough(t *testing.T) {
	// The corpus must cover the 14 kinds the issue lists; keep the list honest.
	h := newHarness(t, 1)
	names := []string{}
	for _, p := range h.corpus(t, 1024) {
		names = append(names, p.name)
	}
	sort.Strings(names)
	if len(names) != 14 {
		t.Fatalf("corpus has %d entries; want 14: %v", len(names), names)
	}
}

// TestLargeRecordIsDeadLettered: a 2 MiB record (over franz-go's default
// batch size, under MaxValueBytes) that fails permanently still reaches the
// dead-letter topic whole.
func TestLargeRecordIsDeadLettered(t *testing.T) {
	h := newHarness(t, 1)
	ctx := context.Background()
	topic := kafkatest.Name(t, "big")
	maxBytes := "4194304"
	resp, err := h.cluster.Admin().CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": &maxBytes}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = h.cluster.Admin().DeleteTopics(context.Background(), topic) })

	rec, _, err := h.prod.Record(ctx, topic, "k", order("permanent", 1))
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 2<<20)
	copy(big, rec.Value)
	rec.Value = big // decodes as trailing bytes: a permanent failure
	cl := h.cluster.Client(t, kgo.ProducerBatchMaxBytes(4<<20))
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatalf("produce 2 MiB record: %v", err)
	}

	group := kafkatest.Group(t)
	c := h.consumer(group, consumer.BlockingRetries())
	consumer.Handle(c, topic, behaviour)
	stop := running(t, c)
	eventually(t, 60*time.Second, "dead letter", func() bool { return c.Stats().DeadLettered == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if c.Stats().WriteFailures != 0 {
		t.Errorf("%d failed dead-letter writes; want none", c.Stats().WriteFailures)
	}
	dls := h.readDeadLetters(t, dlq.Topic(group), 1, 10*time.Second)
	if len(dls) != 1 || len(dls[0].Original.Value) != len(big) || dls[0].Error.Kind != choreo.KindTrailingBytes {
		t.Fatalf("dead letters: %d; want one holding the 2 MiB original as trailing_bytes", len(dls))
	}
}
