// Package idempotency remembers which events a consumer group has already
// processed, so that a redelivered event is skipped instead of handled twice.
//
// Kafka delivers at least once: after a rebalance, a crash or a failed
// commit, a consumer sees again records it may already have handled. A Store
// turns that into effectively-once handling. The consumer runtime calls
// [Store.Process] with the event's id (the ce_id header) and the consumer
// group as scope; the store runs the handler unless that id was already
// processed in that scope.
//
// # Mark after success, never before
//
// A store records an event as processed only after its handler returned nil.
// When the handler fails (or panics), nothing is recorded and a redelivery
// runs the handler again. Marking before handling would make a failed event
// look processed, and its redelivery would be skipped: the event would be
// lost. No Store in this package does that.
//
// Between a successful handler and the mark there is still a window: a crash
// there means the handler ran but the mark was not recorded, so the
// redelivered event runs the handler again. With the in-memory store the
// window also includes every restart, since marks live in memory. The
// PostgreSQL store in the sub-package [github.com/choreokit/choreo/idempotency/pgstore]
// closes the window for handlers whose effects are database writes: the
// handler writes through the same transaction that records the mark, so both
// commit or neither does, and the effects happen exactly once.
//
// # Concurrency
//
// Two concurrent Process calls for the same scope and id never both run
// their handler. The second waits for the first's outcome: if the first
// succeeded, the second is a duplicate; if it failed, the second runs its
// handler. Calls for different ids do not wait for each other.
//
// # Stores
//
//   - [NewMemory]: in process, bounded in entries, with a time to live on
//     marks. Fast; good for tests, for development and for handlers that
//     are naturally idempotent and only want to save work.
//   - pgstore.New: durable, shared by every instance of a service, and
//     transactional with the handler's own writes.
package idempotency

import (
	"context"
	"errors"
)

// Store remembers which events a consumer group has processed.
//
// Implementations are safe for concurrent use by multiple goroutines.
type Store interface {
	// Process runs fn unless the event id was already processed in scope.
	// The scope is the consumer group: the same event is processed once by
	// each group that consumes it.
	//
	// Process records id as processed only when fn returns nil. When fn
	// fails or panics, nothing is recorded, so a redelivery runs fn again.
	// A panic in fn propagates to the caller after the store has cleaned up.
	//
	// duplicate is true, and err nil, when fn was skipped because id was
	// already processed. Otherwise err is fn's error unchanged, or an error
	// of the store itself (it could not check or record the mark, or ctx
	// ended while waiting for a concurrent call for the same id). In every
	// case where err is non-nil, the event is not recorded as processed and
	// the caller should treat it as not handled.
	//
	// Concurrent calls for the same scope and id do not both run fn: the
	// later one waits for the earlier one's outcome. An empty id is
	// rejected with ErrEmptyID, since it would make unrelated events look
	// like duplicates of each other.
	Process(ctx context.Context, scope, id string, fn func(ctx context.Context) error) (duplicate bool, err error)
}

// ErrEmptyID is returned by Process when the event id is empty. Events
// without an id cannot be deduplicated; the consumer runtime dead-letters
// them as missing the ce_id header before they reach a store.
var ErrEmptyID = errors.New("idempotency: empty event id")
