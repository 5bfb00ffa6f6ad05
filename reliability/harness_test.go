package reliability_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/idempotency"
	"github.com/choreokit/choreo/idempotency/pgstore"
	"github.com/choreokit/choreo/internal/testevents"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

// OrderPlaced is the event every fault test sends.
type OrderPlaced = testevents.OrderPlaced

// envChild names the role of a child process: the test binary started by
// a test as a service it can kill.
const envChild = "RELIABILITY_CHILD"

func TestMain(m *testing.M) {
	if role := os.Getenv(envChild); role != "" {
		if err := runChild(role); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if cliPath != "" {
		_ = os.RemoveAll(filepath.Dir(cliPath)) // the CLI built by the secured tests
	}
	if err := writeReport(os.Getenv("RELIABILITY_REPORT")); err != nil {
		fmt.Fprintln(os.Stderr, "reliability report:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// full reports whether the suite runs at full size (RELIABILITY_FULL set,
// as .ci/run does against real Kafka and PostgreSQL).
func full() bool { return os.Getenv("RELIABILITY_FULL") != "" }

// size picks the short or the full value.
func size[T any](short, long T) T {
	if full() {
		return long
	}
	return short
}

// order is the i-th test event, about order id.
func order(id string, i int) OrderPlaced {
	return OrderPlaced{OrderID: id, CustomerID: "c", AmountCents: int64(i), Currency: "EUR", Items: int32(i % 7),
		PlacedAt: time.UnixMilli(1_700_000_000_000 + int64(i)).UTC()}
}

// result is one fault's figures, a row of the report.
type result struct {
	Fault      string        // what was done
	Test       string        // the test that did it
	Events     int           // events sent and acknowledged
	Effects    int           // effect rows at the end
	Duplicates int           // effect rows beyond the first per event
	Lost       int           // events sent without an effect
	MaxWait    time.Duration // the longest an event waited from its publish to its effect
	Drain      time.Duration // from the end of the fault to the last event's effect
	Notes      string
	broker     string
	store      string
	passed     bool
}

var report struct {
	sync.Mutex
	rows []result
}

// record logs r and adds it to the report once t has finished (with
// whether it passed).
func record(t *testing.T, e *env, r result) {
	t.Helper()
	r.Test = t.Name()
	if e != nil {
		r.broker = e.brokerName
		if e.sink != nil {
			r.store = e.sink.name()
		}
	}
	if r.MaxWait == 0 && e != nil && e.sink != nil {
		r.MaxWait = e.sink.maxWait(t)
	}
	t.Logf("RESULT %s: events %d, effects %d, duplicates %d, lost %d, longest wait %v, drain %v; %s",
		r.Fault, r.Events, r.Effects, r.Duplicates, r.Lost, r.MaxWait.Round(time.Millisecond), r.Drain.Round(time.Millisecond), r.Notes)
	t.Cleanup(func() {
		r.passed = !t.Failed()
		report.Lock()
		report.rows = append(report.rows, r)
		report.Unlock()
	})
}

// writeReport writes the results as Markdown to path (nothing when path
// is empty).
func writeReport(path string) error {
	if path == "" {
		return nil
	}
	report.Lock()
	rows := append([]result(nil), report.rows...)
	report.Unlock()
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Test < rows[j].Test })
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "Reliability suite, %s run, %s, %s on %s (%d CPUs); brokers: %s; stores: %s\n\n",
		map[bool]string{true: "full", false: "short"}[full()], time.Now().UTC().Format(time.RFC3339), runtime.Version(), host, runtime.NumCPU(),
		strings.Join(uniq(rows, func(r result) string { return r.broker }), "; "), strings.Join(uniq(rows, func(r result) string { return r.store }), "; "))
	b.WriteString("| fault | test | events in | effects | duplicates | lost | longest wait | drain | result | notes |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		status := "pass"
		if !r.passed {
			status = "**FAIL**"
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %s | %s | %s | %s |\n", r.Fault, r.Test, r.Events, r.Effects, r.Duplicates, r.Lost,
			dur(r.MaxWait), dur(r.Drain), status, r.Notes)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// uniq returns the distinct non-empty values of field over rows.
func uniq(rows []result, field func(result) string) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range rows {
		if s := field(r); s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func dur(d time.Duration) string {
	if d <= 0 {
		return "—"
	}
	return d.Round(10 * time.Millisecond).String()
}

// env is a broker, a registry, a producer, a topic and an effects sink for
// one test.
type env struct {
	t          *testing.T
	cluster    *kafkatest.Cluster
	regURL     string
	reg        *schema.Registry
	conn       connection.Config
	prod       *producer.Producer
	topic      string
	sink       sink
	brokerName string
}

// newEnv sets up a test: the broker from kafkatest, the registry regURL
// (kafkatest's when empty), a topic with the given partitions and a sink
// (PostgreSQL when DATABASE_URL is set, else memory; needPG skips the test
// without it).
func newEnv(t *testing.T, partitions int32, needPG bool, regURL string, opts ...kafkatest.Option) *env {
	t.Helper()
	var s sink
	if needPG || os.Getenv("DATABASE_URL") != "" {
		s = newPGSink(t)
	} else {
		s = newMemSink()
	}
	c := kafkatest.New(t, opts...)
	if regURL == "" {
		regURL = kafkatest.SchemaRegistry(t)
	}
	e := &env{t: t, cluster: c, regURL: regURL, sink: s, conn: connection.Config{Brokers: c.Seeds()}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.brokerName = c.Describe(ctx)
	e.reg = newRegistry(t, regURL)
	p, err := producer.New(ctx, e.conn, e.reg, producer.Source("reliability"), producer.ClientOptions(kgo.ProducerLinger(5*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	e.prod = p
	e.topic = c.Topic(t, partitions)
	return e
}

func newRegistry(t *testing.T, url string) *schema.Registry {
	t.Helper()
	reg, err := schema.NewRegistry([]string{url})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// keyOf spreads events over 500 keys.
func keyOf(i int) string { return fmt.Sprintf("order-%d", i%500) }

// publish sends n events (numbered from first) and waits for every
// acknowledgement; it returns their ids.
func (e *env) publish(first, n int) []string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ids := make([]string, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range n {
		wg.Add(1)
		k := first + i
		e.prod.PublishAsync(ctx, e.topic, keyOf(k), order(keyOf(k), k), func(p producer.Published, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			ids[i] = p.Metadata.ID
		})
	}
	wg.Wait()
	if firstErr != nil {
		e.t.Fatalf("publish: %v", firstErr)
	}
	return ids
}

// stream publishes events in the background, batch by batch, until total
// have been sent; a publish that fails is counted, not fatal (a broker
// restart makes some fail).
type stream struct {
	mu     sync.Mutex
	acked  []string
	failed int
	errs   []string
	done   chan struct{}
}

// startStream sends total events from first on, batch at a time, pausing
// pause between batches.
func (e *env) startStream(first, total, batch int, pause time.Duration) *stream {
	s := &stream{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for sent := 0; sent < total; {
			n := min(batch, total-sent)
			var wg sync.WaitGroup
			for i := range n {
				k := first + sent + i
				wg.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				e.prod.PublishAsync(ctx, e.topic, keyOf(k), order(keyOf(k), k), func(p producer.Published, err error) {
					defer wg.Done()
					defer cancel()
					s.mu.Lock()
					defer s.mu.Unlock()
					if err != nil {
						s.failed++
						if len(s.errs) < 3 {
							s.errs = append(s.errs, err.Error())
						}
						return
					}
					s.acked = append(s.acked, p.Metadata.ID)
				})
			}
			wg.Wait()
			sent += n
			time.Sleep(pause)
		}
	}()
	return s
}

// wait waits for the stream to end and returns the acknowledged ids.
func (s *stream) wait() []string {
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.acked...)
}

func (s *stream) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked)
}

// tally compares the events sent with the effects found.
type tally struct {
	events, effects, duplicates, lost, unknown int
}

func count(sent []string, effects map[string]int) tally {
	tl := tally{events: len(sent)}
	want := make(map[string]bool, len(sent))
	for _, id := range sent {
		want[id] = true
		if effects[id] == 0 {
			tl.lost++
		}
	}
	for id, n := range effects {
		tl.effects += n
		if n > 1 {
			tl.duplicates += n - 1
		}
		if !want[id] {
			tl.unknown++
		}
	}
	return tl
}

// check fails t unless every event sent has exactly one effect.
func (tl tally) check(t *testing.T) {
	t.Helper()
	if tl.lost != 0 || tl.duplicates != 0 || tl.effects != tl.events || tl.unknown != 0 {
		t.Errorf("%d events sent: %d effects, %d duplicates, %d lost, %d effects of events not sent; want exactly one effect each",
			tl.events, tl.effects, tl.duplicates, tl.lost, tl.unknown)
	}
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEffects waits until every id in sent has an effect, and returns
// when the last one appeared (as seen by polling).
func (e *env) waitEffects(sent []string, within time.Duration) time.Time {
	e.t.Helper()
	var last time.Time
	eventually(e.t, within, fmt.Sprintf("effects of all %d events", len(sent)), func() bool {
		effects := e.sink.effects(e.t)
		for _, id := range sent {
			if effects[id] == 0 {
				return false
			}
		}
		last = time.Now()
		return true
	})
	return last
}

// running runs c until the returned stop is called (or the test ends);
// stop returns Run's error.
func running(t *testing.T, c *consumer.Consumer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(90 * time.Second):
				err = fmt.Errorf("run did not return within 90s of cancellation")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// sink is where handlers apply their effects: PostgreSQL rows written in
// the idempotency store's transaction (exactly once across processes), or
// a map beside the in-memory store (exactly once within one process).
type sink interface {
	name() string
	store() idempotency.Store
	apply(ctx context.Context, ev consumer.Event[OrderPlaced]) error
	effects(t *testing.T) map[string]int
	// maxWait is the longest time from an event's ce_time (its publish)
	// to its effect.
	maxWait(t *testing.T) time.Duration
}

type memSink struct {
	st   idempotency.Store
	mu   sync.Mutex
	m    map[string]int
	wait time.Duration
}

func newMemSink() *memSink { return &memSink{st: idempotency.NewMemory(), m: map[string]int{}} }

func (s *memSink) name() string             { return "in-memory idempotency store" }
func (s *memSink) store() idempotency.Store { return s.st }
func (s *memSink) apply(_ context.Context, ev consumer.Event[OrderPlaced]) error {
	s.mu.Lock()
	s.m[ev.ID]++
	s.wait = max(s.wait, time.Since(ev.Time))
	s.mu.Unlock()
	return nil
}

func (s *memSink) maxWait(*testing.T) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wait
}
func (s *memSink) effects(*testing.T) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.m))
	for k, v := range s.m {
		out[k] = v
	}
	return out
}

// pgSink writes one row per handled event into a table of its own, in the
// transaction of the pgstore mark.
type pgSink struct {
	url      string
	pool     *pgxpool.Pool
	st       *pgstore.Store
	table    string // effects
	marks    string // pgstore's table
	lastSeen map[string]int
}

// newPGSink needs DATABASE_URL; it skips the test without it.
func newPGSink(t *testing.T) *pgSink {
	t.Helper()
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		t.Skip("DATABASE_URL not set: this fault needs PostgreSQL for exactly-once effects (deploy/local/postgres.sh start prints one)")
	}
	ctx := context.Background()
	pool, err := newPool(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	suffix := fmt.Sprintf("%d_%d", os.Getpid(), rand.IntN(1_000_000_000))
	s := &pgSink{url: url, pool: pool, table: "rel_effects_" + suffix, marks: "rel_marks_" + suffix}
	if _, err := pool.Exec(ctx, "CREATE TABLE "+s.table+" (event_id text NOT NULL, order_id text NOT NULL, sent timestamptz NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = pool.Exec(ctx, "DROP TABLE IF EXISTS "+s.table+", "+s.marks)
	})
	st, err := pgstore.New(ctx, pool, pgstore.WithTable(s.marks))
	if err != nil {
		t.Fatal(err)
	}
	s.st = st
	return s
}

func newPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = 20
	return pgxpool.NewWithConfig(ctx, cfg)
}

func (s *pgSink) name() string             { return "PostgreSQL (pgstore)" }
func (s *pgSink) store() idempotency.Store { return s.st }
func (s *pgSink) apply(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
	return applyPG(ctx, s.table, ev)
}

// applyPG inserts the event's effect row in the store's transaction.
func applyPG(ctx context.Context, table string, ev consumer.Event[OrderPlaced]) error {
	tx, ok := pgstore.Tx(ctx)
	if !ok {
		return fmt.Errorf("no pgstore transaction in the handler context")
	}
	_, err := tx.Exec(ctx, "INSERT INTO "+table+" (event_id, order_id, sent) VALUES ($1, $2, $3)", ev.ID, ev.Data.OrderID, ev.Time)
	return err
}

// effects counts the rows per event id. While the database is away it
// returns what it saw last.
func (s *pgSink) effects(t *testing.T) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT event_id, count(*) FROM "+s.table+" GROUP BY event_id")
	if err != nil {
		t.Logf("counting effects: %v", err)
		return s.lastSeen
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		out[id] = n
	}
	if err := rows.Err(); err != nil {
		t.Logf("counting effects: %v", err)
		return s.lastSeen
	}
	s.lastSeen = out
	return out
}

// maxWait is the longest time from an event's publish to its effect row.
func (s *pgSink) maxWait(t *testing.T) time.Duration {
	t.Helper()
	var secs *float64
	if err := s.pool.QueryRow(context.Background(), "SELECT EXTRACT(EPOCH FROM max(at - sent))::float8 FROM "+s.table).Scan(&secs); err != nil {
		t.Fatal(err)
	}
	if secs == nil {
		return 0
	}
	return time.Duration(*secs * float64(time.Second))
}

// handler applies the sink's effect: the service every fault test runs.
func handler(s sink) consumer.Handler[OrderPlaced] {
	return func(ctx context.Context, ev consumer.Event[OrderPlaced]) error { return s.apply(ctx, ev) }
}

// newConsumer returns a consumer of e's topic in group with e's sink.
func (e *env) newConsumer(group string, opts ...consumer.Option) *consumer.Consumer {
	e.t.Helper()
	opts = append([]consumer.Option{consumer.Store(e.sink.store()), consumer.CommitInterval(200 * time.Millisecond),
		consumer.RevokeTimeout(8 * time.Second),
		// A killed member holds its partitions until its session times
		// out; a rebalance waits at most RebalanceTimeout for members.
		consumer.ClientOptions(kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(500*time.Millisecond), kgo.RebalanceTimeout(12*time.Second))}, opts...)
	c, err := consumer.New(e.conn, e.reg, group, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	consumer.Handle(c, e.topic, handler(e.sink))
	return c
}
