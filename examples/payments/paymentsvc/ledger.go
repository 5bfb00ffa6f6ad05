package paymentsvc

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/choreokit/choreo/idempotency/pgstore"
)

// Payment statuses.
const (
	StatusAuthorized = "authorized"
	StatusDeclined   = "declined"
)

// Payment is the service's record of its decision about one order: at
// most one per order, which is the business-key check that keeps an order
// from being charged twice even when its event comes again under another
// id.
type Payment struct {
	OrderID         string
	Status          string // StatusAuthorized or StatusDeclined
	AmountCents     int64
	Currency        string
	AuthorizationID string // the gateway's, when authorized
	Reason          string // why, when declined
	LimitCents      int64  // the limit exceeded, when declined for it
}

// ledger keeps the payments by order id.
type ledger interface {
	// get returns the order's payment, and false when there is none.
	get(ctx context.Context, orderID string) (Payment, bool, error)
	// put records p unless the order has a payment already, and returns
	// the payment recorded: p, or the one that was there.
	put(ctx context.Context, p Payment) (Payment, error)
}

// memoryLedger is the ledger without a database: it lasts as long as the
// process. After a restart the gateway's idempotency key is what keeps an
// order from being charged twice.
type memoryLedger struct {
	mu sync.Mutex
	m  map[string]Payment
}

func newMemoryLedger() *memoryLedger { return &memoryLedger{m: map[string]Payment{}} }

func (l *memoryLedger) get(_ context.Context, orderID string) (Payment, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.m[orderID]
	return p, ok, nil
}

func (l *memoryLedger) put(_ context.Context, p Payment) (Payment, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.m[p.OrderID]; ok {
		return old, nil
	}
	l.m[p.OrderID] = p
	return p, nil
}

// paymentsDDL creates the payments table. The primary key on order_id is
// the business-key check: a second payment for an order cannot be
// inserted.
const paymentsDDL = `CREATE TABLE IF NOT EXISTS payments (
	order_id         text        PRIMARY KEY,
	status           text        NOT NULL CHECK (status IN ('authorized', 'declined')),
	amount_cents     bigint      NOT NULL,
	currency         text        NOT NULL,
	authorization_id text        NOT NULL DEFAULT '',
	reason           text        NOT NULL DEFAULT '',
	limit_cents      bigint      NOT NULL DEFAULT 0,
	decided_at       timestamptz NOT NULL DEFAULT now()
)`

// pgLedger keeps payments in PostgreSQL, written in the transaction of the
// event's idempotency mark (pgstore.Tx): the payment, the mark and the
// events published through the outbox commit together or not at all.
type pgLedger struct{}

// createPaymentsTable creates the table if it is missing. Several
// instances starting at once take turns (CREATE TABLE IF NOT EXISTS is not
// safe against itself running concurrently).
func createPaymentsTable(ctx context.Context, pool *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('choreo example: payments table'))`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, paymentsDDL)
		return err
	})
	if err != nil {
		return fmt.Errorf("create table payments: %w", err)
	}
	return nil
}

// tx returns the handler's transaction; without one the service is wired
// wrongly (a pgLedger needs the pgstore idempotency store).
func (pgLedger) tx(ctx context.Context) (pgx.Tx, error) {
	tx, ok := pgstore.Tx(ctx)
	if !ok {
		return nil, errors.New("payments ledger: no pgstore transaction in the context (is the consumer's store a pgstore.Store?)")
	}
	return tx, nil
}

func (l pgLedger) get(ctx context.Context, orderID string) (Payment, bool, error) {
	tx, err := l.tx(ctx)
	if err != nil {
		return Payment{}, false, err
	}
	p := Payment{OrderID: orderID}
	err = tx.QueryRow(ctx, `SELECT status, amount_cents, currency, authorization_id, reason, limit_cents
		FROM payments WHERE order_id = $1`, orderID).
		Scan(&p.Status, &p.AmountCents, &p.Currency, &p.AuthorizationID, &p.Reason, &p.LimitCents)
	if errors.Is(err, pgx.ErrNoRows) {
		return Payment{}, false, nil
	}
	if err != nil {
		return Payment{}, false, fmt.Errorf("read payment of order %s: %w", orderID, err)
	}
	return p, true, nil
}

func (l pgLedger) put(ctx context.Context, p Payment) (Payment, error) {
	tx, err := l.tx(ctx)
	if err != nil {
		return Payment{}, err
	}
	tag, err := tx.Exec(ctx, `INSERT INTO payments (order_id, status, amount_cents, currency, authorization_id, reason, limit_cents)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id) DO NOTHING`,
		p.OrderID, p.Status, p.AmountCents, p.Currency, p.AuthorizationID, p.Reason, p.LimitCents)
	if err != nil {
		return Payment{}, fmt.Errorf("record payment of order %s: %w", p.OrderID, err)
	}
	if tag.RowsAffected() == 1 {
		return p, nil
	}
	old, ok, err := l.get(ctx, p.OrderID)
	if err != nil {
		return Payment{}, err
	}
	if !ok {
		return Payment{}, fmt.Errorf("record payment of order %s: conflicting row vanished", p.OrderID)
	}
	return old, nil
}
