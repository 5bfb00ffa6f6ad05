package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/choreokit/choreo/idempotency"
)

// testPool connects to the database named by DATABASE_URL, or skips the test.
func testPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		t.Skip("DATABASE_URL not set: skipping PostgreSQL store tests (deploy/local/postgres.sh start prints one)")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("parsing DATABASE_URL: %v", err)
	}
	cfg.MaxConns = 32 // room for the concurrency tests' blocked transactions
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connecting to DATABASE_URL: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := pool.Ping(context.Background()); err != nil {
		t.Fatalf("connecting to DATABASE_URL: %v", err)
	}
	return pool
}

// uniqueName returns a fresh table name, and drops the table (and its
// companion effects table) when the test ends.
func uniqueName(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	name := fmt.Sprintf("idem_test_%016x", rand.Uint64())
	t.Cleanup(func() {
		ctx := context.Background()
		for _, table := range []string{name, name + "_effects"} {
			if _, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
				t.Errorf("dropping %s: %v", table, err)
			}
		}
	})
	return name
}

// newStore returns a store on a table of its own, and that table's name.
func newStore(t *testing.T, pool *pgxpool.Pool, opts ...Option) (*Store, string) {
	t.Helper()
	table := uniqueName(t, pool)
	s, err := New(context.Background(), pool, append([]Option{WithTable(table)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	return s, table
}

func count(t *testing.T, pool *pgxpool.Pool, query string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func marks(t *testing.T, pool *pgxpool.Pool, table string) int {
	t.Helper()
	return count(t, pool, "SELECT count(*) FROM "+table)
}

// effectsTable creates a table the handlers write their effects to.
func effectsTable(t *testing.T, pool *pgxpool.Pool, table string) string {
	t.Helper()
	effects := table + "_effects"
	if _, err := pool.Exec(context.Background(), "CREATE TABLE "+effects+" (event_id text NOT NULL, note text)"); err != nil {
		t.Fatalf("creating %s: %v", effects, err)
	}
	return effects
}

// writeEffect inserts a row into effects through the handler's transaction.
func writeEffect(ctx context.Context, effects, id string) error {
	tx, ok := Tx(ctx)
	if !ok {
		return errors.New("no transaction in the handler's context")
	}
	_, err := tx.Exec(ctx, "INSERT INTO "+effects+" (event_id) VALUES ($1)", id)
	return err
}

func TestProcessDuplicate(t *testing.T) {
	pool := testPool(t)
	s, table := newStore(t, pool)
	ctx := context.Background()

	run := func(scope, id string, wantDup bool) {
		t.Helper()
		ran := false
		dup, err := s.Process(ctx, scope, id, func(context.Context) error {
			ran = true
			return nil
		})
		if err != nil || dup != wantDup || ran == wantDup {
			t.Fatalf("Process(%q, %q) = (%t, %v), ran %t; want (%t, nil), ran %t", scope, id, dup, err, ran, wantDup, !wantDup)
		}
	}
	run("billing", "e1", false)
	run("billing", "e1", true)
	run("shipping", "e1", false) // scopes are independent
	run("billing", "e2", false)
	run("billing", "e2", true)

	if got := marks(t, pool, table); got != 3 {
		t.Errorf("%s holds %d marks; want 3", table, got)
	}
	if got := count(t, pool, "SELECT count(*) FROM "+table+" WHERE processed_at > now() - interval '1 minute'"); got != 3 {
		t.Errorf("%d marks have a recent processed_at; want 3", got)
	}
	if got := pool.Stat().AcquiredConns(); got != 0 {
		t.Errorf("%d connections still acquired; want 0", got)
	}
}

func TestEmptyID(t *testing.T) {
	pool := testPool(t)
	s, table := newStore(t, pool)
	dup, err := s.Process(context.Background(), "g", "", func(context.Context) error { return nil })
	if !errors.Is(err, idempotency.ErrEmptyID) || dup {
		t.Errorf("Process with an empty id = (%t, %v); want (false, ErrEmptyID)", dup, err)
	}
	if got := marks(t, pool, table); got != 0 {
		t.Errorf("%s holds %d marks; want 0", table, got)
	}
}

// TestHandlerWritesCommitWithMark checks that the handler's writes through
// Tx and the mark commit together, and that a redelivery writes nothing.
func TestHandlerWritesCommitWithMark(t *testing.T) {
	pool := testPool(t)
	s, table := newStore(t, pool)
	effects := effectsTable(t, pool, table)
	ctx := context.Background()

	for i := range 3 {
		dup, err := s.Process(ctx, "g", "e1", func(ctx context.Context) error {
			return writeEffect(ctx, effects, "e1")
		})
		if err != nil || dup != (i > 0) {
			t.Fatalf("delivery %d: Process = (%t, %v); want (%t, nil)", i+1, dup, err, i > 0)
		}
	}
	if got := count(t, pool, "SELECT count(*) FROM "+effects+" WHERE event_id = 'e1'"); got != 1 {
		t.Errorf("the handler's effect was written %d times; want 1", got)
	}
	if got := count(t, pool, "SELECT count(*) FROM "+table+" WHERE scope = 'g' AND event_id = 'e1'"); got != 1 {
		t.Errorf("%d marks for e1; want 1", got)
	}
}

// TestHandlerWritesInvisibleUntilCommit checks that while the handler runs,
// neither its writes nor the mark are visible to others.
func TestHandlerWritesInvisibleUntilCommit(t *testing.T) {
	pool := testPool(t)
	s, table := newStore(t, pool)
	effects := effectsTable(t, pool, table)

	_, err := s.Process(context.Background(), "g", "e1", func(ctx context.Context) error {
		if err := writeEffect(ctx, effects, "e1"); err != nil {
			return err
		}
		if got := count(t, pool, "SELECT count(*) FROM "+effects); got != 0 {
			t.Errorf("before commit, others see %d effects; want 0", got)
		}
		if got := marks(t, pool, table); got != 0 {
			t.Errorf("before commit, others see %d marks; want 0", got)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
	if got := count(t, pool, "SELECT count(*) FROM "+effects); got != 1 {
		t.Errorf("after commit, %d effects; want 1", got)
	}
}

// TestHandlerFailureRollsBack checks that a failing or panicking handler
// leaves neither its writes nor the mark, and that the event is handled on
// redelivery.
func TestHandlerFailureRollsBack(t *testing.T) {
	pool := testPool(t)
	s, table := newStore(t, pool)
	effects := effectsTable(t, pool, table)
	ctx := context.Background()
	boom := errors.New("payment declined")

	check := func(when string, wantEffects, wantMarks int) {
		t.Helper()
		if got := count(t, pool, "SELECT count(*) FROM "+effects); got != wantEffects {
			t.Errorf("%s: %d effects; want %d", when, got, wantEffects)
		}
		if got := marks(t, pool, table); got != wantMarks {
			t.Errorf("%s: %d marks; want %d", when, got, wantMarks)
		}
		if got := pool.Stat().AcquiredConns(); got != 0 {
			t.Errorf("%s: %d connections still acquired; want 0", when, got)
		}
	}

	dup, err := s.Process(ctx, "g", "e1", func(ctx context.Context) error {
		if err := writeEffect(ctx, effects, "e1"); err != nil {
			return err
		}
		return fmt.Errorf("charging: %w", boom)
	})
	if !errors.Is(err, boom) || dup {
		t.Fatalf("Process with a failing handler = (%t, %v); want (false, %v)", dup, err, boom)
	}
	check("after a failure", 0, 0)

	func() {
		defer func() {
			if r := recover(); r != "handler panic" {
				t.Errorf("recovered %v; want the handler's panic", r)
			}
		}()
		_, _ = s.Process(ctx, "g", "e1", func(ctx context.Context) error {
			if err := writeEffect(ctx, effects, "e1"); err != nil {
				return err
			}
			panic("handler panic")
		})
	}()
	check("after a panic", 0, 0)

	// A handler that swallows an SQL error and returns nil: the transaction
	// is aborted, so the commit fails and nothing is recorded.
	dup, err = s.Process(ctx, "g", "e1", func(ctx context.Context) error {
		if err := writeEffect(ctx, effects, "e1"); err != nil {
			return err
		}
		tx, _ := Tx(ctx)
		_, _ = tx.Exec(ctx, "SELECT 1/0")
		return nil
	})
	if !errors.Is(err, pgx.ErrTxCommitRollback) || dup {
		t.Errorf("Process with a swallowed SQL error = (%t, %v); want (false, %v)", dup, err, pgx.ErrTxCommitRollback)
	}
	check("after a swallowed SQL error", 0, 0)

	dup, err = s.Process(ctx, "g", "e1", func(ctx context.Context) error {
		return writeEffect(ctx, effects, "e1")
	})
	if err != nil || dup {
		t.Fatalf("redelivery: Process = (%t, %v); want (false, nil)", dup, err)
	}
	check("after the redelivery", 1, 1)
}

func TestTx(t *testing.T) {
	pool := testPool(t)
	s, _ := newStore(t, pool)

	if tx, ok := Tx(context.Background()); ok || tx != nil {
		t.Errorf("Tx(context.Background()) = (%v, %t); want (nil, false)", tx, ok)
	}
	_, err := s.Process(context.Background(), "g", "e1", func(ctx context.Context) error {
		tx, ok := Tx(ctx)
		if !ok {
			return errors.New("no transaction")
		}
		if err := tx.Commit(ctx); !errors.Is(err, ErrTxManaged) {
			t.Errorf("Commit on the handler's transaction = %v; want ErrTxManaged", err)
		}
		if err := tx.Rollback(ctx); !errors.Is(err, ErrTxManaged) {
			t.Errorf("Rollback on the handler's transaction = %v; want ErrTxManaged", err)
		}
		// Savepoints still work, and the transaction is still usable.
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		if err := sp.Rollback(ctx); err != nil {
			return err
		}
		var one int
		return tx.QueryRow(ctx, "SELECT 1").Scan(&one)
	})
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
}

// waitForLockWaiters blocks until n sessions wait on a row lock while
// inserting into table, that is, behind an uncommitted mark.
func waitForLockWaiters(t *testing.T, pool *pgxpool.Pool, table string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := count(t, pool, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE $1`, `INSERT INTO "`+table+`"%`)
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions wait behind the uncommitted mark; want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestConcurrentSameID checks that concurrent calls for one event run the
// handler once: the later ones block on the uncommitted mark and become
// duplicates when it commits, or one of them takes over when it rolls back.
func TestConcurrentSameID(t *testing.T) {
	const callers = 10
	for _, firstFails := range []bool{false, true} {
		t.Run(fmt.Sprintf("first fails %t", firstFails), func(t *testing.T) {
			pool := testPool(t)
			s, table := newStore(t, pool)
			effects := effectsTable(t, pool, table)
			ctx := context.Background()

			started := make(chan struct{})
			release := make(chan struct{})
			var firstErr error
			var wg sync.WaitGroup
			wg.Go(func() {
				_, firstErr = s.Process(ctx, "g", "e1", func(ctx context.Context) error {
					if err := writeEffect(ctx, effects, "first"); err != nil {
						return err
					}
					close(started)
					<-release
					if firstFails {
						return errors.New("first fails")
					}
					return nil
				})
			})
			<-started

			var runs, dups atomic.Int32
			for range callers {
				wg.Go(func() {
					dup, err := s.Process(ctx, "g", "e1", func(ctx context.Context) error {
						runs.Add(1)
						return writeEffect(ctx, effects, "later")
					})
					if err != nil {
						t.Errorf("Process: %v", err)
					}
					if dup {
						dups.Add(1)
					}
				})
			}
			waitForLockWaiters(t, pool, table, callers)
			close(release)
			wg.Wait()

			wantRuns, wantDups := 0, callers
			if firstFails {
				wantRuns, wantDups = 1, callers-1
				if firstErr == nil {
					t.Errorf("first Process succeeded; want its handler's error")
				}
			} else if firstErr != nil {
				t.Errorf("first Process: %v", firstErr)
			}
			if got := runs.Load(); int(got) != wantRuns {
				t.Errorf("later handlers ran %d times; want %d", got, wantRuns)
			}
			if got := dups.Load(); int(got) != wantDups {
				t.Errorf("%d later calls were duplicates; want %d", got, wantDups)
			}
			if got := count(t, pool, "SELECT count(*) FROM "+effects); got != 1 {
				t.Errorf("%d effects committed; want 1", got)
			}
			if got := marks(t, pool, table); got != 1 {
				t.Errorf("%d marks; want 1", got)
			}
		})
	}
}

// TestConcurrentMany runs overlapping ids from many goroutines with some
// failures; every id must have its effect committed exactly once.
func TestConcurrentMany(t *testing.T) {
	const (
		goroutines = 8
		ids        = 40
	)
	pool := testPool(t)
	s, table := newStore(t, pool)
	effects := effectsTable(t, pool, table)

	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for round := range 2 {
				for i := range ids {
					id := fmt.Sprint("e", (i+g*7)%ids)
					fail := (i+g+round)%4 == 0
					_, err := s.Process(context.Background(), "g", id, func(ctx context.Context) error {
						if err := writeEffect(ctx, effects, id); err != nil {
							return err
						}
						if fail {
							return errors.New("transient")
						}
						return nil
					})
					if err != nil && (!fail || err.Error() != "transient") {
						t.Errorf("%s: unexpected error %v", id, err)
					}
				}
			}
		})
	}
	wg.Wait()
	if got := count(t, pool, "SELECT count(*) FROM (SELECT event_id FROM "+effects+" GROUP BY event_id HAVING count(*) = 1) x"); got != ids {
		t.Errorf("%d ids have exactly one committed effect; want %d", got, ids)
	}
	if got := marks(t, pool, table); got != ids {
		t.Errorf("%d marks; want %d", got, ids)
	}
}

func TestContextCanceled(t *testing.T) {
	pool := testPool(t)
	s, table := newStore(t, pool)

	t.Run("before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		ran := false
		dup, err := s.Process(ctx, "g", "e1", func(context.Context) error {
			ran = true
			return nil
		})
		if !errors.Is(err, context.Canceled) || dup || ran {
			t.Errorf("Process with a canceled context = (%t, %v), ran %t; want (false, context.Canceled), not run", dup, err, ran)
		}
	})

	t.Run("while waiting", func(t *testing.T) {
		started := make(chan struct{})
		release := make(chan struct{})
		var wg sync.WaitGroup
		var firstErr error
		wg.Go(func() {
			_, firstErr = s.Process(context.Background(), "g", "e2", func(context.Context) error {
				close(started)
				<-release
				return nil
			})
		})
		<-started

		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := s.Process(ctx, "g", "e2", func(context.Context) error {
				return errors.New("must not run")
			})
			errc <- err
		}()
		waitForLockWaiters(t, pool, table, 1)
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("canceled waiter: Process error = %v; want context.Canceled", err)
		}

		close(release)
		wg.Wait()
		if firstErr != nil {
			t.Errorf("first Process: %v", firstErr)
		}
		dup, err := s.Process(context.Background(), "g", "e2", func(context.Context) error { return nil })
		if err != nil || !dup {
			t.Errorf("after the first committed, Process = (%t, %v); want (true, nil)", dup, err)
		}
	})

	t.Run("during handler", func(t *testing.T) {
		effects := effectsTable(t, pool, table)
		ctx, cancel := context.WithCancel(context.Background())
		dup, err := s.Process(ctx, "g", "e3", func(ctx context.Context) error {
			if err := writeEffect(ctx, effects, "e3"); err != nil {
				return err
			}
			cancel() // the handler "succeeds", but the context is gone: no commit
			return nil
		})
		if !errors.Is(err, context.Canceled) || dup {
			t.Errorf("Process canceled during the handler = (%t, %v); want (false, context.Canceled)", dup, err)
		}
		if got := count(t, pool, "SELECT count(*) FROM "+effects); got != 0 {
			t.Errorf("%d effects; want 0", got)
		}
		if got := count(t, pool, "SELECT count(*) FROM "+table+" WHERE event_id = 'e3'"); got != 0 {
			t.Errorf("%d marks for e3; want 0", got)
		}
	})
}

// backdate makes the marks of ids look processed age ago.
func backdate(t *testing.T, pool *pgxpool.Pool, table string, age time.Duration, ids ...string) {
	t.Helper()
	_, err := pool.Exec(context.Background(),
		"UPDATE "+table+" SET processed_at = now() - make_interval(secs => $1) WHERE event_id = ANY($2)",
		age.Seconds(), ids)
	if err != nil {
		t.Fatalf("backdating marks: %v", err)
	}
}

func TestPrune(t *testing.T) {
	pool := testPool(t)
	s, table := newStore(t, pool)
	ctx := context.Background()
	noop := func(context.Context) error { return nil }

	for _, id := range []string{"old1", "old2", "new1"} {
		if _, err := s.Process(ctx, "g", id, noop); err != nil {
			t.Fatalf("Process(%s): %v", id, err)
		}
	}
	backdate(t, pool, table, 2*time.Hour, "old1", "old2")

	n, err := s.Prune(ctx, time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("Prune(1h) = (%d, %v); want (2, nil)", n, err)
	}
	if dup, err := s.Process(ctx, "g", "old1", noop); err != nil || dup {
		t.Errorf("pruned event: Process = (%t, %v); want (false, nil)", dup, err)
	}
	if dup, err := s.Process(ctx, "g", "new1", noop); err != nil || !dup {
		t.Errorf("kept event: Process = (%t, %v); want (true, nil)", dup, err)
	}

	// More than one batch.
	const many = pruneBatch*2 + 17
	_, err = pool.Exec(ctx, "INSERT INTO "+table+" (scope, event_id, processed_at) SELECT 'bulk', 'b' || i, now() - interval '3 hours' FROM generate_series(1, $1) i", many)
	if err != nil {
		t.Fatalf("inserting old marks: %v", err)
	}
	n, err = s.Prune(ctx, time.Hour)
	if err != nil || n != many {
		t.Errorf("Prune of %d old marks = (%d, %v); want (%d, nil)", many, n, err, many)
	}
	if got := marks(t, pool, table); got != 2 { // old1 again, and new1
		t.Errorf("after pruning, %d marks; want 2", got)
	}

	for _, d := range []time.Duration{0, -time.Hour} {
		if _, err := s.Prune(ctx, d); err == nil || !strings.Contains(err.Error(), "must be positive") {
			t.Errorf("Prune(%v) error = %v; want one saying the age must be positive", d, err)
		}
	}
}

func TestBackgroundPruning(t *testing.T) {
	pool := testPool(t)
	s, table := newStore(t, pool)
	ctx := context.Background()
	for _, id := range []string{"old", "new"} {
		if _, err := s.Process(ctx, "g", id, func(context.Context) error { return nil }); err != nil {
			t.Fatalf("Process(%s): %v", id, err)
		}
	}
	backdate(t, pool, table, 48*time.Hour, "old")

	// A second store on the same table prunes once at start, then hourly.
	pruner, err := New(ctx, pool, WithTable(table), WithPruning(time.Hour, 24*time.Hour))
	if err != nil {
		t.Fatalf("New with pruning: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for marks(t, pool, table) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("background pruning left %d marks; want 1", marks(t, pool, table))
		}
		time.Sleep(10 * time.Millisecond)
	}
	pruner.Close()
	pruner.Close() // idempotent

	// The store still works after Close.
	if dup, err := pruner.Process(ctx, "g", "new", func(context.Context) error { return nil }); err != nil || !dup {
		t.Errorf("after Close, Process = (%t, %v); want (true, nil)", dup, err)
	}
}

func TestNewConcurrently(t *testing.T) {
	pool := testPool(t)
	table := uniqueName(t, pool)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			s, err := New(context.Background(), pool, WithTable(table))
			if err != nil {
				t.Errorf("New: %v", err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
}

func TestSchemaQualifiedTable(t *testing.T) {
	pool := testPool(t)
	ctx := context.Background()
	schema := fmt.Sprintf("idem_schema_%016x", rand.Uint64())
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "42501" {
			t.Skipf("the DATABASE_URL user may not create schemas: %v", err)
		}
		t.Fatalf("creating schema: %v", err)
	}
	t.Cleanup(func() {
		if _, err := pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("dropping schema: %v", err)
		}
	})
	s, err := New(ctx, pool, WithTable(schema+".marks"))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer s.Close()
	if got, want := s.Table(), schema+".marks"; got != want {
		t.Errorf("Table() = %q; want %q", got, want)
	}
	if _, err := s.Process(ctx, "g", "e1", func(context.Context) error { return nil }); err != nil {
		t.Fatalf("Process: %v", err)
	}
	if got := marks(t, pool, schema+".marks"); got != 1 {
		t.Errorf("%d marks; want 1", got)
	}
	if got := count(t, pool, "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'marks_processed_at_idx'", schema); got != 1 {
		t.Errorf("found %d processed_at indexes; want 1", got)
	}
}

// TestInvalidConfig needs no database: the configuration is checked first.
func TestInvalidConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		want string
	}{
		{"empty table", []Option{WithTable("")}, "invalid table name"},
		{"uppercase", []Option{WithTable("Processed")}, "invalid table name"},
		{"leading digit", []Option{WithTable("1events")}, "invalid table name"},
		{"dash", []Option{WithTable("processed-events")}, "invalid table name"},
		{"injection", []Option{WithTable("t; DROP TABLE users")}, "invalid table name"},
		{"quoted", []Option{WithTable(`"t"`)}, "invalid table name"},
		{"space", []Option{WithTable("my events")}, "invalid table name"},
		{"three parts", []Option{WithTable("a.b.c")}, "invalid table name"},
		{"empty schema", []Option{WithTable(".events")}, "invalid table name"},
		{"empty name", []Option{WithTable("public.")}, "invalid table name"},
		{"bad schema", []Option{WithTable("My.events")}, "the schema"},
		{"too long", []Option{WithTable(strings.Repeat("a", maxTableName+1))}, "invalid table name"},
		{"non-ASCII", []Option{WithTable("événements")}, "invalid table name"},
		{"pruning interval", []Option{WithPruning(0, time.Hour)}, "must be positive"},
		{"pruning age", []Option{WithPruning(time.Hour, -time.Hour)}, "must be positive"},
		{"nil pool", nil, "pool is nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(context.Background(), nil, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New error = %v; want one containing %q", err, tc.want)
			}
			if s != nil {
				t.Errorf("New returned a store with an error")
			}
		})
	}

	for _, name := range []string{"choreo_processed_events", "_x", "a1", "public.events", strings.Repeat("a", maxTableName)} {
		if _, _, err := parseTable(name, maxTableName); err != nil {
			t.Errorf("parseTable(%q): %v; want it accepted", name, err)
		}
	}
}

func TestNewCreatesTable(t *testing.T) {
	pool := testPool(t)
	table := uniqueName(t, pool)
	for range 2 { // the second finds it there
		s, err := New(context.Background(), pool, WithTable(table))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		s.Close()
	}
	rows, err := pool.Query(context.Background(), `SELECT column_name, data_type, is_nullable FROM information_schema.columns
		WHERE table_name = $1 ORDER BY ordinal_position`, table)
	if err != nil {
		t.Fatalf("reading columns: %v", err)
	}
	var got []string
	for rows.Next() {
		var name, typ, nullable string
		if err := rows.Scan(&name, &typ, &nullable); err != nil {
			t.Fatalf("reading columns: %v", err)
		}
		got = append(got, name+" "+typ+" "+nullable)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading columns: %v", err)
	}
	want := []string{"scope text NO", "event_id text NO", "processed_at timestamp with time zone NO"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("columns = %q; want %q", got, want)
	}
	if got := count(t, pool, `SELECT count(*) FROM pg_indexes WHERE tablename = $1`, table); got != 2 {
		t.Errorf("%d indexes; want 2 (primary key, processed_at)", got)
	}
}

// BenchmarkProcess measures one event through the store, over a real
// connection: "new" is begin, insert, commit; "duplicate" is begin, insert
// (no row), rollback.
func BenchmarkProcess(b *testing.B) {
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		b.Skip("DATABASE_URL not set: skipping PostgreSQL store benchmarks")
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		b.Fatalf("connecting: %v", err)
	}
	defer pool.Close()
	table := fmt.Sprintf("idem_bench_%016x", rand.Uint64())
	s, err := New(ctx, pool, WithTable(table))
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	defer func() {
		if _, err := pool.Exec(ctx, "DROP TABLE "+table); err != nil {
			b.Errorf("dropping %s: %v", table, err)
		}
	}()
	noop := func(context.Context) error { return nil }

	b.Run("new", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			if _, err := s.Process(ctx, "g", fmt.Sprint("new-", i), noop); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("duplicate", func(b *testing.B) {
		if _, err := s.Process(ctx, "g", "dup", noop); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if dup, err := s.Process(ctx, "g", "dup", noop); err != nil || !dup {
				b.Fatalf("Process = (%t, %v); want (true, nil)", dup, err)
			}
		}
	})
}

// TestNewExistingTableReadOnly checks that New uses an existing table
// without trying to create anything, so that a user who may not create
// tables can use a table made ahead of time.
func TestNewExistingTableReadOnly(t *testing.T) {
	pool := testPool(t)
	table := uniqueName(t, pool)
	s, err := New(context.Background(), pool, WithTable(table))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.Close()

	cfg := pool.Config().Copy()
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	ro, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connecting read-only: %v", err)
	}
	defer ro.Close()

	if _, err := New(context.Background(), ro, WithTable(table)); err != nil {
		t.Errorf("New on an existing table, read-only: %v", err)
	}
	_, err = New(context.Background(), ro, WithTable(table+"_missing"))
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("New on a missing table, read-only: error = %v; want the read-only failure to create it", err)
	}
}
