package idempotency

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Defaults of the in-memory store.
const (
	// DefaultMaxEntries is how many marks a Memory store holds unless
	// WithMaxEntries says otherwise. At around 150 bytes per mark plus the
	// id strings, 100,000 marks take some 20 MB.
	DefaultMaxEntries = 100_000

	// DefaultTTL is how long a Memory store keeps a mark unless WithTTL
	// says otherwise. Marks live in this process only: they cover
	// redeliveries to this process (a retry, a partition coming back
	// after a rebalance), never those after its own restart or to another
	// instance. And DefaultMaxEntries drops the oldest mark first, so a
	// mark lasts a day only below about 1 event a second (100,000 a
	// day); at 100 events a second it lasts some 17 minutes.
	DefaultTTL = 24 * time.Hour
)

// maxFree bounds the entries kept for reuse, so that a burst of expiries
// does not pin memory.
const maxFree = 256

// MemoryOption configures a Memory store.
type MemoryOption func(*Memory)

// WithMaxEntries bounds the number of marks held. When a new mark would
// exceed it, the oldest mark is dropped: a redelivery of that event is then
// handled again. The default is DefaultMaxEntries. WithMaxEntries panics if
// n is less than 1.
func WithMaxEntries(n int) MemoryOption {
	if n < 1 {
		panic(fmt.Sprintf("idempotency: WithMaxEntries(%d): the maximum must be at least 1", n))
	}
	return func(m *Memory) { m.maxEntries = n }
}

// WithTTL sets how long a mark is kept after the event was processed; an
// event redelivered later than that is handled again. A ttl of zero or less
// keeps marks until the WithMaxEntries bound pushes them out. The default is
// DefaultTTL.
func WithTTL(ttl time.Duration) MemoryOption {
	return func(m *Memory) { m.ttl = ttl }
}

// WithClock replaces time.Now as the store's clock, which is how tests make
// marks expire without waiting. now must be safe for concurrent use and
// should not go backwards.
func WithClock(now func() time.Time) MemoryOption {
	if now == nil {
		panic("idempotency: WithClock(nil)")
	}
	return func(m *Memory) { m.now = now }
}

// Memory is an in-memory Store. Its marks live in the process: they are
// lost on restart and not shared with other instances of the service, so it
// narrows duplicates down rather than ruling them out. Use it for tests,
// development, and handlers that are idempotent anyway; use the PostgreSQL
// store (package pgstore) when effects must happen exactly once.
//
// Memory is bounded: it holds at most WithMaxEntries marks (default
// DefaultMaxEntries), dropping the oldest first, and drops marks older than
// WithTTL (default DefaultTTL). Expired marks are dropped as new marks are
// recorded, and are never reported as duplicates.
//
// Create one with NewMemory. A Memory is safe for concurrent use.
type Memory struct {
	maxEntries int
	ttl        time.Duration
	now        func() time.Time     // nil: time.Now
	clock      func() time.Duration // time since base, from now
	base       time.Time

	mu     sync.Mutex
	scopes map[string]map[string]*memEntry // scope → event id → in-flight or processed event
	head   *memEntry                       // oldest processed event
	tail   *memEntry                       // newest processed event
	marks  int                             // processed events, the length of the head…tail list
	free   *memEntry                       // entries kept for reuse, linked through next
	nfree  int
}

var _ Store = (*Memory)(nil)

type memKey struct {
	scope string
	ids   map[string]*memEntry // the scope's map, so removal needs no second lookup
	id    string
}

// memEntry is one event the store knows: either in flight (its handler is
// running) or processed (marked, and linked into the list of marks ordered
// by mark time).
type memEntry struct {
	key       memKey
	processed bool
	at        time.Duration // when it was marked processed, as time since Memory.base

	// wait is made by the first caller that finds the event in flight, and
	// closed when the handler finishes; waiting counts those callers.
	wait    chan struct{}
	waiting int

	prev, next *memEntry
}

// NewMemory returns an in-memory store configured by opts.
func NewMemory(opts ...MemoryOption) *Memory {
	m := &Memory{
		maxEntries: DefaultMaxEntries,
		ttl:        DefaultTTL,
	}
	for _, opt := range opts {
		opt(m)
	}
	// Mark times are kept as durations since base: 8 bytes instead of a
	// time.Time's 24, and with the default clock time.Since reads only
	// the monotonic clock, which is cheaper than time.Now.
	if m.now == nil {
		m.base = time.Now()
		m.clock = func() time.Duration { return time.Since(m.base) }
	} else {
		m.base = m.now()
		m.clock = func() time.Duration { return m.now().Sub(m.base) }
	}
	m.scopes = make(map[string]map[string]*memEntry)
	return m
}

// Process runs fn unless id was already processed in scope, and marks id as
// processed in scope when fn returns nil. See [Store.Process] for the
// contract.
//
// fn runs in the calling goroutine with ctx as given. If ctx is already done
// when Process is called, or ends while Process waits for a concurrent call
// for the same id, Process returns an error wrapping ctx.Err() without
// running fn.
func (m *Memory) Process(ctx context.Context, scope, id string, fn func(ctx context.Context) error) (duplicate bool, err error) {
	if id == "" {
		return false, ErrEmptyID
	}
	k := memKey{scope: scope, id: id}
	for {
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("idempotency: processing event %q in scope %q: %w", id, scope, err)
		}

		m.mu.Lock()
		ids := m.scopes[scope]
		if ids == nil {
			ids = make(map[string]*memEntry)
			m.scopes[scope] = ids
		}
		k.ids = ids
		e := ids[id]
		switch {
		case e == nil:
			// Keep a copy: id may be a slice of a larger string (a record's
			// headers) that the mark would otherwise keep alive for its TTL.
			k.id = strings.Clone(id)
			e = m.alloc(k)
			ids[k.id] = e
		case e.processed:
			if m.ttl <= 0 || !m.expired(e, m.clock()) {
				m.mu.Unlock()
				return true, nil
			}
			// Expired: forget the mark and handle the event again,
			// reusing the entry as the in-flight one.
			m.unlink(e)
			e.processed = false
			e.at = 0
		default:
			// In flight in another call: wait for its outcome, then look
			// again. Success leaves a mark (a duplicate); failure removes
			// the entry, and one of the waiters takes over.
			if e.wait == nil {
				e.wait = make(chan struct{})
			}
			e.waiting++
			wait := e.wait
			m.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				m.mu.Lock()
				if e.wait == wait { // still the same handling: withdraw
					e.waiting--
				}
				m.mu.Unlock()
				return false, fmt.Errorf("idempotency: waiting for a concurrent handling of event %q in scope %q: %w", id, scope, ctx.Err())
			}
			continue
		}
		m.mu.Unlock()
		return false, m.run(ctx, e, fn)
	}
}

// run calls fn for the in-flight entry e and records the outcome, also
// when fn panics.
func (m *Memory) run(ctx context.Context, e *memEntry, fn func(ctx context.Context) error) (err error) {
	ok := false
	defer func() { m.finish(e, ok) }()
	err = fn(ctx)
	ok = err == nil
	return err
}

// finish ends the handling of the in-flight entry e: it marks e processed
// when ok, and forgets it otherwise. Either way it wakes the waiters.
func (m *Memory) finish(e *memEntry, ok bool) {
	var now time.Duration
	if ok {
		now = m.clock()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.wait != nil {
		close(e.wait)
		e.wait = nil
		e.waiting = 0
	}
	if !ok {
		delete(e.key.ids, e.key.id)
		m.release(e)
		return
	}
	e.processed = true
	e.at = now
	m.pushBack(e)
	m.trim(now)
}

// Len returns the number of events currently marked processed (it drops
// expired marks first). In-flight events are not counted.
func (m *Memory) Len() int {
	now := m.clock()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.trim(now)
	return m.marks
}

// trim drops the oldest marks while there are too many, or they expired.
// The list is ordered by mark time, so expired marks are at its head.
func (m *Memory) trim(now time.Duration) {
	for m.head != nil && (m.marks > m.maxEntries || m.expired(m.head, now)) {
		e := m.head
		m.unlink(e)
		delete(e.key.ids, e.key.id)
		m.release(e)
	}
}

func (m *Memory) expired(e *memEntry, now time.Duration) bool {
	return m.ttl > 0 && now-e.at >= m.ttl
}

// alloc returns an unused entry for k, reusing a released one if it can.
func (m *Memory) alloc(k memKey) *memEntry {
	e := m.free
	if e == nil {
		return &memEntry{key: k}
	}
	m.free = e.next
	m.nfree--
	e.next = nil
	e.key = k
	return e
}

// release keeps e for reuse. e must be out of the map and the list.
func (m *Memory) release(e *memEntry) {
	if m.nfree >= maxFree {
		return
	}
	*e = memEntry{next: m.free} // also drops the key strings
	m.free = e
	m.nfree++
}

func (m *Memory) pushBack(e *memEntry) {
	e.prev, e.next = m.tail, nil
	if m.tail != nil {
		m.tail.next = e
	} else {
		m.head = e
	}
	m.tail = e
	m.marks++
}

func (m *Memory) unlink(e *memEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		m.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		m.tail = e.prev
	}
	e.prev, e.next = nil, nil
	m.marks--
}

// waiters reports how many calls wait for the in-flight handling of id in
// scope; tests use it to know that callers are blocked.
func (m *Memory) waiters(scope, id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.scopes[scope][id]; e != nil {
		return e.waiting
	}
	return 0
}
