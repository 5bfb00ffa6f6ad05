package idempotency

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Defaults of the in-memory store.
const (
	// DefaultMaxEntries bounds the marks a Memory store holds unless
	// WithMaxEntries says otherwise. The store forgets in generations of
	// DefaultMaxEntries/2 marks (see Memory): once 100,000 events have
	// been processed it holds between 50,000 and 100,000 marks (fewer
	// once marks are half the TTL old), and a mark is remembered while at
	// most 50,000 newer ones have been recorded (and it is less than half
	// the TTL old). At some 35 bytes per mark plus a copy of its id (36
	// bytes for a UUID), 100,000 marks take some 7 MB.
	DefaultMaxEntries = 100_000

	// DefaultTTL is how long a Memory store may keep a mark unless WithTTL
	// says otherwise: a mark is never reported once it is DefaultTTL old,
	// and is reported for at least the first DefaultTTL/2 (12 hours) unless
	// DefaultMaxEntries pushes it out first (see Memory). Marks live in
	// this process only: they cover redeliveries to this process (a retry,
	// a partition coming back after a rebalance), never those after its
	// own restart or to another instance. And the entries bound usually
	// comes first: a mark is sure to last 12 hours only below about 1 event
	// a second (50,000 in 12 hours); at 100 events a second it is sure to
	// last some 8 minutes (50,000 events), and lasts at most some 17
	// (100,000 events).
	DefaultTTL = 24 * time.Hour
)

// arenaChunk is the size of the blocks that copies of marked ids are
// carved from; ids longer than arenaMaxID are copied on their own.
const (
	arenaChunk = 16 << 10
	arenaMaxID = 256
)

// maxFree bounds the in-flight records kept for reuse.
const maxFree = 64

// MemoryOption configures a Memory store.
type MemoryOption func(*Memory)

// WithMaxEntries bounds the number of marks held to n. The store forgets
// in generations of n/2 marks (see Memory): a mark is remembered while at
// most n/2 (rounded down) newer marks have been recorded, and forgotten by
// the time n newer marks have been; a redelivery of a forgotten event is
// handled again. The default is DefaultMaxEntries. WithMaxEntries panics if
// n is less than 1.
func WithMaxEntries(n int) MemoryOption {
	if n < 1 {
		panic(fmt.Sprintf("idempotency: WithMaxEntries(%d): the maximum must be at least 1", n))
	}
	return func(m *Memory) { m.maxEntries = n }
}

// WithTTL sets how long a mark may be kept after the event was processed.
// A mark is never reported as a duplicate once it is ttl old, and is
// reported for at least the first ttl/2 unless the WithMaxEntries bound
// pushes it out first; in between, it depends on when its generation
// started (see Memory). A ttl of zero or less keeps marks until the
// WithMaxEntries bound pushes them out. The default is DefaultTTL.
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
// # Forgetting in generations
//
// Memory is bounded, in marks (WithMaxEntries, default DefaultMaxEntries;
// call it n) and in time (WithTTL, default DefaultTTL). It does not drop
// marks one at a time, oldest first: it keeps two generations of marks, the
// current one, where new marks go, and the previous one. When the current
// generation holds n/2 marks (rounded down, at least 1), or its first mark
// is ttl/2 old (rounded up), the next mark starts a new generation: the
// previous generation is dropped whole and the current one becomes the
// previous one. A generation is also dropped once its first mark is ttl
// old. Precisely, for a mark recorded at time t:
//
//   - a redelivery is reported as a duplicate as long as at most n/2
//     (rounded down) newer marks have been recorded in the store (in any
//     scope) and less than ttl/2 has passed since t;
//   - the mark is forgotten by the time n newer marks have been recorded,
//     and a redelivery at t+ttl or later is never reported as a duplicate
//     (the generation's first mark is at least as old as this one);
//   - in between, whether a redelivery is caught depends on where in its
//     generation the mark fell and on when the next generations started.
//
// So the store holds at most n marks (with n = 1, only the latest one), and
// at least those of the latest n/2 marks that are less than ttl/2 old. This
// is looser than dropping exactly the oldest mark, and exactly the marks
// that are ttl old, as earlier versions did, and much cheaper: no per-mark
// bookkeeping, no delete per new mark, no allocation per mark (the ids are
// copied into shared blocks). Starting a generation clears the map of the
// dropped one for reuse: a pause of some 0.2 ms under the store's lock at
// the default bound, once per 50,000 marks. Expired generations are dropped
// as new marks are recorded, and by Len. In-flight events (whose handler is
// running) are kept apart and are never dropped.
//
// The ttl is measured with the store's clock (see WithClock) from the time
// each mark is recorded, after its handler returned.
//
// Create one with NewMemory. A Memory is safe for concurrent use.
type Memory struct {
	maxEntries int
	ttl        time.Duration
	now        func() time.Time     // nil: time.Now
	clock      func() time.Duration // time since base, from now
	base       time.Time
	genCap     int           // marks per generation: maxEntries/2, at least 1
	half       time.Duration // the age of its first mark at which a generation is full: ttl/2 rounded up

	mu     sync.Mutex
	scopes map[string]*memScope

	// The generations: how many marks each holds in all scopes together,
	// and when its first mark was recorded (time since base; only
	// meaningful when it holds marks).
	curLen, prevLen     int
	curFirst, prevFirst time.Duration

	// arena is the block the copies of marked ids are carved from; see keep.
	arena []byte

	free []*memFlight // released in-flight records, for reuse
}

var _ Store = (*Memory)(nil)

// memScope holds one scope's events: its share of the two generations of
// marks, and the events in flight.
type memScope struct {
	name   string
	cur    map[string]struct{} // marks of the current generation
	prev   map[string]struct{} // marks of the previous generation
	flight map[string]*memFlight
}

// memFlight is an event whose handler is running.
type memFlight struct {
	scope *memScope

	// wait is made by the first caller that finds the event in flight, and
	// closed when the handler finishes; waiting counts those callers.
	wait    chan struct{}
	waiting int
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
	m.genCap = max(1, m.maxEntries/2)
	if m.ttl > 0 {
		m.half = m.ttl - m.ttl/2
	}
	// Times are kept as durations since base; with the default clock
	// time.Since reads only the monotonic clock, which is cheaper than
	// time.Now.
	if m.now == nil {
		m.base = time.Now()
		m.clock = func() time.Duration { return time.Since(m.base) }
	} else {
		m.base = m.now()
		m.clock = func() time.Duration { return m.now().Sub(m.base) }
	}
	m.scopes = make(map[string]*memScope)
	return m
}

// Process runs fn unless id was already processed in scope, and marks id as
// processed in scope when fn returns nil. See [Store.Process] for the
// contract, and [Memory] for how long marks are kept.
//
// fn runs in the calling goroutine with ctx as given. If ctx is already done
// when Process is called, or ends while Process waits for a concurrent call
// for the same id, Process returns an error wrapping ctx.Err() without
// running fn.
func (m *Memory) Process(ctx context.Context, scope, id string, fn func(ctx context.Context) error) (duplicate bool, err error) {
	if id == "" {
		return false, ErrEmptyID
	}
	for {
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("idempotency: processing event %q in scope %q: %w", id, scope, err)
		}

		m.mu.Lock()
		sc := m.scopes[scope]
		if sc == nil {
			sc = &memScope{name: strings.Clone(scope), flight: make(map[string]*memFlight)}
			m.scopes[sc.name] = sc
		} else if m.marked(sc, id) {
			m.mu.Unlock()
			return true, nil
		}
		f := sc.flight[id]
		if f == nil {
			// id is the caller's string: it stays valid while the call
			// lasts, and the flight entry lasts no longer.
			f = m.allocFlight(sc)
			sc.flight[id] = f
			m.mu.Unlock()
			return false, m.run(ctx, f, id, fn)
		}

		// In flight in another call: wait for its outcome, then look again.
		// Success leaves a mark (a duplicate); failure removes the flight
		// entry, and one of the waiters takes over.
		if f.wait == nil {
			f.wait = make(chan struct{})
		}
		f.waiting++
		wait := f.wait
		m.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			m.mu.Lock()
			if f.wait == wait { // still the same handling: withdraw
				f.waiting--
			}
			m.mu.Unlock()
			return false, fmt.Errorf("idempotency: waiting for a concurrent handling of event %q in scope %q: %w", id, scope, ctx.Err())
		}
	}
}

// marked reports whether id has a mark in sc that has not expired. The
// caller holds m.mu.
func (m *Memory) marked(sc *memScope, id string) bool {
	if _, ok := sc.cur[id]; ok {
		return m.fresh(m.curFirst)
	}
	if _, ok := sc.prev[id]; ok {
		return m.fresh(m.prevFirst)
	}
	return false
}

// fresh reports whether a generation whose first mark was recorded at first
// has not expired.
func (m *Memory) fresh(first time.Duration) bool {
	return m.ttl <= 0 || m.clock()-first < m.ttl
}

// run calls fn for the in-flight event f, id and records the outcome, also
// when fn panics or calls runtime.Goexit.
func (m *Memory) run(ctx context.Context, f *memFlight, id string, fn func(ctx context.Context) error) (err error) {
	ok := false
	defer func() { m.finish(f, id, ok) }()
	err = fn(ctx)
	ok = err == nil
	return err
}

// finish ends the handling of the in-flight event f, id: it marks id
// processed when ok, and forgets it otherwise. Either way it wakes the
// waiters.
func (m *Memory) finish(f *memFlight, id string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sc := f.scope
	if ok {
		// Before the flight entry goes: a scope with one is not dropped
		// by a new generation.
		m.record(sc, id)
	}
	if f.wait != nil {
		close(f.wait)
	}
	delete(sc.flight, id)
	m.releaseFlight(f)
}

// record marks id in sc, starting a new generation first if the current one
// is full. The caller holds m.mu.
func (m *Memory) record(sc *memScope, id string) {
	var now time.Duration
	if m.ttl > 0 {
		// Read under the lock, so that the marks of a generation are
		// recorded no earlier than its first.
		now = m.clock()
		m.expire(now)
	}
	if m.curLen >= m.genCap || (m.ttl > 0 && m.curLen > 0 && now-m.curFirst >= m.half) {
		m.rotate()
	}
	if m.curLen == 0 {
		m.curFirst = now
	}
	if sc.cur == nil {
		sc.cur = make(map[string]struct{})
	}
	sc.cur[m.keep(id)] = struct{}{}
	m.curLen++
}

// expire drops the generations whose first mark is ttl old. The caller
// holds m.mu.
func (m *Memory) expire(now time.Duration) {
	if m.ttl <= 0 {
		return
	}
	dropPrev := m.prevLen > 0 && now-m.prevFirst >= m.ttl
	dropCur := m.curLen > 0 && now-m.curFirst >= m.ttl // then the previous one too
	if !dropPrev && !dropCur {
		return
	}
	// Traffic is slow, or stopped: let the maps go rather than keep their
	// room for the next generation.
	for name, sc := range m.scopes {
		sc.prev = nil
		if dropCur {
			sc.cur = nil
		}
		m.dropIfEmpty(name, sc)
	}
	m.prevLen = 0
	if dropCur {
		m.curLen = 0
	}
}

// rotate drops the previous generation and makes the current one the
// previous one. The caller holds m.mu.
func (m *Memory) rotate() {
	// With maxEntries 1 two generations would hold 2 marks: drop both.
	keep := m.curLen+m.genCap <= m.maxEntries
	for name, sc := range m.scopes {
		// Reuse the dropped generation's map, which has the room for the
		// new one: clearing it costs about as much as inserting into it
		// did, and saves growing a new map.
		old := sc.prev
		clear(old)
		if keep {
			sc.prev, sc.cur = sc.cur, old
		} else {
			clear(sc.cur)
		}
		m.dropIfEmpty(name, sc)
	}
	if keep {
		m.prevLen, m.prevFirst = m.curLen, m.curFirst
	} else {
		m.prevLen = 0
	}
	m.curLen = 0
}

// dropIfEmpty forgets scope sc (named name) when it holds neither marks nor
// events in flight. The caller holds m.mu.
func (m *Memory) dropIfEmpty(name string, sc *memScope) {
	if len(sc.cur) == 0 && len(sc.prev) == 0 && len(sc.flight) == 0 {
		delete(m.scopes, name)
	}
}

// keep returns a copy of id for a mark. id may be a slice of a larger
// string (a record's headers) that the mark would otherwise keep alive.
// Short ids are copied into a shared block, which saves an allocation per
// mark: the bytes of a block are never written again once an id is in it,
// and a block is freed once the marks in it are dropped, which happens in
// the order they were recorded.
func (m *Memory) keep(id string) string {
	if len(id) > arenaMaxID {
		return strings.Clone(id)
	}
	if cap(m.arena)-len(m.arena) < len(id) {
		m.arena = make([]byte, 0, arenaChunk)
	}
	start := len(m.arena)
	m.arena = append(m.arena, id...)
	return unsafe.String(&m.arena[start], len(id))
}

// Len returns the number of events currently marked processed (it drops
// expired generations first). In-flight events are not counted.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ttl > 0 {
		m.expire(m.clock())
	}
	return m.curLen + m.prevLen
}

// allocFlight returns an unused in-flight record for sc. The caller holds
// m.mu.
func (m *Memory) allocFlight(sc *memScope) *memFlight {
	if n := len(m.free); n > 0 {
		f := m.free[n-1]
		m.free = m.free[:n-1]
		f.scope = sc
		return f
	}
	return &memFlight{scope: sc}
}

// releaseFlight keeps f for reuse. The caller holds m.mu.
func (m *Memory) releaseFlight(f *memFlight) {
	*f = memFlight{}
	if len(m.free) < maxFree {
		m.free = append(m.free, f)
	}
}

// waiters reports how many calls wait for the in-flight handling of id in
// scope; tests use it to know that callers are blocked.
func (m *Memory) waiters(scope, id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sc := m.scopes[scope]; sc != nil {
		if f := sc.flight[id]; f != nil {
			return f.waiting
		}
	}
	return 0
}
