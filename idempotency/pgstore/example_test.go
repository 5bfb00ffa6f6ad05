package pgstore_test

import (
	"context"
	"errors"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/choreokit/choreo/idempotency/pgstore"
)

// A payment service records each payment exactly once, however often Kafka
// delivers the OrderPlaced event: the payments row and the event's mark
// commit in one transaction.
func ExampleNew() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	store, err := pgstore.New(ctx, pool,
		pgstore.WithTable("payment_processed_events"),
		pgstore.WithPruning(time.Hour, 7*24*time.Hour), // keep marks a week
	)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	// In a service, the consumer runtime makes this call for each record,
	// with the consumer group as scope and the ce_id header as id.
	eventID, orderID := "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "order-42"
	duplicate, err := store.Process(ctx, "payment-service", eventID, func(ctx context.Context) error {
		tx, ok := pgstore.Tx(ctx)
		if !ok {
			return errors.New("no transaction")
		}
		_, err := tx.Exec(ctx, "INSERT INTO payments (order_id, amount_cents) VALUES ($1, $2)", orderID, 4200)
		return err
	})
	switch {
	case err != nil:
		log.Printf("payment for %s not recorded; the event will be redelivered: %v", orderID, err)
	case duplicate:
		log.Printf("event %s was already handled; skipped", eventID)
	default:
		log.Printf("payment for %s recorded", orderID)
	}
}
