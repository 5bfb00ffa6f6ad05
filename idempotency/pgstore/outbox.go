package pgstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
)

// DefaultOutboxTable is the outbox table unless OutboxTable names another.
const DefaultOutboxTable = "choreo_outbox"

// maxOutboxTableName is the longest outbox table name accepted: PostgreSQL
// names the identity column's sequence <table>_id_seq.
const maxOutboxTableName = 63 - len("_id_seq")

// The relay's defaults.
const (
	defaultRelayRows     = 500
	defaultRelayBytes    = 16 << 20
	defaultRelayInterval = 100 * time.Millisecond
	defaultRelayTimeout  = 30 * time.Second
)

// finishTimeout bounds the deletion and commit of a batch that was
// produced when the relay's context ended: deleting what the broker
// acknowledged saves sending it again.
const finishTimeout = 5 * time.Second

// OutboxOption configures an Outbox.
type OutboxOption func(*outboxConfig)

type outboxConfig struct {
	table       string
	rows, bytes int
	interval    time.Duration
	timeout     time.Duration
	logger      *slog.Logger
	optionError error
}

// OutboxTable names the outbox table; the default is DefaultOutboxTable.
// The name follows the rules of WithTable, at most 56 bytes. The table must
// be in the database of the Store whose transactions the outbox joins.
func OutboxTable(name string) OutboxOption {
	return func(c *outboxConfig) { c.table = name }
}

// RelayBatch bounds what the relay takes from the table at once: at most
// rows records, and no more records once their keys and values add up to
// bytes (a batch always has at least one record). The defaults are 500
// records and 16 MiB. Both must be positive.
func RelayBatch(rows, bytes int) OutboxOption {
	return func(c *outboxConfig) {
		if rows <= 0 || bytes <= 0 {
			c.optionError = fmt.Errorf("pgstore: RelayBatch(%d, %d): both bounds must be positive", rows, bytes)
			return
		}
		c.rows, c.bytes = rows, bytes
	}
}

// RelayInterval sets how often an idle relay looks for new records: the
// longest a committed record waits before the relay sees it. The default
// is 100ms. It must be positive.
func RelayInterval(d time.Duration) OutboxOption {
	return func(c *outboxConfig) {
		if d <= 0 {
			c.optionError = fmt.Errorf("pgstore: RelayInterval(%v): the interval must be positive", d)
			return
		}
		c.interval = d
	}
}

// RelayTimeout bounds how long the relay waits for the broker to
// acknowledge one batch; records not acknowledged by then stay in the table
// and are sent again after a back-off. The default is 30s. It must be
// positive.
func RelayTimeout(d time.Duration) OutboxOption {
	return func(c *outboxConfig) {
		if d <= 0 {
			c.optionError = fmt.Errorf("pgstore: RelayTimeout(%v): the timeout must be positive", d)
			return
		}
		c.timeout = d
	}
}

// OutboxLogger sets the logger of the relay (failed batches at Warn, sent
// batches at Debug); the default is slog.Default().
func OutboxLogger(l *slog.Logger) OutboxOption {
	return func(c *outboxConfig) { c.logger = l }
}

// Outbox is a transactional outbox in PostgreSQL: a producer.OutboxWriter
// that writes records into the transaction of the Store handling an event,
// and a relay that sends them to Kafka once that transaction committed.
// Create one with NewOutbox; it is safe for concurrent use. See the package
// documentation.
type Outbox struct {
	pool   *pgxpool.Pool
	table  string // as given, for messages
	cfg    outboxConfig
	lockID int64 // the relay's advisory lock

	insertSQL  string
	peekSQL    string
	selectSQL  string
	deleteSQL  string
	pendingSQL string

	// afterProduce, when set (by tests), runs after a batch was produced
	// and before its rows are deleted; an error abandons the batch as a
	// crash there would.
	afterProduce func() error
}

// NewOutbox returns an outbox that keeps its records in pool's database,
// creating its table (named choreo_outbox unless OutboxTable says
// otherwise) if it does not exist, as if by
//
//	CREATE TABLE choreo_outbox (
//		id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
//		topic         text        NOT NULL,
//		key           bytea,               -- NULL: no key
//		value         bytea,               -- NULL: no value
//		header_keys   text[]      NOT NULL,
//		header_values bytea[]     NOT NULL,
//		event_id      text        NOT NULL, -- the ce_id header, for people
//		created_at    timestamptz NOT NULL DEFAULT now()
//	);
//
// Creation is serialized as in New. A database user without the privilege
// to create tables works with a table created ahead of time; it needs
// INSERT (for Enqueue) and SELECT, UPDATE and DELETE (for the relay) on
// it.
func NewOutbox(ctx context.Context, pool *pgxpool.Pool, opts ...OutboxOption) (*Outbox, error) {
	c := outboxConfig{table: DefaultOutboxTable, rows: defaultRelayRows, bytes: defaultRelayBytes,
		interval: defaultRelayInterval, timeout: defaultRelayTimeout, logger: slog.Default()}
	for _, opt := range opts {
		opt(&c)
	}
	if c.optionError != nil {
		return nil, c.optionError
	}
	schema, name, err := parseTable(c.table, maxOutboxTableName)
	if err != nil {
		return nil, err
	}
	if pool == nil {
		return nil, errors.New("pgstore: new outbox: the pool is nil")
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	table := pgx.Identifier{name}
	if schema != "" {
		table = pgx.Identifier{schema, name}
	}
	qt := table.Sanitize()
	err = createTable(ctx, pool, c.table, qt, `CREATE TABLE IF NOT EXISTS `+qt+` (
	id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	topic         text        NOT NULL,
	key           bytea,
	value         bytea,
	header_keys   text[]      NOT NULL,
	header_values bytea[]     NOT NULL,
	event_id      text        NOT NULL,
	created_at    timestamptz NOT NULL DEFAULT now()
)`)
	if err != nil {
		return nil, err
	}
	h := fnv.New64a()
	h.Write([]byte("choreo/idempotency/pgstore/relay:" + c.table))
	return &Outbox{
		pool:   pool,
		table:  c.table,
		cfg:    c,
		lockID: int64(h.Sum64()),
		insertSQL: "INSERT INTO " + qt + " (topic, key, value, header_keys, header_values, event_id)" +
			" VALUES ($1, $2, $3, $4, $5, $6)",
		peekSQL:    "SELECT EXISTS (SELECT 1 FROM " + qt + ")",
		selectSQL:  "SELECT id, topic, key, value, header_keys, header_values FROM " + qt + " ORDER BY id LIMIT $1 FOR UPDATE",
		deleteSQL:  "DELETE FROM " + qt + " WHERE id = ANY($1)",
		pendingSQL: "SELECT count(*) FROM " + qt,
	}, nil
}

// Table returns the name of the outbox table, as configured.
func (o *Outbox) Table() string { return o.table }

// Enqueue writes rec into the outbox table within the transaction of the
// Store.Process call whose handler got ctx, and reports true; the relay
// sends it after that transaction commits, and never if it rolls back.
// When ctx comes from no Process call, Enqueue writes nothing and reports
// false, so that the producer publishes rec directly. Enqueue makes Outbox
// a producer.OutboxWriter.
//
// Concurrent Enqueue calls with one handler's context take turns on its
// transaction; a handler that uses the transaction itself from other
// goroutines at the same time must not publish meanwhile (a transaction
// runs one statement at a time).
func (o *Outbox) Enqueue(ctx context.Context, rec *kgo.Record) (queued bool, err error) {
	st, ok := ctx.Value(txKey{}).(*handlerState)
	if !ok {
		return false, nil
	}
	keys := make([]string, len(rec.Headers))
	values := make([][]byte, len(rec.Headers))
	id := ""
	for i, h := range rec.Headers {
		keys[i], values[i] = h.Key, h.Value
		if h.Key == choreo.HeaderID {
			id = string(h.Value)
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, err := st.tx.Exec(ctx, o.insertSQL, rec.Topic, rec.Key, rec.Value, keys, values, id); err != nil {
		return false, fmt.Errorf("pgstore: writing event %q for topic %s to the outbox %s: %w", id, rec.Topic, o.table, err)
	}
	return true, nil
}

// Pending returns the number of records in the outbox table that are not
// sent yet (committed ones; a transaction's own records count only after
// it commits).
func (o *Outbox) Pending(ctx context.Context) (int64, error) {
	var n int64
	if err := o.pool.QueryRow(ctx, o.pendingSQL).Scan(&n); err != nil {
		return 0, fmt.Errorf("pgstore: counting the records of the outbox %s: %w", o.table, err)
	}
	return n, nil
}

// Relay sends the outbox's committed records through cl, in the order they
// were written, until ctx ends; it then returns nil. Run it in every
// instance of the service (or in one process of its own): the instances
// take turns, one sending at a time, so records with one key keep their
// order and none is sent twice in the normal course.
//
// Each round takes a batch (see RelayBatch) in a transaction that holds
// the outbox's relay lock (a transaction-level advisory lock) and the
// batch's rows (SELECT … FOR UPDATE), produces it with cl.ProduceSync,
// deletes the rows the broker acknowledged and commits. Records the broker
// did not acknowledge stay, and the round is tried again after a back-off
// (100ms doubling to 10s); failures are logged. An idle relay looks for
// records every RelayInterval. If the relay dies after the broker
// acknowledged a batch but before the commit, the next round sends the
// batch again: the copies carry the same ce_id, and consumers skip them as
// duplicates.
//
// cl must be an idempotent producer with acks from all in-sync replicas,
// the franz-go defaults, and not transactional; Relay returns an error
// otherwise. Records are partitioned by cl's partitioner, so use the
// producer's (the default) to keep a key on its partition. cl may be
// shared, but Relay waits for the batch's acknowledgements, so records
// other goroutines produce through cl are flushed along with it.
func (o *Outbox) Relay(ctx context.Context, cl *kgo.Client) error {
	if cl == nil {
		return errors.New("pgstore: relay of the outbox " + o.table + ": the client is nil")
	}
	if acks, _ := cl.OptValue(kgo.RequiredAcks).(kgo.Acks); acks != kgo.AllISRAcks() {
		return fmt.Errorf("pgstore: relay of the outbox %s: the client must require acks from all in-sync replicas (kgo.RequiredAcks(kgo.AllISRAcks()))", o.table)
	}
	if off, _ := cl.OptValue(kgo.DisableIdempotentWrite).(bool); off {
		return fmt.Errorf("pgstore: relay of the outbox %s: the client must write idempotently (without kgo.DisableIdempotentWrite)", o.table)
	}
	if txn := cl.OptValues(kgo.TransactionalID); len(txn) == 2 && txn[1] == true {
		return fmt.Errorf("pgstore: relay of the outbox %s: the client must not be transactional", o.table)
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = 100*time.Millisecond, 10*time.Second, 0
	bo.Reset()
	for {
		n, full, err := o.relayOnce(ctx, cl)
		if ctx.Err() != nil {
			return nil
		}
		wait := o.cfg.interval
		switch {
		case err != nil:
			wait = bo.NextBackOff()
			o.cfg.logger.WarnContext(ctx, "pgstore: outbox relay failed; trying again",
				"table", o.table, "sent", n, "retry_in", wait, "error", err)
		case full:
			bo.Reset()
			o.cfg.logger.DebugContext(ctx, "pgstore: outbox batch sent", "table", o.table, "sent", n)
			continue // more are waiting
		case n > 0:
			bo.Reset()
			o.cfg.logger.DebugContext(ctx, "pgstore: outbox batch sent", "table", o.table, "sent", n)
		default:
			bo.Reset()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// relayOnce sends one batch. It returns how many records the broker
// acknowledged (and were deleted), and whether the batch was full, so that
// the next one should follow at once.
func (o *Outbox) relayOnce(ctx context.Context, cl *kgo.Client) (sent int, full bool, err error) {
	var pending bool
	if err := o.pool.QueryRow(ctx, o.peekSQL).Scan(&pending); err != nil {
		return 0, false, fmt.Errorf("looking for records in %s: %w", o.table, err)
	}
	if !pending {
		return 0, false, nil
	}
	tx, err := o.pool.Begin(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("beginning a transaction on %s: %w", o.table, err)
	}
	defer func() { rollback(ctx, tx) }() // after a commit, a no-op

	var locked bool
	if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", o.lockID).Scan(&locked); err != nil {
		return 0, false, fmt.Errorf("taking the relay lock of %s: %w", o.table, err)
	}
	if !locked {
		return 0, false, nil // another relay is sending: wait for the next round
	}

	ids, recs, full, err := o.batch(ctx, tx)
	if err != nil {
		return 0, false, err
	}
	if len(recs) == 0 {
		return 0, false, nil
	}
	pctx, cancel := context.WithTimeout(ctx, o.cfg.timeout)
	results := cl.ProduceSync(pctx, recs...)
	cancel()
	acked := make([]int64, 0, len(ids))
	var produceErr error
	for i, r := range results {
		if r.Err != nil {
			if produceErr == nil {
				produceErr = fmt.Errorf("producing record %d of %s to %s: %w", ids[i], o.table, r.Record.Topic, r.Err)
			}
			continue
		}
		acked = append(acked, ids[i])
	}
	if o.afterProduce != nil {
		if err := o.afterProduce(); err != nil {
			return 0, false, err
		}
	}
	// Delete what the broker has, even if ctx ended meanwhile: sending it
	// again would be harmless, but needless.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer fcancel()
	if len(acked) > 0 {
		if _, err := tx.Exec(fctx, o.deleteSQL, acked); err != nil {
			return 0, false, fmt.Errorf("deleting %d sent records from %s: %w", len(acked), o.table, err)
		}
	}
	if err := tx.Commit(fctx); err != nil {
		return 0, false, fmt.Errorf("committing the deletion of %d sent records from %s: %w", len(acked), o.table, err)
	}
	return len(acked), full && produceErr == nil, produceErr
}

// batch reads the next records of the table, in id order, locking their
// rows, up to the configured bounds.
func (o *Outbox) batch(ctx context.Context, tx pgx.Tx) (ids []int64, recs []*kgo.Record, full bool, err error) {
	rows, err := tx.Query(ctx, o.selectSQL, o.cfg.rows)
	if err != nil {
		return nil, nil, false, fmt.Errorf("reading records from %s: %w", o.table, err)
	}
	defer rows.Close()
	size := 0
	for rows.Next() {
		var (
			id     int64
			rec    = new(kgo.Record)
			keys   []string
			values [][]byte
		)
		if err := rows.Scan(&id, &rec.Topic, &rec.Key, &rec.Value, &keys, &values); err != nil {
			return nil, nil, false, fmt.Errorf("reading records from %s: %w", o.table, err)
		}
		if len(keys) != len(values) {
			return nil, nil, false, fmt.Errorf("reading record %d from %s: %d header keys but %d values", id, o.table, len(keys), len(values))
		}
		if len(recs) > 0 && size+len(rec.Key)+len(rec.Value) > o.cfg.bytes {
			return ids, recs, true, nil // the rest waits for the next batch (rows.Close discards it)
		}
		size += len(rec.Key) + len(rec.Value)
		rec.Headers = make([]kgo.RecordHeader, len(keys))
		for i := range keys {
			rec.Headers[i] = kgo.RecordHeader{Key: keys[i], Value: values[i]}
		}
		ids, recs = append(ids, id), append(recs, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, false, fmt.Errorf("reading records from %s: %w", o.table, err)
	}
	return ids, recs, len(recs) == o.cfg.rows, nil
}
