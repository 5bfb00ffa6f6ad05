package consumer_test

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/kafkatest"
)

// TestCommitNeverGoesBackwards widens the window between a periodic
// commit reading its offsets and sending them, and rebalances the group
// inside it: the broker must never see, for a partition, an offset lower
// than one committed before it.
func TestCommitNeverGoesBackwards(t *testing.T) {
	h := newHarness(t, 4, kafkatest.EmbeddedOnly("observes every OffsetCommit request through kfake's control hook"))
	group := kafkatest.Group(t)

	type commit struct {
		partition int32
		offset    int64
	}
	td, err := h.cluster.Admin().ListTopics(context.Background(), h.topic)
	if err != nil {
		t.Fatal(err)
	}
	topicID := td[h.topic].ID // newer OffsetCommit versions name topics by id
	var mu sync.Mutex
	var seen []commit
	h.cluster.Embedded().ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		h.cluster.Embedded().KeepControl()
		r := req.(*kmsg.OffsetCommitRequest)
		if r.Group != group {
			return nil, nil, false
		}
		mu.Lock()
		defer mu.Unlock()
		for _, tp := range r.Topics {
			if tp.Topic != h.topic && tp.TopicID != topicID {
				continue
			}
			for _, p := range tp.Partitions {
				seen = append(seen, commit{p.Partition, p.Offset})
			}
		}
		return nil, nil, false
	})

	// Events keep flowing so that offsets keep moving.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var published sync.WaitGroup
	published.Add(1)
	go func() {
		defer published.Done()
		for i := 0; ctx.Err() == nil && i < 4000; i++ {
			key := "k" + strconv.Itoa(i%64)
			h.prod.PublishAsync(ctx, h.topic, key, order(key, i), nil)
			if i%40 == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}()

	var armed atomic.Bool
	slow := consumer.CommitHook(func(periodic bool) {
		if periodic && armed.CompareAndSwap(true, false) {
			time.Sleep(1500 * time.Millisecond) // offsets read; a rebalance happens meanwhile
		}
	})
	handle := func(c *consumer.Consumer) {
		consumer.Handle(c, h.topic, func(context.Context, consumer.Event[OrderPlaced]) error { return nil })
	}
	a := h.consumer(group, slow, consumer.CommitInterval(50*time.Millisecond))
	handle(a)
	running(t, a)
	eventually(t, 30*time.Second, "first member handling", func() bool { return a.Stats().Handled > 200 })

	armed.Store(true)
	time.Sleep(100 * time.Millisecond) // the next periodic commit takes the hook
	b := h.consumer(group, consumer.CommitInterval(50*time.Millisecond))
	handle(b)
	running(t, b)
	eventually(t, 30*time.Second, "second member gets partitions", func() bool { return b.Stats().Assigned > 0 })
	eventually(t, 30*time.Second, "second member handling", func() bool { return b.Stats().Handled > 100 })
	time.Sleep(2 * time.Second) // let the slowed commit land, wherever it lands
	cancel()
	published.Wait()

	mu.Lock()
	defer mu.Unlock()
	last := map[int32]int64{}
	for i, c := range seen {
		if prev, ok := last[c.partition]; ok && c.offset < prev {
			t.Fatalf("commit %d moved partition %d back from %d to %d", i, c.partition, prev, c.offset)
		}
		last[c.partition] = c.offset
	}
	if len(seen) < 8 {
		t.Fatalf("saw %d commits; want the group to have committed", len(seen))
	}
}

// TestStuckHeadBoundsRedelivery holds the first record of a partition in a
// hung handler while 1,000 records behind it are handled: the consumer
// must stop taking records on at MaxUncommitted, so a new member with a
// fresh memory store is handed at most that many of them again.
func TestStuckHeadBoundsRedelivery(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	const maxInFlight, behind = 100, 1000
	h.publish(1, func(int) string { return "stuck" })
	h.publish(behind, func(i int) string { return "k" + strconv.Itoa(i) })

	release := make(chan struct{})
	defer close(release)
	var first sync.Map // order id → handled in the first run
	a := h.consumer(group, consumer.MaxInFlight(maxInFlight), consumer.ShutdownTimeout(time.Second))
	consumer.Handle(a, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		if ev.Key == "stuck" {
			<-release // hangs, ignoring its context
			return nil
		}
		first.Store(ev.Data.OrderID+"/"+strconv.FormatInt(ev.Offset, 10), true)
		return nil
	})
	stopA := running(t, a)
	eventually(t, 30*time.Second, "records behind the stuck one handled", func() bool { return a.Stats().Handled >= maxInFlight/2 })
	// However long the head is stuck, the backlog stays at the cap.
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		if s := a.Stats(); s.Uncommitted > maxInFlight {
			t.Fatalf("tracked records %d; want at most MaxUncommitted = MaxInFlight = %d", s.Uncommitted, maxInFlight)
		}
	}
	handledA := a.Stats().Handled
	if handledA >= behind {
		t.Fatalf("first member handled %d of the %d records behind a stuck one; want it to stop at the cap", handledA, behind)
	}
	if err := stopA(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := h.committed(group)[0]; got > 0 {
		t.Fatalf("committed offset %d; want nothing past the stuck record at 0", got)
	}

	var again atomic.Int64
	var all atomic.Int64
	b := h.consumer(group, consumer.MaxInFlight(maxInFlight))
	consumer.Handle(b, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		all.Add(1)
		if _, ok := first.Load(ev.Data.OrderID + "/" + strconv.FormatInt(ev.Offset, 10)); ok {
			again.Add(1)
		}
		return nil
	})
	running(t, b)
	eventually(t, 60*time.Second, "every record handled by the new member", func() bool { return h.committed(group)[0] == behind+1 })
	if n := again.Load(); n > maxInFlight {
		t.Fatalf("%d records handed to handlers again after the restart; want at most MaxInFlight = %d", n, maxInFlight)
	}
	t.Logf("first member handled %d behind the stuck record; %d handed again after the restart", handledA, again.Load())
}

// TestShutdownBoundedByTimeoutWhenHandlerIgnoresContext: Run returns
// within ShutdownTimeout even though a handler never returns; the
// handler is counted as abandoned and its record is not committed past.
func TestShutdownBoundedByTimeoutWhenHandlerIgnoresContext(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	h.publish(1, func(int) string { return "hang" })
	h.publish(20, func(i int) string { return "k" + strconv.Itoa(i) })

	release := make(chan struct{})
	defer close(release)
	c := h.consumer(group, consumer.ShutdownTimeout(time.Second))
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		if ev.Key == "hang" {
			<-release
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	eventually(t, 30*time.Second, "the other records handled", func() bool { return c.Stats().Handled == 20 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s with a ShutdownTimeout of 1s")
	}
	if s := c.Stats(); s.Abandoned != 1 {
		t.Errorf("Abandoned = %d; want 1", s.Abandoned)
	}
	if got := h.committed(group)[0]; got != 0 {
		t.Errorf("committed offset %d; want 0 (the hung record is not done)", got)
	}
}

// TestRevokeBoundedByTimeoutWhenHandlerIgnoresContext: the revoke
// callback returns within RevokeTimeout even though a handler of the
// revoked partition never returns, so the partition moves to the new
// member, which handles the record.
func TestRevokeBoundedByTimeoutWhenHandlerIgnoresContext(t *testing.T) {
	h := newHarness(t, 2)
	group := kafkatest.Group(t)
	pubs := h.publish(2, func(i int) string { return "hang" + strconv.Itoa(i) })

	release := make(chan struct{})
	defer close(release)
	var hung, byB atomic.Int64
	a := h.consumer(group, consumer.RevokeTimeout(time.Second))
	consumer.Handle(a, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		hung.Add(1)
		<-release // every record hangs in the first member
		return nil
	})
	running(t, a)
	eventually(t, 30*time.Second, "both records hung in the first member", func() bool { return hung.Load() == 2 })

	b := h.consumer(group)
	consumer.Handle(b, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		byB.Add(1)
		return nil
	})
	running(t, b)
	// Without a bounded revoke, the rebalance waits for the group's
	// rebalance timeout (a minute) or forever.
	eventually(t, 25*time.Second, "the second member handles a record of a revoked partition", func() bool { return byB.Load() >= 1 })
	if n := a.Stats().Abandoned; n < 1 {
		t.Errorf("first member Abandoned = %d; want at least 1", n)
	}
	_ = pubs
}

// TestGoexitInHandlerDoesNotWedge: a handler that calls runtime.Goexit
// (as t.Fatal does) must not wedge its key or Run: its record is
// dead-lettered as a panic, the next record of the key is handled, and
// Run returns promptly.
func TestGoexitInHandlerDoesNotWedge(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	pubs := h.publish(3, func(int) string { return "k" })

	var handled atomic.Int64
	c := h.consumer(group, consumer.Concurrency(1))
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		if ev.Offset == pubs[1].Offset {
			runtime.Goexit()
		}
		handled.Add(1)
		return nil
	})
	stop := running(t, c)
	eventually(t, 30*time.Second, "the records around the Goexit handled", func() bool { return handled.Load() == 2 })
	eventually(t, 30*time.Second, "the Goexit record dead-lettered", func() bool { return c.Stats().DeadLettered == 1 })
	eventually(t, 10*time.Second, "the partition committed", func() bool { return h.committed(group)[0] == 3 })
	dls := h.readDeadLetters(t, group+".dlq", 1, 5*time.Second)
	if len(dls) != 1 || dls[0].Error.Kind != choreo.KindPanic || dls[0].Original.Offset != pubs[1].Offset {
		t.Fatalf("dead letters %+v; want one of kind panic for offset %d", dls, pubs[1].Offset)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestAssignedEqualsPartitionsOwned: partitions revoked before they
// delivered a record are no longer counted as assigned.
func TestAssignedEqualsPartitionsOwned(t *testing.T) {
	h := newHarness(t, 4)
	group := kafkatest.Group(t)
	nop := func(context.Context, consumer.Event[OrderPlaced]) error { return nil }
	a := h.consumer(group)
	consumer.Handle(a, h.topic, nop)
	running(t, a)
	// The service's retry topics are assigned too: count all that a
	// single member owns, then check the two members split exactly that.
	eventually(t, 30*time.Second, "first member assigned", func() bool { return a.Stats().Assigned >= 4 })
	time.Sleep(500 * time.Millisecond)
	total := a.Stats().Assigned

	b := h.consumer(group)
	consumer.Handle(b, h.topic, nop)
	stopB := running(t, b)
	eventually(t, 30*time.Second, "partitions split between the members", func() bool {
		sa, sb := a.Stats().Assigned, b.Stats().Assigned
		return sb > 0 && sa+sb == total
	})
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "first member owns everything again", func() bool { return a.Stats().Assigned == total })
}

// TestRepeatedHeadersLastValueWins: a record read from a retry topic with
// two choreo-not-before headers is held by the last one, as every header
// is read; and a record whose last ce_id is empty has no id.
func TestRepeatedHeadersLastValueWins(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	ctx := context.Background()
	var handled atomic.Int64
	c := h.consumer(group, consumer.RetryTopics(time.Minute))
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		handled.Add(1)
		return nil
	})
	stop := running(t, c)
	eventually(t, 30*time.Second, "consumer ready", c.Ready)

	rec, _, err := h.prod.Record(ctx, group+".retry.1-1m", "k", order("retried", 1))
	if err != nil {
		t.Fatal(err)
	}
	add := func(k, v string) { rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	add(choreo.HeaderAttempt, "3")
	add(choreo.HeaderOriginalTopic, h.topic)
	add(choreo.HeaderOriginalPartition, "0")
	add(choreo.HeaderOriginalOffset, "0")
	add(choreo.HeaderNotBefore, time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano))
	add(choreo.HeaderNotBefore, time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano))
	cl := h.cluster.Client(t)
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the retry record handled by its last not-before", func() bool { return handled.Load() == 1 })

	// ce_id "x" then "": the last value is empty, so the id is missing.
	bad, _, err := h.prod.Record(ctx, h.topic, "k", order("no-id", 2))
	if err != nil {
		t.Fatal(err)
	}
	bad.Headers = append(bad.Headers, kgo.RecordHeader{Key: choreo.HeaderID, Value: nil})
	if err := cl.ProduceSync(ctx, bad).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the record without an id dead-lettered", func() bool { return c.Stats().DeadLettered == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	dls := h.readDeadLetters(t, group+".dlq", 1, 5*time.Second)
	if len(dls) != 1 || dls[0].Error.Kind != choreo.KindMissingHeader {
		t.Fatalf("dead letters %+v; want one of kind missing_header", dls)
	}
}

// TestHandlerTimeoutIsRetried: a handler that runs past its deadline once
// is retried, not dead-lettered.
func TestHandlerTimeoutIsRetried(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	h.publish(1, func(int) string { return "k" })
	var calls atomic.Int64
	c := h.consumer(group, consumer.HandlerTimeout(200*time.Millisecond), consumer.BlockingRetries(),
		consumer.Retry(consumer.RetryPolicy{MaxAttempts: 3, InitialInterval: 10 * time.Millisecond, MaxInterval: 20 * time.Millisecond, Multiplier: 2}))
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		if calls.Add(1) == 1 {
			<-ctx.Done() // a slow dependency
			return ctx.Err()
		}
		return nil
	})
	stop := running(t, c)
	eventually(t, 30*time.Second, "handled on the second attempt", func() bool { return c.Stats().Handled == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.DeadLettered != 0 || s.Retried != 1 || calls.Load() != 2 {
		t.Fatalf("stats %+v after %d calls; want 1 retry, 2 calls, no dead letter", s, calls.Load())
	}
}

// TestTimeoutWaitingForConcurrentHandlingIsNotDeadLettered: two records
// with one ce_id on two keys run concurrently; the second waits in the
// idempotency store past its deadline while the first finishes. The event
// was processed, so the second must end as a duplicate, not a dead letter.
func TestTimeoutWaitingForConcurrentHandlingIsNotDeadLettered(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	ctx := context.Background()
	cl := h.cluster.Client(t)
	first, _, err := h.prod.Record(ctx, h.topic, "a", order("same", 1))
	if err != nil {
		t.Fatal(err)
	}
	second := &kgo.Record{Topic: h.topic, Key: []byte("b"), Value: first.Value, Headers: first.Headers}
	if err := cl.ProduceSync(ctx, first, second).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	c := h.consumer(group, consumer.HandlerTimeout(300*time.Millisecond), consumer.BlockingRetries())
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		calls.Add(1)
		time.Sleep(600 * time.Millisecond) // slow, and done: ignores its deadline but succeeds
		return nil
	})
	stop := running(t, c)
	eventually(t, 30*time.Second, "both records done", func() bool {
		s := c.Stats()
		return s.Handled+s.Duplicates+s.DeadLettered == 2
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.DeadLettered != 0 || s.Handled != 1 || s.Duplicates != 1 || calls.Load() != 1 {
		t.Fatalf("stats %+v after %d handler calls; want 1 handled, 1 duplicate, none dead-lettered", s, calls.Load())
	}
}

// TestAbortedTransactionsNeverReachHandlers: the consumer reads committed
// records only.
func TestAbortedTransactionsNeverReachHandlers(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	ctx := context.Background()
	tx := h.cluster.Client(t, kgo.TransactionalID(kafkatest.Name(t, "tx")), kgo.DefaultProduceTopic(h.topic))
	produce := func(id string, commit bool) {
		t.Helper()
		rec, _, err := h.prod.Record(ctx, h.topic, id, order(id, 1))
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := tx.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := tx.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	produce("aborted-1", false)
	produce("committed-1", true)
	produce("aborted-2", false)
	produce("committed-2", true)

	var mu sync.Mutex
	var got []string
	c := h.consumer(group)
	consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		mu.Lock()
		got = append(got, ev.Data.OrderID)
		mu.Unlock()
		return nil
	})
	stop := running(t, c)
	eventually(t, 30*time.Second, "the committed records handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 2 })
	time.Sleep(500 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Strings(got) // different keys: handled in any order
	if fmt.Sprint(got) != "[committed-1 committed-2]" {
		t.Fatalf("handled %v; want only the committed records", got)
	}
}
