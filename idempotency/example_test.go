package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/choreokit/choreo/idempotency"
)

func ExampleNewMemory() {
	store := idempotency.NewMemory(
		idempotency.WithMaxEntries(10_000),
		idempotency.WithTTL(time.Hour),
	)
	ctx := context.Background()

	handle := func(ctx context.Context) error {
		fmt.Println("charging the card for order 42")
		return nil
	}

	// The event is delivered twice (a rebalance, say); it is handled once.
	for range 2 {
		duplicate, err := store.Process(ctx, "payment-service", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", handle)
		if err != nil {
			fmt.Println("not handled:", err)
			continue
		}
		if duplicate {
			fmt.Println("duplicate skipped")
		}
	}

	// A failed handling is not recorded: the redelivery runs the handler again.
	attempts := 0
	flaky := func(ctx context.Context) error {
		attempts++
		if attempts == 1 {
			return errors.New("bank unavailable")
		}
		fmt.Println("refunded on attempt", attempts)
		return nil
	}
	for range 3 {
		duplicate, err := store.Process(ctx, "payment-service", "0190a1b2-c3d4-7e5f-8a9b-ffffffffffff", flaky)
		fmt.Println("duplicate:", duplicate, "error:", err)
	}

	// Output:
	// charging the card for order 42
	// duplicate skipped
	// duplicate: false error: bank unavailable
	// refunded on attempt 2
	// duplicate: false error: <nil>
	// duplicate: true error: <nil>
}
