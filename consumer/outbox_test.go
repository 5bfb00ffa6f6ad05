package consumer_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/idempotency/pgstore"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

// pgstore's outbox is a producer.OutboxWriter.
var _ producer.OutboxWriter = (*pgstore.Outbox)(nil)

// childOutboxRole is the child role of TestOutboxExactlyOnceAcrossSIGKILL.
const childOutboxRole = "outbox"

// childOutbox runs a payment service in the child process: for each order
// it writes an effect row and publishes a PaymentRequested through the
// outbox, all in the transaction of the order's idempotency mark. Every
// tenth order fails its first attempt after publishing, and that attempt
// also publishes a "phantom" event that its rollback must discard. With
// CHILD_RELAY_DELAY set, the child also runs the relay, started that many
// milliseconds late.
func childOutbox() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	pool, err := newPool(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return err
	}
	defer pool.Close()
	store, err := pgstore.New(ctx, pool, pgstore.WithTable(os.Getenv("CHILD_MARKS")))
	if err != nil {
		return err
	}
	outbox, err := pgstore.NewOutbox(ctx, pool, pgstore.OutboxTable(os.Getenv("CHILD_OUTBOX")),
		pgstore.RelayBatch(50, 1<<20), pgstore.RelayInterval(20*time.Millisecond))
	if err != nil {
		return err
	}
	reg, err := schema.NewRegistry([]string{os.Getenv("CHILD_REGISTRY")})
	if err != nil {
		return err
	}
	conn := connection.Config{Brokers: strings.Split(os.Getenv("CHILD_BROKERS"), ",")}
	prod, err := producer.New(ctx, conn, reg, producer.Source("payment"), producer.Outbox(outbox))
	if err != nil {
		return err
	}
	defer func() { _ = prod.Close(context.Background()) }()
	c, err := consumer.New(conn, reg, os.Getenv("CHILD_GROUP"), consumer.Store(store), consumer.Concurrency(8),
		consumer.CommitInterval(50*time.Millisecond), consumer.BlockingRetries(),
		consumer.Retry(consumer.RetryPolicy{MaxAttempts: 5, InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond, Multiplier: 2}),
		consumer.ClientOptions(kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(500*time.Millisecond)))
	if err != nil {
		return err
	}
	effects, downstream := os.Getenv("CHILD_EFFECTS"), os.Getenv("CHILD_DOWNSTREAM")
	consumer.Handle(c, os.Getenv("CHILD_TOPIC"), func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		if err := applyEffect(ctx, effects, ev); err != nil {
			return err
		}
		p, err := prod.Publish(ctx, downstream, ev.Data.OrderID, PaymentRequested{OrderID: ev.Data.OrderID, AmountCents: ev.Data.AmountCents})
		if err != nil {
			return err
		}
		if !p.Queued {
			return choreo.Permanent(errors.New("publish in a pgstore transaction was not queued in the outbox"))
		}
		if ev.Data.AmountCents%10 == 0 && ev.Attempt == 1 {
			if _, err := prod.Publish(ctx, downstream, ev.Data.OrderID, PaymentRequested{OrderID: "phantom-" + ev.Data.OrderID}); err != nil {
				return err
			}
			return errors.New("payment gateway busy") // rolls back the effect, the mark and both events
		}
		return nil
	})
	if d := os.Getenv("CHILD_RELAY_DELAY"); d != "" {
		ms, err := strconv.Atoi(d)
		if err != nil {
			return err
		}
		cl, err := kgo.NewClient(kgo.SeedBrokers(conn.Brokers...))
		if err != nil {
			return err
		}
		defer cl.Close()
		go func() {
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
			case <-ctx.Done():
				return
			}
			_ = outbox.Relay(ctx, cl)
		}()
	}
	fmt.Println("child: running")
	return c.Run(ctx)
}

// TestOutboxExactlyOnceAcrossSIGKILL: a payment service consumes orders
// with pgstore and publishes downstream through the outbox; it is killed
// with SIGKILL three times, with the relay not started yet or running, and
// restarted. After a last relay drains the outbox, the downstream topic
// holds every payment (one per order, under the id derived from it, none
// from a rolled-back attempt), and a downstream consumer handles each once
// however many copies the relay sent.
func TestOutboxExactlyOnceAcrossSIGKILL(t *testing.T) {
	pg := newPG(t)
	outboxTable := "outbox_" + strings.TrimPrefix(pg.marks, "marks_")
	t.Cleanup(func() { _, _ = pg.pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+outboxTable) })
	h := newHarness(t, 4)
	downstream := h.cluster.Topic(t, 4)
	const n = 2000
	pubs := h.publish(n, func(i int) string { return fmt.Sprintf("order-%d", i%200) })
	group := kafkatest.Group(t)

	marks := func() int {
		var k int
		if err := pg.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pg.marks).Scan(&k); err != nil {
			return 0 // the child has not created the table yet
		}
		return k
	}
	start := func(relayDelay string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envChild+"="+childOutboxRole,
			"CHILD_BROKERS="+strings.Join(h.cluster.Seeds(), ","), "CHILD_REGISTRY="+h.regURL,
			"CHILD_TOPIC="+h.topic, "CHILD_DOWNSTREAM="+downstream, "CHILD_GROUP="+group,
			"CHILD_EFFECTS="+pg.effects, "CHILD_MARKS="+pg.marks, "CHILD_OUTBOX="+outboxTable)
		if relayDelay != "" {
			cmd.Env = append(cmd.Env, "CHILD_RELAY_DELAY="+relayDelay)
		}
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
			}
		}()
		return cmd
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	for kill := range 3 {
		relay := "" // the first run commits to the outbox and dies before any relay starts
		if kill > 0 {
			relay = strconv.Itoa(rng.IntN(300))
		}
		cmd := start(relay)
		before := marks()
		target := before + 150 + rng.IntN(300)
		if target >= n {
			target = before + (n-before)/2
		}
		eventually(t, 60*time.Second, fmt.Sprintf("%d orders handled", target), func() bool { return marks() >= target })
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		t.Logf("kill %d (relay delay %q ms) at %d orders handled", kill+1, relay, marks())
	}
	cmd := start("") // no relay: the last one runs in the test
	eventually(t, 60*time.Second, "all orders handled", func() bool { return marks() >= n })
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("child after SIGTERM: %v", err)
	}
	if rows, distinct := pg.counts(t); rows != n || distinct != n {
		t.Fatalf("effects: %d rows, %d distinct events; want exactly %d of each", rows, distinct, n)
	}

	// A last relay drains what the child left.
	ob, err := pgstore.NewOutbox(context.Background(), pg.pool, pgstore.OutboxTable(outboxTable))
	if err != nil {
		t.Fatal(err)
	}
	left, err := ob.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopRelay := context.WithCancel(context.Background())
	relayDone := make(chan error, 1)
	go func() { relayDone <- ob.Relay(rctx, h.cluster.Client(t)) }()
	eventually(t, 30*time.Second, "the outbox drained", func() bool { k, err := ob.Pending(context.Background()); return err == nil && k == 0 })
	stopRelay()
	if err := <-relayDone; err != nil {
		t.Fatalf("Relay: %v", err)
	}

	ends, err := h.cluster.Admin().ListEndOffsets(context.Background(), downstream)
	if err != nil {
		t.Fatal(err)
	}
	var records int64
	ends.Each(func(o kadm.ListedOffset) { records += o.Offset })

	// Downstream: a consumer with the memory store.
	d := h.consumer(kafkatest.Group(t))
	var mu sync.Mutex
	calls := map[string]int{}
	byCause := map[string]string{}
	var phantoms int
	consumer.Handle(d, downstream, func(ctx context.Context, ev consumer.Event[PaymentRequested]) error {
		mu.Lock()
		defer mu.Unlock()
		calls[ev.ID]++
		byCause[ev.CausationID] = ev.ID
		if strings.HasPrefix(ev.Data.OrderID, "phantom-") {
			phantoms++
		}
		return nil
	})
	stop := running(t, d)
	eventually(t, 60*time.Second, fmt.Sprintf("all %d downstream records done", records), func() bool {
		s := d.Stats()
		return s.Handled+s.Duplicates >= records
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s := d.Stats()
	t.Logf("%d records left for the last relay; downstream: %d records, %d handled, %d duplicates skipped", left, records, s.Handled, s.Duplicates)
	if phantoms > 0 {
		t.Errorf("%d events of rolled-back attempts reached the downstream topic; want none", phantoms)
	}
	if s.Handled != n || len(calls) != n {
		t.Fatalf("downstream handled %d events (%d distinct ids); want %d", s.Handled, len(calls), n)
	}
	typ := PaymentRequested{}.AvroSchema().FullName()
	for _, p := range pubs {
		id, ok := byCause[p.Metadata.ID]
		if !ok {
			t.Fatalf("no payment for order event %s", p.Metadata.ID)
		}
		if want := choreo.DerivedID(p.Metadata.ID, group, typ, 0); id != want {
			t.Fatalf("payment for order event %s has id %s; want %s", p.Metadata.ID, id, want)
		}
		if calls[id] != 1 {
			t.Fatalf("payment %s handled %d times; want 1", id, calls[id])
		}
	}
}
