package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/kafkatest"
)

// newOutbox returns an outbox on a table of its own, dropped when the test
// ends.
func newOutbox(t *testing.T, pool *pgxpool.Pool, opts ...OutboxOption) *Outbox {
	t.Helper()
	table := fmt.Sprintf("outbox_test_%016x", rand.Uint64())
	t.Cleanup(func() {
		if _, err := pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table); err != nil {
			t.Errorf("dropping %s: %v", table, err)
		}
	})
	o, err := NewOutbox(context.Background(), pool, append([]OutboxOption{OutboxTable(table)}, opts...)...)
	if err != nil {
		t.Fatalf("NewOutbox: %v", err)
	}
	return o
}

// outboxRecord is a record as a producer builds it, with ce_id id.
func outboxRecord(topic, key, id string, n int) *kgo.Record {
	r := &kgo.Record{Topic: topic, Value: []byte(fmt.Sprintf("value-%d", n)), Headers: []kgo.RecordHeader{
		{Key: choreo.HeaderID, Value: []byte(id)},
		{Key: choreo.HeaderType, Value: []byte("choreo.test.PaymentRequested")},
		{Key: "empty", Value: []byte{}},
		{Key: choreo.HeaderTraceParent, Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")},
	}}
	if key != "" {
		r.Key = []byte(key)
	}
	return r
}

// enqueueIn runs one handling of event id that enqueues recs and then
// returns fail.
func enqueueIn(t *testing.T, s *Store, o *Outbox, id string, fail error, recs ...*kgo.Record) {
	t.Helper()
	_, err := s.Process(context.Background(), "svc", id, func(ctx context.Context) error {
		for _, r := range recs {
			queued, err := o.Enqueue(ctx, r)
			if err != nil || !queued {
				return fmt.Errorf("Enqueue = %v, %v; want true, nil", queued, err)
			}
		}
		return fail
	})
	if !errors.Is(err, fail) {
		t.Fatalf("Process: %v; want %v", err, fail)
	}
}

func pending(t *testing.T, o *Outbox) int64 {
	t.Helper()
	n, err := o.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// readTopic reads n records of topic from the start, and fails the test if
// more arrive within a short while.
func readTopic(t *testing.T, c *kafkatest.Cluster, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n && ctx.Err() == nil {
		out = append(out, cl.PollFetches(ctx).Records()...)
	}
	if len(out) != n {
		t.Fatalf("read %d records from %s; want %d", len(out), topic, n)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if more := cl.PollFetches(ctx).Records(); len(more) > 0 {
		t.Fatalf("read %d records more than the %d expected from %s", len(more), n, topic)
	}
	return out
}

func sameRecord(got, want *kgo.Record) error {
	if got.Topic != want.Topic || !bytes.Equal(got.Key, want.Key) || (got.Key == nil) != (want.Key == nil) || !bytes.Equal(got.Value, want.Value) {
		return fmt.Errorf("record %s/%q/%q; want %s/%q/%q", got.Topic, got.Key, got.Value, want.Topic, want.Key, want.Value)
	}
	if len(got.Headers) != len(want.Headers) {
		return fmt.Errorf("%d headers; want %d", len(got.Headers), len(want.Headers))
	}
	for i, h := range got.Headers {
		if h.Key != want.Headers[i].Key || !bytes.Equal(h.Value, want.Headers[i].Value) {
			return fmt.Errorf("header %d is %s=%q; want %s=%q", i, h.Key, h.Value, want.Headers[i].Key, want.Headers[i].Value)
		}
	}
	return nil
}

// relaying runs o.Relay until the test ends or stop is called.
func relaying(t *testing.T, o *Outbox, cl *kgo.Client) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Relay(ctx, cl) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = errors.New("Relay did not return within 30s of cancellation")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func waitEmpty(t *testing.T, o *Outbox) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for pending(t, o) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d records after 30s", pending(t, o))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOutboxEnqueueOutsideProcessIsNotQueued(t *testing.T) {
	o := &Outbox{table: "unused"} // Enqueue must not touch the database here
	queued, err := o.Enqueue(context.Background(), outboxRecord("t", "k", "id", 0))
	if queued || err != nil {
		t.Fatalf("Enqueue outside a handler = %v, %v; want false, nil", queued, err)
	}
}

func TestOutboxCommitsAndRollsBackWithTheHandler(t *testing.T) {
	pool := testPool(t)
	s, _ := newStore(t, pool)
	o := newOutbox(t, pool)

	enqueueIn(t, s, o, "e1", nil, outboxRecord("t", "k", "a", 0), outboxRecord("t", "k", "b", 1))
	if n := pending(t, o); n != 2 {
		t.Fatalf("after a successful handling: %d pending; want 2", n)
	}
	failure := errors.New("handler failed")
	enqueueIn(t, s, o, "e2", failure, outboxRecord("t", "k", "c", 2))
	if n := pending(t, o); n != 2 {
		t.Fatalf("after a failed handling: %d pending; want still 2 (its record rolled back)", n)
	}
	// Invisible until the commit: another session sees nothing meanwhile.
	_, err := s.Process(context.Background(), "svc", "e3", func(ctx context.Context) error {
		if _, err := o.Enqueue(ctx, outboxRecord("t", "k", "d", 3)); err != nil {
			return err
		}
		if n := pending(t, o); n != 2 {
			return fmt.Errorf("%d pending before the commit; want 2", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A duplicate runs no handler and queues nothing.
	dup, err := s.Process(context.Background(), "svc", "e1", func(ctx context.Context) error {
		t.Error("handler ran for a duplicate")
		return nil
	})
	if !dup || err != nil {
		t.Fatalf("Process of a processed event = %v, %v; want a duplicate", dup, err)
	}
	// Concurrent publishes from one handler take turns on its transaction.
	_, err = s.Process(context.Background(), "svc", "e4", func(ctx context.Context) error {
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := range 16 {
			wg.Go(func() {
				if _, err := o.Enqueue(ctx, outboxRecord("t", "k", fmt.Sprint("conc-", i), i)); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		return <-errs
	})
	if err != nil {
		t.Fatalf("concurrent Enqueue: %v", err)
	}
	if n := pending(t, o); n != 3+16 {
		t.Fatalf("%d pending; want %d", n, 3+16)
	}
	var ids []string
	rows, err := pool.Query(context.Background(), "SELECT event_id FROM "+o.Table()+" ORDER BY id LIMIT 3")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if fmt.Sprint(ids) != "[a b d]" {
		t.Errorf("event_id column %v; want [a b d]", ids)
	}
}

func TestOutboxRelaySendsInOrderAndDeletes(t *testing.T) {
	pool := testPool(t)
	s, _ := newStore(t, pool)
	o := newOutbox(t, pool, RelayBatch(7, 1<<20), RelayInterval(10*time.Millisecond))
	c := kafkatest.New(t)
	topic := c.Topic(t, 1)

	var want []*kgo.Record
	for e := range 20 {
		var recs []*kgo.Record
		for i := range 3 {
			key := fmt.Sprintf("k%d", (e+i)%4)
			if i == 2 {
				key = "" // no key
			}
			recs = append(recs, outboxRecord(topic, key, fmt.Sprintf("id-%d-%d", e, i), e*3+i))
		}
		enqueueIn(t, s, o, fmt.Sprint("event-", e), nil, recs...)
		want = append(want, recs...)
	}
	stop := relaying(t, o, c.Client(t))
	waitEmpty(t, o)
	got := readTopic(t, c, topic, len(want))
	if err := stop(); err != nil {
		t.Fatalf("Relay: %v", err)
	}
	for i := range want {
		if err := sameRecord(got[i], want[i]); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
}

func TestOutboxRelayResendsAfterCrashBeforeDelete(t *testing.T) {
	pool := testPool(t)
	s, _ := newStore(t, pool)
	o := newOutbox(t, pool)
	c := kafkatest.New(t)
	topic := c.Topic(t, 1)
	cl := c.Client(t)
	recs := []*kgo.Record{outboxRecord(topic, "k", "id-0", 0), outboxRecord(topic, "k", "id-1", 1)}
	enqueueIn(t, s, o, "e", nil, recs...)

	// The broker acknowledges the batch, then the relay "dies".
	o.afterProduce = func() error { return errors.New("killed") }
	if _, _, err := o.relayOnce(context.Background(), cl); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("relayOnce with a crash after produce: %v; want the crash", err)
	}
	if n := pending(t, o); n != 2 {
		t.Fatalf("after the crash: %d pending; want 2 (not deleted)", n)
	}
	o.afterProduce = nil
	if sent, _, err := o.relayOnce(context.Background(), cl); sent != 2 || err != nil {
		t.Fatalf("relayOnce after the crash = %d, %v; want 2, nil", sent, err)
	}
	if n := pending(t, o); n != 0 {
		t.Fatalf("%d pending; want 0", n)
	}
	got := readTopic(t, c, topic, 4)
	for i, r := range got {
		if err := sameRecord(r, recs[i%2]); err != nil {
			t.Errorf("record %d: %v (want each record twice, same ce_id)", i, err)
		}
	}
}

// TestOutboxRelaysTakeTurns runs three relays on one table: every record is
// sent once, in the order written.
func TestOutboxRelaysTakeTurns(t *testing.T) {
	pool := testPool(t)
	s, _ := newStore(t, pool)
	o := newOutbox(t, pool, RelayBatch(25, 1<<20), RelayInterval(5*time.Millisecond))
	c := kafkatest.New(t)
	topic := c.Topic(t, 1)

	const events, perEvent = 200, 5
	var stops []func() error
	for range 3 {
		other, err := NewOutbox(context.Background(), pool, OutboxTable(o.Table()), RelayBatch(25, 1<<20), RelayInterval(5*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		stops = append(stops, relaying(t, other, c.Client(t)))
	}
	var want []string
	for e := range events { // written while the relays run
		var recs []*kgo.Record
		for i := range perEvent {
			id := fmt.Sprintf("id-%03d-%d", e, i)
			recs = append(recs, outboxRecord(topic, "k", id, e*perEvent+i))
			want = append(want, id)
		}
		enqueueIn(t, s, o, fmt.Sprint("event-", e), nil, recs...)
	}
	waitEmpty(t, o)
	got := readTopic(t, c, topic, len(want))
	for _, stop := range stops {
		if err := stop(); err != nil {
			t.Fatalf("Relay: %v", err)
		}
	}
	for i, r := range got {
		var id string
		for _, h := range r.Headers {
			if h.Key == choreo.HeaderID {
				id = string(h.Value)
			}
		}
		if id != want[i] {
			t.Fatalf("record %d has ce_id %s; want %s (out of order, or sent twice)", i, id, want[i])
		}
	}
}

func TestOutboxRelayBatchBytes(t *testing.T) {
	pool := testPool(t)
	s, _ := newStore(t, pool)
	o := newOutbox(t, pool, RelayBatch(100, 40))
	c := kafkatest.New(t)
	topic := c.Topic(t, 1)
	cl := c.Client(t)
	var recs []*kgo.Record
	for i := range 5 {
		recs = append(recs, outboxRecord(topic, "key", fmt.Sprint("id-", i), i)) // 3 + 7 bytes each
	}
	big := outboxRecord(topic, "key", "big", 0)
	big.Value = bytes.Repeat([]byte("x"), 100) // over the bound on its own
	recs = append(recs, big)
	enqueueIn(t, s, o, "e", nil, recs...)
	var sizes []int
	for pending(t, o) > 0 {
		sent, _, err := o.relayOnce(context.Background(), cl)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, sent)
	}
	if fmt.Sprint(sizes) != "[4 1 1]" {
		t.Errorf("batches of %v records; want [4 1 1] (40 bytes: four of 10 bytes, then one, then the big one alone)", sizes)
	}
}

func TestOutboxRelayRefusesUnsafeClients(t *testing.T) {
	o := &Outbox{table: "unused"}
	for name, opts := range map[string][]kgo.Opt{
		"leader acks":    {kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite()},
		"not idempotent": {kgo.DisableIdempotentWrite()},
		"transactional":  {kgo.TransactionalID("x")},
	} {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		err = o.Relay(context.Background(), cl)
		cl.Close()
		if err == nil {
			t.Errorf("%s: Relay accepted the client", name)
		}
	}
	if err := o.Relay(context.Background(), nil); err == nil {
		t.Error("Relay accepted a nil client")
	}
}

func TestOutboxInvalidConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []OutboxOption
		want string
	}{
		{"rows", []OutboxOption{RelayBatch(0, 1)}, "RelayBatch"},
		{"bytes", []OutboxOption{RelayBatch(1, -1)}, "RelayBatch"},
		{"interval", []OutboxOption{RelayInterval(0)}, "RelayInterval"},
		{"timeout", []OutboxOption{RelayTimeout(-time.Second)}, "RelayTimeout"},
		{"table", []OutboxOption{OutboxTable("Bad-Name")}, "invalid table name"},
		{"long table", []OutboxOption{OutboxTable(strings.Repeat("a", maxOutboxTableName+1))}, "invalid table name"},
		{"nil pool", nil, "pool is nil"},
	} {
		o, err := NewOutbox(context.Background(), nil, tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || o != nil {
			t.Errorf("%s: NewOutbox = %v, %v; want an error containing %q", tc.name, o, err, tc.want)
		}
	}
}
