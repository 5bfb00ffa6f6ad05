// Package pgstore is an idempotency store in PostgreSQL, for effects that
// must happen exactly once.
//
// # How it works
//
// [Store.Process] opens a transaction and inserts the event's mark:
//
//	INSERT INTO choreo_processed_events (scope, event_id) VALUES ($1, $2)
//	ON CONFLICT (scope, event_id) DO NOTHING
//
// If the row already exists, the event was processed: the transaction is
// rolled back and Process reports a duplicate. Otherwise Process runs the
// handler with a context that carries the transaction ([Tx] returns it), and
// commits only when the handler returns nil. The handler's own writes,
// made through that transaction, and the mark therefore commit together or
// not at all: a handler that fails, panics or crashes mid-way leaves
// neither its writes nor the mark, and the redelivered event is handled
// afresh; a handler that succeeded leaves both, and the redelivery is
// skipped. The effects happen exactly once.
//
// Concurrent calls for the same event serialize on the row: while one
// transaction holds an uncommitted mark, a second insert of the same key
// waits for it. If the first commits, the second inserts nothing and is a
// duplicate; if it rolls back, the second inserts the mark and runs its
// handler. No advisory locks or polling are involved.
//
// Effects outside the database (publishing an event, calling an API) are
// not covered by the transaction: if the commit fails after such an effect,
// a redelivery repeats it. Publish events through the outbox (below), and
// make other effects idempotent at their destination.
//
// # Outbox
//
// [Outbox] puts a handler's events into the same transaction: a producer
// created with producer.Outbox(outbox) writes each event that a handler
// publishes (with its context) as a row of the outbox table, in the
// transaction of the mark and the handler's writes, and [Outbox.Relay]
// sends the rows to Kafka once that transaction has committed. An attempt
// that fails leaves no event behind, not even one it published before
// failing; an attempt that succeeds has its events sent even if the
// process dies the moment after the commit.
//
//	store, err := pgstore.New(ctx, pool)
//	…
//	outbox, err := pgstore.NewOutbox(ctx, pool) // same database as the store
//	…
//	prod, err := producer.New(ctx, conn, reg, producer.Outbox(outbox))
//	…
//	relayClient, err := kgo.NewClient(kgo.SeedBrokers(brokers...)) // idempotent, acks=all: the defaults
//	…
//	go outbox.Relay(ctx, relayClient) // in every instance; they take turns
//
//	c, err := consumer.New(conn, reg, "payment-service", consumer.Store(store))
//	consumer.Handle(c, "orders", func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
//		tx, _ := pgstore.Tx(ctx)
//		if _, err := tx.Exec(ctx, "INSERT INTO payments …"); err != nil {
//			return err
//		}
//		_, err := prod.Publish(ctx, "payments", ev.Key, PaymentRequested{…}) // queued in tx
//		return err
//	})
//
// Outside a handler's transaction the producer publishes directly. A
// queued publish returns at once, with Published.Queued set and no
// partition or offset; the event reaches Kafka within about RelayInterval
// (100ms by default) once the relay is running.
//
// The relay sends records in the order they were written, so events with
// one key stay in order, and deletes each row once the broker has
// acknowledged it. Several relays on one table take turns through an
// advisory lock rather than sharing the rows (SELECT … FOR UPDATE SKIP
// LOCKED would let two relays send batches with the same key at once, out
// of order). A relay that dies between the broker's acknowledgement and the
// deletion leaves the rows, and they are sent again: consumers see a copy
// with the same ce_id and skip it. Inside a handler, ce_id is derived from
// the handled event (see package producer), so a handler attempt that is
// repeated after a crash queues its events under the same ids as well.
// The relay polls; it does not use LISTEN/NOTIFY: a transaction that
// sends NOTIFY takes a server-wide lock when it commits, so every
// handler's commit would queue behind the others'.
//
// # Connections
//
// Each Process call holds one pool connection for as long as its handler
// runs. Size the pool (pgxpool's pool_max_conns) above the consumer's
// handler concurrency, and do not let a handler wait for a second
// connection from the same pool while it holds the first: with every
// connection held by waiting handlers, that deadlocks until contexts end.
//
// # Isolation
//
// The transaction uses PostgreSQL's default, READ COMMITTED, unless
// [WithTxOptions] says otherwise. Under REPEATABLE READ or SERIALIZABLE, a
// concurrent duplicate may fail with a serialization error (SQLSTATE 40001)
// instead of reporting a duplicate; the event is then redelivered and found
// to be a duplicate on the next attempt. Serialization failures are
// retryable errors, as usual with those isolation levels.
//
// # Table
//
// [New] creates the table if it does not exist (named
// choreo_processed_events unless [WithTable] says otherwise), as if by
//
//	CREATE TABLE choreo_processed_events (
//		scope        text        NOT NULL, -- the consumer group
//		event_id     text        NOT NULL, -- the ce_id header
//		processed_at timestamptz NOT NULL DEFAULT now(),
//		PRIMARY KEY (scope, event_id)
//	);
//	CREATE INDEX choreo_processed_events_processed_at_idx
//		ON choreo_processed_events (processed_at);
//
// The index serves [Store.Prune]. Where the service's database user may not
// create tables, run these statements ahead of time. Marks stay until pruned:
// call Prune from a scheduled job, or let the store prune in the background
// with [WithPruning]. Keep marks longer than any redelivery can come late,
// including the replay of dead letters.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/choreokit/choreo/idempotency"
)

// DefaultTable is the table of marks unless WithTable names another.
const DefaultTable = "choreo_processed_events"

// maxTableName is the longest table name accepted: PostgreSQL identifiers
// are at most 63 bytes, and the index name adds indexSuffix to the table's.
const (
	indexSuffix  = "_processed_at_idx"
	maxTableName = 63 - len(indexSuffix)
)

// pruneBatch is how many marks one DELETE statement of Prune removes, so
// that pruning a large backlog does not hold one long transaction.
const pruneBatch = 10_000

// rollbackTimeout bounds a rollback issued after the caller's context ended.
const rollbackTimeout = 5 * time.Second

// ErrTxManaged is returned by Commit and Rollback on the transaction that a
// handler gets from Tx: Process commits it when the handler returns nil and
// rolls it back otherwise, so the handler must not end it itself.
var ErrTxManaged = errors.New("pgstore: the transaction is committed or rolled back by Process, not by the handler")

// Option configures a Store.
type Option func(*config)

type config struct {
	table       string
	txOptions   pgx.TxOptions
	pruneEvery  time.Duration
	pruneOlder  time.Duration
	logger      *slog.Logger
	optionError error
}

// WithTable names the table of marks; the default is DefaultTable. The name
// is a lowercase SQL identifier (letters a to z, digits and underscores, not
// starting with a digit, at most 46 bytes), optionally qualified by a schema
// name of the same form ("events.processed"). The schema must exist.
func WithTable(name string) Option {
	return func(c *config) { c.table = name }
}

// WithTxOptions sets the options of the transactions Process opens, such
// as the isolation level the handler's writes need. See the package
// documentation on isolation.
func WithTxOptions(opts pgx.TxOptions) Option {
	return func(c *config) { c.txOptions = opts }
}

// WithPruning makes the store delete marks older than olderThan in the
// background: once when New returns, then every interval, until Close.
// Failures are logged (see WithLogger) and tried again at the next interval.
// Both durations must be positive. Pruning runs with the values of New's
// context but not its cancellation or deadline.
func WithPruning(every, olderThan time.Duration) Option {
	return func(c *config) {
		if every <= 0 || olderThan <= 0 {
			c.optionError = fmt.Errorf("pgstore: WithPruning(%v, %v): the interval and the age must be positive", every, olderThan)
			return
		}
		c.pruneEvery, c.pruneOlder = every, olderThan
	}
}

// WithLogger sets the logger for background pruning; the default is
// slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// Store is an idempotency.Store in PostgreSQL. Create one with New; it is
// safe for concurrent use. Close stops background pruning; the pool stays
// the caller's to close.
type Store struct {
	pool      *pgxpool.Pool
	table     string // as given, for messages
	txOptions pgx.TxOptions
	logger    *slog.Logger

	insertSQL string
	pruneSQL  string

	stop func()        // cancels background pruning
	done chan struct{} // closed when background pruning has stopped
}

var _ idempotency.Store = (*Store)(nil)

// New returns a store that keeps its marks in pool's database. If the table
// does not exist, New creates it and its index; creation is serialized with
// an advisory lock, so many instances of a service can start at once. If
// the table exists, New uses it as it is, so a database user without the
// privilege to create tables works with a table created ahead of time (see
// the package documentation; the user needs SELECT, INSERT and, for
// pruning, DELETE on it).
//
// New fails if an option is invalid, if pool is nil, or if the table does
// not exist and cannot be created.
func New(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	c := config{table: DefaultTable, logger: slog.Default()}
	for _, opt := range opts {
		opt(&c)
	}
	if c.optionError != nil {
		return nil, c.optionError
	}
	schema, name, err := parseTable(c.table, maxTableName)
	if err != nil {
		return nil, err
	}
	if pool == nil {
		return nil, errors.New("pgstore: new store: the pool is nil")
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	table := pgx.Identifier{name}
	index := pgx.Identifier{name + indexSuffix}
	if schema != "" {
		table = pgx.Identifier{schema, name}
	}
	qt := table.Sanitize()

	err = createTable(ctx, pool, c.table, qt, `CREATE TABLE IF NOT EXISTS `+qt+` (
	scope        text        NOT NULL,
	event_id     text        NOT NULL,
	processed_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (scope, event_id)
)`, "CREATE INDEX IF NOT EXISTS "+index.Sanitize()+" ON "+qt+" (processed_at)")
	if err != nil {
		return nil, err
	}

	s := &Store{
		pool:      pool,
		table:     c.table,
		txOptions: c.txOptions,
		logger:    c.logger,
		insertSQL: "INSERT INTO " + qt + " (scope, event_id) VALUES ($1, $2) ON CONFLICT (scope, event_id) DO NOTHING",
		pruneSQL: "DELETE FROM " + qt + " WHERE (scope, event_id) IN (SELECT scope, event_id FROM " + qt +
			" WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)",
		stop: func() {},
		done: make(chan struct{}),
	}
	if c.pruneEvery > 0 {
		pruneCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		s.stop = cancel
		go s.pruneLoop(pruneCtx, c.pruneEvery, c.pruneOlder)
	} else {
		close(s.done)
	}
	return s, nil
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// parseTable splits a table name into schema (maybe empty) and name, and
// checks that both are plain lowercase identifiers, the name at most max
// bytes long.
func parseTable(table string, max int) (schema, name string, err error) {
	name = table
	if i := strings.IndexByte(table, '.'); i >= 0 {
		schema, name = table[:i], table[i+1:]
		if !identifier.MatchString(schema) || len(schema) > 63 {
			return "", "", fmt.Errorf("pgstore: invalid table name %q: the schema %q must be a lowercase SQL identifier (a-z, 0-9, _; not starting with a digit; at most 63 bytes)", table, schema)
		}
	}
	if !identifier.MatchString(name) || len(name) > max {
		return "", "", fmt.Errorf("pgstore: invalid table name %q: want a lowercase SQL identifier (a-z, 0-9, _; not starting with a digit; at most %d bytes), optionally qualified by a schema as in \"schema.table\"", table, max)
	}
	return schema, name, nil
}

// createTable runs ddl (CREATE … IF NOT EXISTS statements) unless table
// exists. It looks first, so that New works for a database user that may write the
// table but not create tables: PostgreSQL checks the privilege even for a
// CREATE TABLE IF NOT EXISTS of an existing table.
//
// CREATE … IF NOT EXISTS is not safe against itself running concurrently
// (both may find the table missing, and one then fails on a catalog unique
// constraint), so creation runs under a transaction-level advisory lock
// keyed by the table name.
func createTable(ctx context.Context, pool *pgxpool.Pool, name, table string, ddl ...string) error {
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
		return fmt.Errorf("pgstore: preparing table %q: looking it up: %w", name, err)
	}
	if exists {
		return nil
	}

	h := fnv.New64a()
	h.Write([]byte("choreo/idempotency/pgstore:" + name))
	lockKey := int64(h.Sum64())

	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey); err != nil {
			return fmt.Errorf("taking the creation lock: %w", err)
		}
		for _, stmt := range ddl {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("creating it: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pgstore: preparing table %q: %w", name, err)
	}
	return nil
}

// Process runs fn unless id was already processed in scope, in one
// transaction with the mark; see the package documentation and
// [idempotency.Store.Process] for the contract. fn gets a context that
// carries the transaction: write through Tx(ctx) for the writes to commit
// atomically with the mark. fn's error is returned unchanged.
//
// Process returns an error, and fn's writes and the mark are rolled back,
// when the transaction cannot be begun, the mark cannot be inserted, or
// the commit fails. A failed commit after fn returned nil means fn ran but
// its effects were not recorded (or, if the connection broke during the
// commit, the outcome is unknown): either way the redelivery is handled
// correctly, as new or as a duplicate.
func (s *Store) Process(ctx context.Context, scope, id string, fn func(ctx context.Context) error) (duplicate bool, err error) {
	if id == "" {
		return false, idempotency.ErrEmptyID
	}
	tx, err := s.pool.BeginTx(ctx, s.txOptions)
	if err != nil {
		return false, fmt.Errorf("pgstore: processing event %q in scope %q: beginning the transaction: %w", id, scope, err)
	}
	ended := false
	defer func() {
		if !ended { // an early return or a panic in fn
			rollback(ctx, tx)
		}
	}()

	tag, err := tx.Exec(ctx, s.insertSQL, scope, id)
	if err != nil {
		return false, fmt.Errorf("pgstore: processing event %q in scope %q: inserting the mark into %s: %w", id, scope, s.table, err)
	}
	if tag.RowsAffected() == 0 {
		return true, nil // already processed: the deferred rollback ends the transaction
	}

	if err := fn(context.WithValue(ctx, txKey{}, &handlerState{tx: handlerTx{tx}})); err != nil {
		return false, err
	}

	ended = true // Commit ends the transaction and releases the connection, also when it fails
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("pgstore: processing event %q in scope %q: committing: %w", id, scope, err)
	}
	return false, nil
}

// rollback ends tx, also when ctx has ended: a rollback that cannot be sent
// makes pgx close the connection, which also discards the transaction, but
// sending it keeps the connection for reuse. After a commit it does nothing.
func rollback(ctx context.Context, tx pgx.Tx) {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
	}
	_ = tx.Rollback(ctx) // on failure pgx closes the connection; nothing was committed either way
}

// Prune deletes the marks older than olderThan, and returns how many it
// deleted. Age is measured by the database's clock. Redeliveries of the
// pruned events are no longer recognized as duplicates, so olderThan should
// exceed the longest time an event can take to come back (retry tiers,
// consumer lag, dead-letter replay). It deletes in batches of 10,000 rows,
// each in its own transaction; if ctx ends or a batch fails, the error
// comes with the number deleted so far.
func (s *Store) Prune(ctx context.Context, olderThan time.Duration) (int64, error) {
	if olderThan <= 0 {
		return 0, fmt.Errorf("pgstore: pruning %s: the age must be positive, got %v", s.table, olderThan)
	}
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, s.pruneSQL, olderThan.Seconds(), pruneBatch)
		if err != nil {
			return total, fmt.Errorf("pgstore: pruning marks older than %v from %s: %w", olderThan, s.table, err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < pruneBatch {
			return total, nil
		}
	}
}

func (s *Store) pruneLoop(ctx context.Context, every, olderThan time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, err := s.Prune(ctx, olderThan)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.logger.Warn("pgstore: background pruning failed; trying again at the next interval",
				"table", s.table, "deleted", n, "retry_in", every, "error", err)
		case n > 0:
			s.logger.Debug("pgstore: pruned old marks", "table", s.table, "deleted", n, "older_than", olderThan)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// Close stops background pruning, canceling a prune in progress, and waits
// for it to end. It does not close the pool. Process and Prune still work
// after Close. Close is safe to call more than once.
func (s *Store) Close() {
	s.stop()
	<-s.done
}

// Table returns the name of the table of marks, as configured.
func (s *Store) Table() string { return s.table }

type txKey struct{}

// Tx returns the transaction of the Process call whose handler got ctx, and
// false when ctx comes from no such call. Writes made through it commit
// together with the event's mark, or are rolled back with it. Its Commit and
// Rollback return ErrTxManaged: Process ends the transaction. Savepoints
// (Begin on it) work as usual.
func Tx(ctx context.Context) (pgx.Tx, bool) {
	st, ok := ctx.Value(txKey{}).(*handlerState)
	if !ok {
		return nil, false
	}
	return st.tx, true
}

// handlerState is what a handler's context carries: its transaction, and
// a lock that lets the outbox write from concurrent publishes (a pgx.Tx
// takes one statement at a time).
type handlerState struct {
	tx handlerTx
	mu sync.Mutex
}

// handlerTx is the transaction as a handler sees it: everything but ending it.
type handlerTx struct{ pgx.Tx }

// Commit returns ErrTxManaged.
func (handlerTx) Commit(context.Context) error { return ErrTxManaged }

// Rollback returns ErrTxManaged.
func (handlerTx) Rollback(context.Context) error { return ErrTxManaged }
