package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/kafkatest"
)

func TestHandleDeliversTypedEventsWithMetadata(t *testing.T) {
	h := newHarness(t, 3)
	out := h.cluster.Topic(t, 1)
	pubs := h.publish(50, func(i int) string { return []string{"a", "b", "c"}[i%3] })
	byID := map[string]int{}
	for i, p := range pubs {
		byID[p.Metadata.ID] = i
	}

	c := h.consumer(kafkatest.Group(t))
	var mu sync.Mutex
	seen := map[string]consumer.Event[OrderPlaced]{}
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		md, ok := choreo.MetadataFrom(ctx)
		if !ok || md.ID != ev.ID {
			t.Errorf("handler context metadata = %+v, %v; want the event's", md, ok)
		}
		// Publishing inside the handler continues the transaction.
		if _, err := h.prod.Publish(ctx, out, ev.Key, PaymentRequested{OrderID: ev.Data.OrderID, AmountCents: ev.Data.AmountCents}); err != nil {
			return err
		}
		mu.Lock()
		seen[ev.ID] = ev
		mu.Unlock()
		return nil
	})
	stop := running(t, c)
	eventually(t, 30*time.Second, "50 events handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 50 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for id, ev := range seen {
		i, ok := byID[id]
		if !ok {
			t.Fatalf("handled unknown event id %s", id)
		}
		p := pubs[i]
		if ev.Data != order(p.Key, i) || ev.Key != p.Key || ev.Offset != p.Offset || ev.Partition != p.Partition ||
			ev.Type != "choreo.test.OrderPlaced" || ev.Source != "test" || ev.CorrelationID != p.Metadata.CorrelationID ||
			ev.Attempt != 1 || ev.Time.IsZero() {
			t.Fatalf("event %s = %+v; want data %+v at %d/%d", id, ev, order(p.Key, i), p.Partition, p.Offset)
		}
	}
	// The events published by the handler carry the correlation and causation.
	rs := consumeAll(t, h, out, 50)
	for _, r := range rs {
		corr, cause := header(r, choreo.HeaderCorrelationID), header(r, choreo.HeaderCausationID)
		i, ok := byID[cause]
		if !ok || pubs[i].Metadata.CorrelationID != corr {
			t.Fatalf("follow-up event has correlation %q causation %q; want those of a handled event", corr, cause)
		}
	}
	if s := c.Stats(); s.Handled != 50 || s.InFlight != 0 {
		t.Errorf("stats %+v; want 50 handled, none in flight", s)
	}
	if got := h.committed(c.Group()); sum(got) != 50 {
		t.Errorf("committed offsets %v sum to %d; want 50", got, sum(got))
	}
	// The service's own topics were provisioned like its source topic.
	own := append([]string{dlq.Topic(c.Group())}, fmt.Sprintf("%s.retry.1-10s", c.Group()), fmt.Sprintf("%s.retry.3-10m", c.Group()), dlq.RedriveTopic(c.Group()))
	td, err := h.cluster.Admin().ListTopics(context.Background(), own...)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range own {
		if d := td[name]; d.Err != nil || len(d.Partitions) != 3 {
			t.Errorf("topic %s: %d partitions (%v); want 3, as the source", name, len(d.Partitions), d.Err)
		}
	}
}

func consumeAll(t *testing.T, h *harness, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := h.cluster.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n && ctx.Err() == nil {
		out = append(out, cl.PollFetches(ctx).Records()...)
	}
	if len(out) != n {
		t.Fatalf("read %d records from %s; want %d", len(out), topic, n)
	}
	return out
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func sum(m map[int32]int64) int64 {
	var s int64
	for _, v := range m {
		s += v
	}
	return s
}

// TestPerKeyOrderUnderConcurrency checks, for several random key
// distributions, that each key's records are handled one at a time in
// offset order while different keys do run concurrently.
func TestPerKeyOrderUnderConcurrency(t *testing.T) {
	for seed := range uint64(4) {
		t.Run("seed"+string(rune('0'+seed)), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			keys := 1 + rng.IntN(40)
			skew := rng.Float64() // some distributions put most records on few keys
			h := newHarness(t, 1+int32(rng.IntN(4)))
			const n = 600
			h.publish(n, func(int) string {
				k := rng.IntN(keys)
				if rng.Float64() < skew {
					k = rng.IntN(1 + keys/8)
				}
				return "k" + string(rune('A'+k))
			})

			c := h.consumer(kafkatest.Group(t), consumer.Concurrency(8))
			var mu sync.Mutex
			last := map[string]int64{}
			busy := map[string]bool{}
			handled := 0
			var active, peak atomic.Int64
			consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
				if r := active.Add(1); r > peak.Load() {
					peak.Store(r)
				}
				defer active.Add(-1)
				k := ev.Key
				mu.Lock()
				if busy[k] {
					t.Errorf("key %s: two records handled at once", k)
				}
				busy[k] = true
				if prev, ok := last[k]; ok && ev.Offset <= prev {
					t.Errorf("key %s: offset %d handled after %d", k, ev.Offset, prev)
				}
				last[k] = ev.Offset
				mu.Unlock()
				time.Sleep(time.Duration(rng2(ev.Offset)) * time.Microsecond)
				mu.Lock()
				busy[k] = false
				handled++
				mu.Unlock()
				return nil
			})
			stop := running(t, c)
			eventually(t, 60*time.Second, "all records handled", func() bool { mu.Lock(); defer mu.Unlock(); return handled == n })
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if keys > 4 && peak.Load() < 2 {
				t.Errorf("peak concurrency %d with %d keys; want different keys to run concurrently", peak.Load(), keys)
			}
		})
	}
}

func rng2(off int64) int64 { return (off * 7919) % 500 }

func TestNoCommitPastRecordNotDone(t *testing.T) {
	h := newHarness(t, 1)
	h.publish(20, func(i int) string { return "key-" + string(rune('a'+i)) }) // 20 distinct keys
	group := kafkatest.Group(t)
	const held = 5

	c := h.consumer(group, consumer.ShutdownTimeout(200*time.Millisecond))
	var handled atomic.Int64
	entered := make(chan struct{})
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		if ev.Offset == held {
			close(entered)
			<-ctx.Done() // held until the consumer gives up on it
			return ctx.Err()
		}
		handled.Add(1)
		return nil
	})
	stop := running(t, c)
	<-entered
	eventually(t, 30*time.Second, "the other 19 records handled", func() bool { return handled.Load() == 19 })
	time.Sleep(300 * time.Millisecond) // several commit intervals
	if got := h.committed(group)[0]; got != held {
		t.Fatalf("committed offset %d while record %d is held; want %d", got, held, held)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := h.committed(group)[0]; got != held {
		t.Fatalf("committed offset %d after shutdown; want %d", got, held)
	}

	// A new member resumes at the held record.
	c2 := h.consumer(group)
	var mu sync.Mutex
	var offsets []int64
	consumer.Handle(c2, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		mu.Lock()
		offsets = append(offsets, ev.Offset)
		mu.Unlock()
		return nil
	})
	stop2 := running(t, c2)
	eventually(t, 30*time.Second, "redelivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(offsets) >= 20-held })
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if offsets[0] != held {
		// records with other keys may run first; the held one must be among them
		found := false
		for _, o := range offsets {
			found = found || o == held
			if o < held {
				t.Fatalf("redelivered offset %d, below the committed %d", o, held)
			}
		}
		if !found {
			t.Fatalf("held record %d not redelivered; got %v", held, offsets)
		}
	}
	if got := h.committed(group)[0]; got != 20 {
		t.Errorf("committed %d at the end; want 20", got)
	}
}

func TestDuplicateEventIDHandledOnce(t *testing.T) {
	h := newHarness(t, 1)
	pubs := h.publish(1, func(int) string { return "k" })
	// Re-publish the same record (same ce_id) twice, as a producer retry
	// after a lost ack or an upstream replay would.
	r := consumeAll(t, h, h.topic, 1)[0]
	cl := h.cluster.Client(t)
	for range 2 {
		dup := &kgo.Record{Topic: h.topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
		if err := cl.ProduceSync(context.Background(), dup).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	c := h.consumer(kafkatest.Group(t))
	var calls atomic.Int64
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		if ev.ID != pubs[0].Metadata.ID {
			t.Errorf("id %s; want %s", ev.ID, pubs[0].Metadata.ID)
		}
		calls.Add(1)
		return nil
	})
	stop := running(t, c)
	eventually(t, 30*time.Second, "3 records done", func() bool { s := c.Stats(); return s.Handled+s.Duplicates == 3 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler called %d times for one ce_id; want 1", n)
	}
	if s := c.Stats(); s.Duplicates != 2 {
		t.Errorf("duplicates %d; want 2", s.Duplicates)
	}
	if got := h.committed(c.Group())[0]; got != 3 {
		t.Errorf("committed %d; want 3 (duplicates are done)", got)
	}
}

func TestRetryThenSuccess(t *testing.T) {
	h := newHarness(t, 1)
	h.publish(10, func(i int) string { return []string{"flaky", "steady"}[i%2] })
	c := h.consumer(kafkatest.Group(t), consumer.Retry(consumer.RetryPolicy{
		MaxAttempts: 3, InitialInterval: 10 * time.Millisecond, MaxInterval: 20 * time.Millisecond, Multiplier: 2,
	}))
	var mu sync.Mutex
	attempts := map[int64][]int{}
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		mu.Lock()
		defer mu.Unlock()
		attempts[ev.Offset] = append(attempts[ev.Offset], ev.Attempt)
		if ev.Key == "flaky" && ev.Attempt < 3 {
			return errors.New("database busy")
		}
		return nil
	})
	stop := running(t, c)
	eventually(t, 30*time.Second, "10 handled", func() bool { return c.Stats().Handled == 10 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for off, as := range attempts {
		want := "[1]"
		if off%2 == 0 {
			want = "[1 2 3]"
		}
		if got := fmt.Sprint(as); got != want {
			t.Errorf("offset %d attempts %s; want %s", off, got, want)
		}
	}
	if s := c.Stats(); s.Retried != 10 {
		t.Errorf("retried %d; want 10 (5 flaky records × 2)", s.Retried)
	}
}

// TestBackpressureKeepsInFlightUnderCap builds a large backlog and a slow
// handler: the consumer must never take on more than its cap.
func TestBackpressureKeepsInFlightUnderCap(t *testing.T) {
	h := newHarness(t, 4)
	backlog := 200_000
	if testing.Short() {
		backlog = 20_000
	}
	// Produce the backlog raw (pre-encoded) for speed.
	h.publish(1, func(int) string { return "k0" })
	tmpl := consumeAll(t, h, h.topic, 1)[0]
	cl := h.cluster.Client(t, kgo.ProducerLinger(10*time.Millisecond), kgo.MaxBufferedRecords(50_000))
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range backlog - 1 {
		wg.Add(1)
		hs := append([]kgo.RecordHeader(nil), tmpl.Headers...)
		for j := range hs {
			if hs[j].Key == choreo.HeaderID {
				hs[j].Value = []byte(choreo.NewID())
			}
		}
		cl.Produce(ctx, &kgo.Record{Topic: h.topic, Key: []byte("k" + string(rune('a'+i%50))), Value: tmpl.Value, Headers: hs},
			func(_ *kgo.Record, err error) {
				if err != nil {
					t.Error(err)
				}
				wg.Done()
			})
	}
	wg.Wait()

	const limit = 256
	c := h.consumer(kafkatest.Group(t), consumer.MaxInFlight(limit), consumer.Concurrency(16))
	var handled atomic.Int64
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		time.Sleep(time.Millisecond)
		handled.Add(1)
		return nil
	})
	stop := running(t, c)
	eventually(t, 60*time.Second, "3,000 records handled", func() bool { return handled.Load() >= 3000 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s := c.Stats()
	if s.PeakInFlight > limit {
		t.Fatalf("peak in flight %d; want at most the cap %d", s.PeakInFlight, limit)
	}
	if s.PeakInFlight < limit/2 {
		t.Errorf("peak in flight %d; want the cap (%d) to be reached with a backlog", s.PeakInFlight, limit)
	}
	t.Logf("backlog %d, handled %d before stop, peak in flight %d (cap %d)", backlog, handled.Load(), s.PeakInFlight, limit)
}

// TestRetryingKeysDoNotHoldWorkers has more failing keys than workers, each
// waiting a long back-off: the other keys must still be handled meanwhile.
func TestRetryingKeysDoNotHoldWorkers(t *testing.T) {
	h := newHarness(t, 1)
	for i := range 4 {
		h.publish(1, func(int) string { return fmt.Sprintf("failing-%d", i) })
	}
	h.publish(40, func(i int) string { return fmt.Sprintf("steady-%d", i) })
	c := h.consumer(kafkatest.Group(t), consumer.Concurrency(2), consumer.BlockingRetries(),
		consumer.Retry(consumer.RetryPolicy{MaxAttempts: 2, InitialInterval: 3 * time.Second, MaxInterval: 3 * time.Second, Multiplier: 1}))
	var mu sync.Mutex
	var retriedAt time.Time
	var steadyDone time.Time
	steady := 0
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		mu.Lock()
		defer mu.Unlock()
		if strings.HasPrefix(ev.Key, "failing") {
			if ev.Attempt == 1 {
				return errors.New("try again later")
			}
			if retriedAt.IsZero() {
				retriedAt = time.Now()
			}
			return nil
		}
		steady++
		steadyDone = time.Now()
		return nil
	})
	stop := running(t, c)
	eventually(t, 30*time.Second, "everything handled", func() bool { return c.Stats().Handled == 44 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if steady != 40 || !steadyDone.Before(retriedAt) {
		t.Fatalf("steady keys done at %v, first retry at %v: the 4 retrying keys held the 2 workers", steadyDone, retriedAt)
	}
}

func TestLiveAndReady(t *testing.T) {
	h := newHarness(t, 1)
	c := h.consumer(kafkatest.Group(t))
	consumer.Handle(c, h.topic, func(context.Context, consumer.Event[OrderPlaced]) error { return nil })
	if c.Ready() || !c.Live() {
		t.Fatalf("before Run: ready %v live %v; want not ready, live", c.Ready(), c.Live())
	}
	stop := running(t, c)
	eventually(t, 30*time.Second, "ready", c.Ready)
	if !c.Live() {
		t.Error("running consumer not live")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if c.Ready() || c.Live() {
		t.Errorf("stopped consumer: ready %v live %v; want neither", c.Ready(), c.Live())
	}
}

// TestShutdownDuringBackOffIsPrompt stops a consumer while a record waits
// out a long retry back-off: Run returns at once and the record stays
// uncommitted, to be handled again later.
func TestShutdownDuringBackOffIsPrompt(t *testing.T) {
	h := newHarness(t, 1)
	h.publish(1, func(int) string { return "k" })
	group := kafkatest.Group(t)
	c := h.consumer(group, consumer.BlockingRetries(),
		consumer.Retry(consumer.RetryPolicy{MaxAttempts: 5, InitialInterval: time.Minute, MaxInterval: time.Minute, Multiplier: 1}))
	var calls atomic.Int64
	consumer.Handle(c, h.topic, func(context.Context, consumer.Event[OrderPlaced]) error {
		calls.Add(1)
		return errors.New("unavailable")
	})
	stop := running(t, c)
	eventually(t, 30*time.Second, "a failed attempt", func() bool { return c.Stats().Retried == 1 })
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Run took %v to return during a one-minute back-off", took)
	}
	if got := h.committed(group)[0]; got != 0 {
		t.Errorf("committed %d; want 0: the record in back-off is not done", got)
	}
	if calls.Load() != 1 {
		t.Errorf("handler called %d times; want 1", calls.Load())
	}
}

// TestTopicsListsSourceTopicsOnce: Topics names each topic a handler is
// registered on once, in the order of first registration.
func TestTopicsListsSourceTopicsOnce(t *testing.T) {
	reg := newHarness(t, 1).reg
	c, err := consumer.New(connection.Config{Brokers: []string{"127.0.0.1:1"}}, reg, "g")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Topics(); len(got) != 0 {
		t.Fatalf("Topics before any Handle: %v; want none", got)
	}
	noop := func(context.Context, consumer.Event[OrderPlaced]) error { return nil }
	consumer.Handle(c, "payments", noop)
	consumer.Handle(c, "orders", noop)
	consumer.Handle(c, "payments", func(context.Context, consumer.Event[PaymentRequested]) error { return nil })
	got := c.Topics()
	if want := []string{"payments", "orders"}; !slices.Equal(got, want) {
		t.Fatalf("Topics: %v; want %v", got, want)
	}
	got[0] = "changed"
	if c.Topics()[0] != "payments" {
		t.Fatal("Topics returned the consumer's own slice")
	}
}
