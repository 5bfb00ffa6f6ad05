package consumer_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/idempotency"
	"github.com/choreokit/choreo/idempotency/pgstore"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/schema"
)

const envChild = "CHOREO_CONSUMER_TEST_CHILD"

// TestMain lets a test run a consumer in a child process (the test binary
// itself) so that it can be killed with SIGKILL.
func TestMain(m *testing.M) {
	if role := os.Getenv(envChild); role != "" {
		run := childConsumer
		if role != "1" {
			run = func() error { return childService(role) }
		}
		if role == childOutboxRole {
			run = childOutbox
		}
		if err := run(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childConsumer runs a consumer that applies each order as a row in the
// effects table, in the same transaction as its idempotency mark.
func childConsumer() error {
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
	reg, err := schema.NewRegistry([]string{os.Getenv("CHILD_REGISTRY")})
	if err != nil {
		return err
	}
	c, err := consumer.New(connection.Config{Brokers: strings.Split(os.Getenv("CHILD_BROKERS"), ",")}, reg,
		os.Getenv("CHILD_GROUP"), consumer.Store(store), consumer.Concurrency(8), consumer.CommitInterval(50*time.Millisecond),
		// A killed member holds its partitions until its session times out.
		consumer.ClientOptions(kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(500*time.Millisecond)))
	if err != nil {
		return err
	}
	effects := os.Getenv("CHILD_EFFECTS")
	consumer.Handle(c, os.Getenv("CHILD_TOPIC"), func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		return applyEffect(ctx, effects, ev)
	})
	fmt.Println("child: running")
	return c.Run(ctx)
}

// applyEffect writes the event's effect in the idempotency transaction.
func applyEffect(ctx context.Context, table string, ev consumer.Event[OrderPlaced]) error {
	tx, ok := pgstore.Tx(ctx)
	if !ok {
		return fmt.Errorf("no transaction in the handler context")
	}
	_, err := tx.Exec(ctx, "INSERT INTO "+table+" (event_id, order_id, amount) VALUES ($1, $2, $3)",
		ev.ID, ev.Data.OrderID, ev.Data.AmountCents)
	return err
}

func newPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = 10
	return pgxpool.NewWithConfig(ctx, cfg)
}

// pgHarness is a PostgreSQL database with an effects table for one test.
type pgHarness struct {
	pool    *pgxpool.Pool
	effects string
	marks   string
}

func newPG(t *testing.T) *pgHarness {
	t.Helper()
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		t.Skip("DATABASE_URL not set: skipping the PostgreSQL exactly-once test (deploy/local/postgres.sh start prints one)")
	}
	ctx := context.Background()
	pool, err := newPool(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	suffix := fmt.Sprintf("%d_%d", os.Getpid(), rand.IntN(1_000_000))
	h := &pgHarness{pool: pool, effects: "effects_" + suffix, marks: "marks_" + suffix}
	if _, err := pool.Exec(ctx, "CREATE TABLE "+h.effects+" (event_id text NOT NULL, order_id text NOT NULL, amount bigint NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+h.effects+", "+h.marks)
	})
	return h
}

// counts returns the number of effect rows and of distinct event ids.
func (pg *pgHarness) counts(t *testing.T) (rows, distinct int) {
	t.Helper()
	err := pg.pool.QueryRow(context.Background(), "SELECT count(*), count(DISTINCT event_id) FROM "+pg.effects).Scan(&rows, &distinct)
	if err != nil {
		t.Fatal(err)
	}
	return rows, distinct
}

func (pg *pgHarness) ids(t *testing.T) map[string]int {
	t.Helper()
	rs, err := pg.pool.Query(context.Background(), "SELECT event_id, count(*) FROM "+pg.effects+" GROUP BY event_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	out := map[string]int{}
	for rs.Next() {
		var id string
		var n int
		if err := rs.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		out[id] = n
	}
	return out
}

// TestExactlyOnceEffectsAcrossSIGKILL publishes 10,000 events and kills the
// consumer process three times at random moments. PostgreSQL must end with
// every effect exactly once.
func TestExactlyOnceEffectsAcrossSIGKILL(t *testing.T) {
	pg := newPG(t)
	h := newHarness(t, 4)
	const n = 10_000
	pubs := h.publish(n, func(i int) string { return fmt.Sprintf("order-%d", i%250) })
	group := kafkatest.Group(t)

	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envChild+"=1",
			"CHILD_BROKERS="+strings.Join(h.cluster.Seeds(), ","), "CHILD_REGISTRY="+h.regURL,
			"CHILD_TOPIC="+h.topic, "CHILD_GROUP="+group, "CHILD_EFFECTS="+pg.effects, "CHILD_MARKS="+pg.marks)
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
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	kills := 0
	for kills < 3 {
		cmd := start()
		// Kill once it has applied some more effects, at a random point.
		before, _ := pg.counts(t)
		target := before + 300 + rng.IntN(2000)
		if target >= n {
			target = before + (n-before)/2
		}
		eventually(t, 120*time.Second, fmt.Sprintf("%d effects", target), func() bool {
			rows, _ := pg.counts(t)
			return rows >= target
		})
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		kills++
		rows, _ := pg.counts(t)
		t.Logf("kill %d at %d effects", kills, rows)
	}
	cmd := start()
	eventually(t, 180*time.Second, "all effects", func() bool {
		rows, _ := pg.counts(t)
		return rows >= n
	})
	time.Sleep(300 * time.Millisecond) // room for any duplicate to show
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("child after SIGTERM: %v", err)
	}

	rows, distinct := pg.counts(t)
	if rows != n || distinct != n {
		t.Fatalf("effects: %d rows, %d distinct events; want exactly %d of each", rows, distinct, n)
	}
	ids := pg.ids(t)
	for _, p := range pubs {
		if ids[p.Metadata.ID] != 1 {
			t.Fatalf("event %s applied %d times; want 1", p.Metadata.ID, ids[p.Metadata.ID])
		}
	}
}

// TestRebalanceMembersJoinAndLeave runs three members that join and leave
// while events flow. Nothing may be lost; with the PostgreSQL store nothing
// may be applied twice.
func TestRebalanceMembersJoinAndLeave(t *testing.T) {
	h := newHarness(t, 6)
	const n = 6000
	pubs := h.publish(n, func(i int) string { return fmt.Sprintf("order-%d", i%300) })
	group := kafkatest.Group(t)

	var pg *pgHarness
	var shared idempotency.Store
	if os.Getenv("DATABASE_URL") != "" {
		pg = newPG(t)
		s, err := pgstore.New(context.Background(), pg.pool, pgstore.WithTable(pg.marks))
		if err != nil {
			t.Fatal(err)
		}
		shared = s
	} else {
		t.Log("DATABASE_URL not set: checking no loss only (each member has its own in-memory store)")
	}

	var mu sync.Mutex
	handled := map[string]int{}
	total := 0
	member := func() func() error {
		opts := []consumer.Option{consumer.Concurrency(6)}
		if shared != nil {
			opts = append(opts, consumer.Store(shared))
		}
		c := h.consumer(group, opts...)
		consumer.Handle(c, h.topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
			if pg != nil {
				if err := applyEffect(ctx, pg.effects, ev); err != nil {
					return err
				}
			}
			time.Sleep(200 * time.Microsecond)
			mu.Lock()
			handled[ev.ID]++
			total++
			mu.Unlock()
			return nil
		})
		return running(t, c)
	}
	progress := func(k int) {
		eventually(t, 120*time.Second, fmt.Sprintf("%d handled", k), func() bool { mu.Lock(); defer mu.Unlock(); return total >= k })
	}
	stopA := member()
	progress(1000)
	stopB := member()
	progress(2200)
	stopC := member()
	progress(3200)
	if err := stopA(); err != nil {
		t.Fatalf("member A: %v", err)
	}
	progress(4200)
	if err := stopB(); err != nil {
		t.Fatalf("member B: %v", err)
	}
	eventually(t, 120*time.Second, "every event handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == n
	})
	if err := stopC(); err != nil {
		t.Fatalf("member C: %v", err)
	}
	for _, p := range pubs {
		if handled[p.Metadata.ID] == 0 {
			t.Fatalf("event %s lost", p.Metadata.ID)
		}
	}
	if pg != nil {
		rows, distinct := pg.counts(t)
		if rows != n || distinct != n {
			t.Fatalf("effects: %d rows, %d distinct; want exactly %d", rows, distinct, n)
		}
	}
	redelivered := 0
	for _, c := range handled {
		redelivered += c - 1
	}
	t.Logf("handler calls beyond the first per event: %d", redelivered)
}
