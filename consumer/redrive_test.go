package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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

// deadLetterRecords reads n records of a dead-letter topic from its start.
func deadLetterRecords(t *testing.T, h *harness, topic string, n int) ([]*kgo.Record, []*dlq.DeadLetter) {
	t.Helper()
	rs := consumeAll(t, h, topic, n)
	codec := schema.NewCodec(h.reg)
	dls := make([]*dlq.DeadLetter, len(rs))
	for i, r := range rs {
		dl, err := dlq.Decode(context.Background(), codec, r)
		if err != nil {
			t.Fatalf("dead letter %d: %v", r.Offset, err)
		}
		dls[i] = dl
	}
	return rs, dls
}

// TestRedriveReachesOnlyTheFailingService: a dead letter redriven with
// dlq.Replay goes to the failing service's redrive topic; that service
// handles it (routed by its original topic, attempts counted from 1 again)
// and another service reading the same source topic never sees it. A
// redrive that fails again goes through the retry topics to a new dead
// letter that links the first one; a redrive of an event handled
// meanwhile is skipped by the idempotency store.
func TestRedriveReachesOnlyTheFailingService(t *testing.T) {
	h := newHarness(t, 2)
	failing, other := kafkatest.Group(t), kafkatest.Group(t)
	retry := consumer.Retry(consumer.RetryPolicy{MaxAttempts: 1, Multiplier: 1})

	var broken atomic.Bool
	broken.Store(true)
	var mu sync.Mutex
	var badAttempts []int
	var badTopics []string
	var handled atomic.Int64
	a := h.consumer(failing, consumer.RetryTopics(100*time.Millisecond), retry)
	consumer.Handle(a, h.topic, func(_ context.Context, ev consumer.Event[OrderPlaced]) error {
		if ev.Key == "bad" {
			mu.Lock()
			badAttempts = append(badAttempts, ev.Attempt)
			badTopics = append(badTopics, ev.Topic)
			mu.Unlock()
			if broken.Load() {
				return errors.New("downstream down")
			}
		}
		handled.Add(1)
		return nil
	})
	var otherHandled atomic.Int64
	b := h.consumer(other, consumer.BlockingRetries())
	consumer.Handle(b, h.topic, func(context.Context, consumer.Event[OrderPlaced]) error {
		otherHandled.Add(1)
		return nil
	})
	stopA, stopB := running(t, a), running(t, b)
	eventually(t, 20*time.Second, "both ready", func() bool { return a.Ready() && b.Ready() })

	ctx := context.Background()
	pub, err := h.prod.Publish(ctx, h.topic, "bad", order("bad", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.prod.Publish(ctx, h.topic, "good", order("good", 2)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "first dead letter", func() bool { return a.Stats().DeadLettered == 1 })
	eventually(t, 20*time.Second, "other service handled both", func() bool { return otherHandled.Load() == 2 })
	recs, dls := deadLetterRecords(t, h, dlq.Topic(failing), 1)
	if dls[0].Attempts != 2 || dls[0].RedriveCount() != 0 {
		t.Fatalf("first dead letter: %d attempts, redrive count %d; want 2, 0", dls[0].Attempts, dls[0].RedriveCount())
	}

	// Redriven while still broken: tier 0, then the retry topic, then a
	// new dead letter of the same original that links the first.
	cl := h.cluster.Client(t)
	if err := cl.ProduceSync(ctx, dls[0].Replay(recs[0])).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "second dead letter", func() bool { return a.Stats().DeadLettered == 2 })
	recs, dls = deadLetterRecords(t, h, dlq.Topic(failing), 2)
	second, secondRec := dls[1], recs[1]
	o := second.Original
	if o.Topic != h.topic || o.Partition != pub.Partition || o.Offset != pub.Offset {
		t.Errorf("second dead letter's original %s/%d/%d; want the source record %s/%d/%d", o.Topic, o.Partition, o.Offset, h.topic, pub.Partition, pub.Offset)
	}
	if second.Attempts != 2 || second.Error.Kind != choreo.KindRetriesExhausted {
		t.Errorf("second dead letter: %d attempts, kind %s; want 2 (counted from 1 again), retries_exhausted", second.Attempts, second.Error.Kind)
	}
	link := fmt.Sprintf("%s/%d/%d", recs[0].Topic, recs[0].Partition, recs[0].Offset)
	if second.RedriveCount() != 1 {
		t.Errorf("second dead letter's redrive count %d; want 1", second.RedriveCount())
	}
	sum, err := dlq.Peek(secondRec)
	if err != nil {
		t.Fatal(err)
	}
	if sum.RedriveCount != 1 || sum.ReplayedFrom != link {
		t.Errorf("second dead letter's readable headers: redrive count %d, replayed from %q; want 1, %s", sum.RedriveCount, sum.ReplayedFrom, link)
	}

	// Fixed: the second dead letter redriven is handled once, by this
	// service only.
	broken.Store(false)
	before := handled.Load()
	if err := cl.ProduceSync(ctx, second.Replay(secondRec)).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "redrive handled", func() bool { return handled.Load() == before+1 })

	// Redriven again: the store skips it.
	if err := cl.ProduceSync(ctx, second.Replay(secondRec)).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "second redrive skipped as a duplicate", func() bool { return a.Stats().Duplicates == 1 })
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	if n := handled.Load(); n != before+1 {
		t.Errorf("failing service handled %d; want %d (each redrive once at most)", n, before+1)
	}
	if s := b.Stats(); s.Handled != 2 || s.Duplicates != 0 {
		t.Errorf("other service stats %+v; want 2 handled and nothing else: redrives are not for it", s)
	}
	mu.Lock()
	defer mu.Unlock()
	redrive := dlq.RedriveTopic(failing)
	wantAttempts := "[1 2 1 2 1]" // source, retry tier; redrive, retry tier; redrive (the duplicate never reaches the handler)
	if got := fmt.Sprint(badAttempts); got != wantAttempts {
		t.Errorf("attempts of the bad event %s; want %s", got, wantAttempts)
	}
	if len(badTopics) == 5 && (badTopics[2] != redrive || badTopics[4] != redrive) {
		t.Errorf("topics the bad event was handled from %v; want the redrive topic %s third and fifth", badTopics, redrive)
	}
}

// TestRedriveWithBlockingRetries: a service without retry topics has its
// redrive topic all the same (created at start, always read); a redriven
// record that fails is dead-lettered after its in-process attempts.
func TestRedriveWithBlockingRetries(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	var calls atomic.Int64
	c := h.consumer(group, consumer.BlockingRetries(), consumer.Retry(consumer.RetryPolicy{MaxAttempts: 2, InitialInterval: time.Millisecond, Multiplier: 1}))
	consumer.Handle(c, h.topic, func(_ context.Context, ev consumer.Event[OrderPlaced]) error {
		calls.Add(1)
		if ev.Key == "fails" {
			return errors.New("still broken")
		}
		return nil
	})
	stop := running(t, c)
	eventually(t, 20*time.Second, "consumer ready", c.Ready)
	td, err := h.cluster.Admin().ListTopics(context.Background(), dlq.RedriveTopic(group))
	if err != nil || td[dlq.RedriveTopic(group)].Err != nil {
		t.Fatalf("redrive topic not created: %v %v", err, td)
	}

	// Dead letters as an earlier run would have written them: one whose
	// cause is fixed, one that fails again.
	ctx := context.Background()
	cl := h.cluster.Client(t)
	for i, key := range []string{"fixed", "fails"} {
		rec, _, err := h.prod.Record(ctx, h.topic, key, order(key, i))
		if err != nil {
			t.Fatal(err)
		}
		rec.Partition, rec.Offset = 0, int64(40+i)
		dl := dlq.New(rec, dlq.Failure{Err: errors.New("earlier"), Group: group})
		if err := cl.ProduceSync(ctx, dl.Replay(&kgo.Record{Topic: dlq.Topic(group), Offset: int64(i)})).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "one handled, one dead-lettered", func() bool {
		s := c.Stats()
		return s.Handled == 1 && s.DeadLettered == 1
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d handler calls; want 3 (1 + 2 in-process attempts)", n)
	}
	_, dls := deadLetterRecords(t, h, dlq.Topic(group), 1)
	dl := dls[0]
	if dl.Original.Offset != 41 || dl.Original.Topic != h.topic || dl.Error.Kind != choreo.KindRetriesExhausted || dl.RedriveCount() != 1 {
		t.Errorf("dead letter of %s/%d, kind %s, redrive count %d; want %s/41, retries_exhausted, 1",
			dl.Original.Topic, dl.Original.Offset, dl.Error.Kind, dl.RedriveCount(), h.topic)
	}
	var from string
	for _, hd := range dl.Original.Headers {
		if hd.Key == choreo.HeaderReplayedFrom {
			from = string(hd.Value)
		}
	}
	if want := dlq.Topic(group) + "/0/" + strconv.Itoa(1); from != want {
		t.Errorf("dead letter's original %s = %q; want %s", choreo.HeaderReplayedFrom, from, want)
	}
}
