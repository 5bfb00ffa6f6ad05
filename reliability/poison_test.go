package reliability_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/internal/testevents"
	"github.com/choreokit/choreo/kafkatest"
)

// poisonKind builds one kind of poison record from a valid record of the
// topic: what it does to it, and the error kind its dead letter must
// carry.
type poisonKind struct {
	name string
	kind choreo.ErrorKind
	make func(valid *kgo.Record) *kgo.Record
}

// poisonKinds returns every kind of poison record the consumer must
// dead-letter. other is a valid value of another schema.
func poisonKinds(other []byte, maxValue int) []poisonKind {
	value := func(f func(v []byte) []byte) func(*kgo.Record) *kgo.Record {
		return func(r *kgo.Record) *kgo.Record { r.Value = f(r.Value); return r }
	}
	without := func(header string) func(*kgo.Record) *kgo.Record {
		return func(r *kgo.Record) *kgo.Record {
			kept := r.Headers[:0]
			for _, h := range r.Headers {
				if h.Key != header {
					kept = append(kept, h)
				}
			}
			r.Headers = kept
			return r
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	return []poisonKind{
		{"empty value", choreo.KindEmptyValue, value(func([]byte) []byte { return nil })},
		{"random bytes", choreo.KindBadMagicByte, value(func([]byte) []byte {
			b := make([]byte, 64)
			for i := range b {
				b[i] = byte(rng.UintN(256))
			}
			b[0] = 0xa7
			return b
		})},
		{"wrong magic byte", choreo.KindBadMagicByte, value(func(v []byte) []byte { return append([]byte{1}, v[1:]...) })},
		{"unknown schema id", choreo.KindUnknownSchema, value(func(v []byte) []byte {
			return append(binary.BigEndian.AppendUint32([]byte{0}, 0x7ffffff0), v[5:]...)
		})},
		{"truncated avro", choreo.KindTruncated, value(func(v []byte) []byte { return v[:len(v)-3] })},
		{"trailing garbage", choreo.KindTrailingBytes, value(func(v []byte) []byte { return append(v, 0xde, 0xad) })},
		{"valid avro of another schema", choreo.KindIncompatibleSchema, value(func([]byte) []byte { return other })},
		{"missing ce_id", choreo.KindMissingHeader, without(choreo.HeaderID)},
		{"missing ce_type", choreo.KindMissingHeader, without(choreo.HeaderType)},
		{"value over the max size", choreo.KindTooLarge, value(func(v []byte) []byte {
			big := make([]byte, maxValue+1)
			copy(big, v)
			return big
		})},
		// These four are valid records the handler fails on.
		{"handler panic", choreo.KindPanic, nil},
		{"handler timeout (retried, then exhausted)", choreo.KindRetriesExhausted, nil},
		{"permanent error", choreo.KindPermanent, nil},
		{"retryable error until retries are exhausted", choreo.KindRetriesExhausted, nil},
	}
}

// poisonHandler misbehaves for the poison order ids and applies the
// effect of every other event.
func poisonHandler(s sink) consumer.Handler[OrderPlaced] {
	return func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		switch ev.Data.OrderID {
		case "handler panic":
			panic("handler bug")
		case "handler timeout (retried, then exhausted)":
			<-ctx.Done()
			return ctx.Err()
		case "permanent error":
			return choreo.Permanent(errors.New("order rejected by the business rules"))
		case "retryable error until retries are exhausted":
			return errors.New("downstream keeps failing for this order")
		}
		return s.apply(ctx, ev)
	}
}

type coords struct {
	partition int32
	offset    int64
}

// TestPoisonStorm mixes 10% poison records of every kind (14) into a
// stream of good events. Each poison record must be in the dead-letter
// topic exactly once, found by its original coordinates, with its kind;
// every good event's effect must exist exactly once.
func TestPoisonStorm(t *testing.T) {
	e := newEnv(t, 4, false, "")
	n := size(2000, 10000)
	const maxValue = 4 << 10
	ctx := context.Background()
	other, _, err := e.prod.Record(ctx, e.cluster.Topic(t, 1), "k", testevents.PaymentRequested{OrderID: "o", AmountCents: 5})
	if err != nil {
		t.Fatal(err)
	}
	kinds := poisonKinds(other.Value, maxValue)
	cl := e.cluster.Client(t, kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20))
	poison := map[coords]poisonKind{}
	var good []string
	var recs []*kgo.Record
	kindOf := map[*kgo.Record]poisonKind{} // the poison records' kinds
	for i := range n {
		key := keyOf(i)
		var rec *kgo.Record
		if i%10 == 9 {
			k := kinds[(i/10)%len(kinds)]
			id := key
			if k.make == nil {
				id = k.name // the handler fails on it
			}
			if rec, _, err = e.prod.Record(ctx, e.topic, key, order(id, i)); err != nil {
				t.Fatal(err)
			}
			if k.make != nil {
				rec = k.make(rec)
			}
			kindOf[rec] = k
		} else {
			var md choreo.Metadata
			if rec, md, err = e.prod.Record(ctx, e.topic, key, order(key, i)); err != nil {
				t.Fatal(err)
			}
			good = append(good, md.ID)
		}
		recs = append(recs, rec)
	}
	for from := 0; from < len(recs); from += 500 {
		batch := recs[from:min(from+500, len(recs))]
		results := cl.ProduceSync(ctx, batch...)
		if err := results.FirstErr(); err != nil {
			t.Fatal(err)
		}
		for _, res := range results { // in the order they were acknowledged
			if k, ok := kindOf[res.Record]; ok {
				poison[coords{res.Record.Partition, res.Record.Offset}] = k
			}
		}
	}
	group := kafkatest.Group(t)
	c, err := consumer.New(e.conn, e.reg, group, consumer.Store(e.sink.store()), consumer.MaxValueBytes(maxValue),
		consumer.HandlerTimeout(200*time.Millisecond), consumer.RetryTopics(100*time.Millisecond, 200*time.Millisecond),
		consumer.Retry(consumer.RetryPolicy{MaxAttempts: 2, InitialInterval: 5 * time.Millisecond, Multiplier: 2}),
		consumer.CommitInterval(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	consumer.Handle(c, e.topic, poisonHandler(e.sink))
	start := time.Now()
	stop := running(t, c)
	deadline := time.Now().Add(40 * time.Second)
	for {
		s := c.Stats()
		if s.DeadLettered >= int64(len(poison)) && len(e.sink.effects(t)) >= len(good) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %d of %d poison records dead-lettered, %d of %d good events handled; stats %+v",
				s.DeadLettered, len(poison), len(e.sink.effects(t)), len(good), s)
		}
		time.Sleep(50 * time.Millisecond)
	}
	done := time.Now()
	time.Sleep(500 * time.Millisecond)
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	dls := readDeadLetters(t, e, dlq.Topic(group), len(poison))
	seen := map[coords]int{}
	for _, dl := range dls {
		at := coords{dl.Original.Partition, dl.Original.Offset}
		k, ok := poison[at]
		if !ok || dl.Original.Topic != e.topic {
			t.Errorf("dead letter of %s/%d/%d is not a poison record", dl.Original.Topic, at.partition, at.offset)
			continue
		}
		seen[at]++
		if dl.Error.Kind != k.kind {
			t.Errorf("%s at %d/%d: kind %s (%s); want %s", k.name, at.partition, at.offset, dl.Error.Kind, dl.Error.Message, k.kind)
		}
	}
	missing, twice := 0, 0
	for at, k := range poison {
		switch seen[at] {
		case 0:
			missing++
			t.Errorf("%s at %d/%d not dead-lettered", k.name, at.partition, at.offset)
		case 1:
		default:
			twice++
			t.Errorf("%s at %d/%d dead-lettered %d times", k.name, at.partition, at.offset, seen[at])
		}
	}
	tl := count(good, e.sink.effects(t))
	tl.check(t)
	record(t, e, result{
		Fault:  fmt.Sprintf("poison storm: %d poison records of %d kinds among %d", len(poison), len(kinds), n),
		Events: tl.events, Effects: tl.effects, Duplicates: tl.duplicates, Lost: tl.lost + missing,
		Drain: done.Sub(start),
		Notes: fmt.Sprintf("%d dead letters for %d poison records (%d missing, %d twice), each of its kind, by original coordinates; events and effects count the good records",
			len(dls), len(poison), missing, twice),
	})
}
