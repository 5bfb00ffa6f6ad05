package idempotency

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// process calls s.Process with a handler that counts its runs and returns
// fnErr, and fails the test on an unexpected result.
func process(t *testing.T, s Store, scope, id string, fnErr error, wantDup bool) (runs int) {
	t.Helper()
	dup, err := s.Process(context.Background(), scope, id, func(context.Context) error {
		runs++
		return fnErr
	})
	if !errors.Is(err, fnErr) || (fnErr == nil && err != nil) {
		t.Fatalf("Process(%q, %q) error = %v; want %v", scope, id, err, fnErr)
	}
	if dup != wantDup {
		t.Fatalf("Process(%q, %q) duplicate = %t; want %t", scope, id, dup, wantDup)
	}
	wantRuns := 1
	if wantDup {
		wantRuns = 0
	}
	if runs != wantRuns {
		t.Fatalf("Process(%q, %q) ran fn %d times; want %d", scope, id, runs, wantRuns)
	}
	return runs
}

func TestMemoryDuplicateSkipped(t *testing.T) {
	m := NewMemory()
	process(t, m, "billing", "e1", nil, false)
	process(t, m, "billing", "e1", nil, true)
	process(t, m, "billing", "e1", nil, true)

	// Scopes are independent: another group handles the same event too.
	process(t, m, "shipping", "e1", nil, false)
	process(t, m, "shipping", "e1", nil, true)

	// Other ids are not duplicates.
	process(t, m, "billing", "e2", nil, false)

	// A scope/id split does not collide with another one.
	process(t, m, "a", "bc", nil, false)
	process(t, m, "ab", "c", nil, false)

	if got, want := m.Len(), 5; got != want {
		t.Errorf("Len() = %d; want %d", got, want)
	}
}

func TestMemoryFailureNotMarked(t *testing.T) {
	m := NewMemory()
	boom := errors.New("boom")
	process(t, m, "g", "e1", boom, false)
	if got := m.Len(); got != 0 {
		t.Errorf("after a failure, Len() = %d; want 0", got)
	}
	process(t, m, "g", "e1", boom, false) // runs again
	process(t, m, "g", "e1", nil, false)  // runs again, succeeds
	process(t, m, "g", "e1", nil, true)   // now a duplicate

	// The handler's error is returned as it is, so callers can classify it.
	wrapped := fmt.Errorf("decoding order: %w", boom)
	_, err := m.Process(context.Background(), "g", "e2", func(context.Context) error { return wrapped })
	if err != wrapped {
		t.Errorf("Process returned %v; want the handler's error %v unchanged", err, wrapped)
	}
}

func TestMemoryPanicNotMarked(t *testing.T) {
	m := NewMemory()
	func() {
		defer func() {
			if r := recover(); r != "handler panic" {
				t.Errorf("recovered %v; want the handler's panic to propagate", r)
			}
		}()
		_, _ = m.Process(context.Background(), "g", "e1", func(context.Context) error {
			panic("handler panic")
		})
	}()
	process(t, m, "g", "e1", nil, false)
	process(t, m, "g", "e1", nil, true)
}

func TestMemoryEmptyID(t *testing.T) {
	m := NewMemory()
	ran := false
	dup, err := m.Process(context.Background(), "g", "", func(context.Context) error {
		ran = true
		return nil
	})
	if !errors.Is(err, ErrEmptyID) || dup || ran {
		t.Errorf("Process with empty id = (%t, %v), ran %t; want (false, ErrEmptyID), not run", dup, err, ran)
	}
}

func TestMemoryTTL(t *testing.T) {
	clock := newFakeClock()
	m := NewMemory(WithTTL(time.Hour), WithClock(clock.Now))

	process(t, m, "g", "e1", nil, false)
	clock.Advance(30 * time.Minute)
	process(t, m, "g", "e2", nil, false)

	clock.Advance(30*time.Minute - time.Nanosecond)
	process(t, m, "g", "e1", nil, true) // 1h - 1ns old: still marked

	clock.Advance(time.Nanosecond)
	process(t, m, "g", "e2", nil, true)  // 30m old
	process(t, m, "g", "e1", nil, false) // exactly 1h old: expired, runs again
	process(t, m, "g", "e1", nil, true)  // and is marked anew

	clock.Advance(30 * time.Minute)
	if got, want := m.Len(), 1; got != want { // e2 expired, e1 is 30m old
		t.Errorf("Len() = %d; want %d", got, want)
	}
	process(t, m, "g", "e2", nil, false)
	process(t, m, "g", "e1", nil, true)

	// Expired marks are dropped as new ones come in, not only when looked up.
	clock.Advance(2 * time.Hour)
	process(t, m, "g", "e3", nil, false)
	if marks, flights := m.held(); marks != 1 || flights != 0 {
		t.Errorf("after expiry, the store holds %d marks and %d in flight; want 1 and 0", marks, flights)
	}
	checkMemory(t, m)
}

func TestMemoryNoTTL(t *testing.T) {
	clock := newFakeClock()
	m := NewMemory(WithTTL(0), WithClock(clock.Now))
	process(t, m, "g", "e1", nil, false)
	clock.Advance(100 * 365 * 24 * time.Hour)
	process(t, m, "g", "e1", nil, true)
}

// TestMemoryBound checks the entries bound through the API: the store
// forgets in generations of maxEntries/2 marks, so after 3×maxEntries new
// ids the first is forgotten, the last maxEntries/2 are all remembered, and
// the store holds between maxEntries/2 and maxEntries marks.
func TestMemoryBound(t *testing.T) {
	const n = 10
	m := NewMemory(WithMaxEntries(n))
	for i := range 3 * n {
		process(t, m, "g", strconv.Itoa(i), nil, false)
		if got := m.Len(); got > n || got < min(i+1, n/2) {
			t.Fatalf("after %d marks, Len() = %d; want %d to %d", i+1, got, min(i+1, n/2), n)
		}
	}
	for i := 3*n - n/2; i < 3*n; i++ {
		process(t, m, "g", strconv.Itoa(i), nil, true)
	}
	process(t, m, "g", "0", nil, false) // forgotten: handled again

	// Failures do not take room.
	before := m.Len()
	for i := range 10 {
		process(t, m, "g", "fail"+strconv.Itoa(i), errors.New("x"), false)
	}
	if got := m.Len(); got != before {
		t.Errorf("after failures, Len() = %d; want %d", got, before)
	}
	if _, flights := m.held(); flights != 0 {
		t.Errorf("after failures, %d events are in flight; want 0", flights)
	}
	checkMemory(t, m)
}

// TestMemoryBoundOne checks the smallest bound: only the latest mark.
func TestMemoryBoundOne(t *testing.T) {
	m := NewMemory(WithMaxEntries(1))
	process(t, m, "g", "a", nil, false)
	process(t, m, "g", "a", nil, true)
	process(t, m, "h", "b", nil, false)
	process(t, m, "h", "b", nil, true)
	process(t, m, "g", "a", nil, false)
	if got := m.Len(); got != 1 {
		t.Errorf("Len() = %d; want 1", got)
	}
	checkMemory(t, m)
}

func TestMemoryOptionPanics(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  func() MemoryOption
	}{
		{"WithMaxEntries(0)", func() MemoryOption { return WithMaxEntries(0) }},
		{"WithMaxEntries(-1)", func() MemoryOption { return WithMaxEntries(-1) }},
		{"WithClock(nil)", func() MemoryOption { return WithClock(nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", tc.name)
				}
			}()
			tc.opt()
		})
	}
}

// waitForWaiters blocks until n calls wait for the in-flight handling of id.
func waitForWaiters(t *testing.T, m *Memory, scope, id string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for m.waiters(scope, id) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls wait for %q; want %d", m.waiters(scope, id), id, n)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// TestMemoryConcurrentSameID starts one handling that blocks, lets many
// callers queue up behind it for the same id, and checks that they become
// duplicates when it succeeds.
func TestMemoryConcurrentSameID(t *testing.T) {
	const callers = 50
	m := NewMemory()
	var runs atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{})

	var firstDup bool
	var firstErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		firstDup, firstErr = m.Process(context.Background(), "g", "e1", func(context.Context) error {
			runs.Add(1)
			close(started)
			<-release
			return nil
		})
	})
	<-started

	var dups atomic.Int32
	for range callers {
		wg.Go(func() {
			dup, err := m.Process(context.Background(), "g", "e1", func(context.Context) error {
				runs.Add(1)
				return nil
			})
			if err != nil {
				t.Errorf("Process: %v", err)
			}
			if dup {
				dups.Add(1)
			}
		})
	}
	waitForWaiters(t, m, "g", "e1", callers)
	close(release)
	wg.Wait()

	if firstDup || firstErr != nil {
		t.Errorf("first Process = (%t, %v); want (false, nil)", firstDup, firstErr)
	}
	if got := runs.Load(); got != 1 {
		t.Errorf("fn ran %d times; want 1", got)
	}
	if got := dups.Load(); got != callers {
		t.Errorf("%d callers saw a duplicate; want %d", got, callers)
	}
}

// TestMemoryConcurrentFailure checks that when the in-flight handling
// fails, exactly one waiter takes over, and the rest are duplicates of it.
func TestMemoryConcurrentFailure(t *testing.T) {
	const callers = 20
	m := NewMemory()
	release := make(chan struct{})
	started := make(chan struct{})
	boom := errors.New("boom")

	var wg sync.WaitGroup
	var firstErr error
	wg.Go(func() {
		_, firstErr = m.Process(context.Background(), "g", "e1", func(context.Context) error {
			close(started)
			<-release
			return boom
		})
	})
	<-started

	var runs, dups atomic.Int32
	for range callers {
		wg.Go(func() {
			dup, err := m.Process(context.Background(), "g", "e1", func(context.Context) error {
				runs.Add(1)
				return nil
			})
			if err != nil {
				t.Errorf("Process: %v", err)
			}
			if dup {
				dups.Add(1)
			}
		})
	}
	waitForWaiters(t, m, "g", "e1", callers)
	close(release)
	wg.Wait()

	if firstErr != boom {
		t.Errorf("first Process error = %v; want %v", firstErr, boom)
	}
	if got := runs.Load(); got != 1 {
		t.Errorf("after the first handling failed, fn ran %d times; want 1", got)
	}
	if got := dups.Load(); got != callers-1 {
		t.Errorf("%d callers saw a duplicate; want %d", got, callers-1)
	}
}

// TestMemoryConcurrentMany hammers the store from many goroutines with
// overlapping ids and random failures (run it with -race). Every id must
// end up handled successfully exactly once, however often it was tried.
func TestMemoryConcurrentMany(t *testing.T) {
	const (
		goroutines = 16
		ids        = 500
		rounds     = 4
	)
	// Room for two full generations of ids: none is forgotten, so
	// duplicates must all be caught.
	m := NewMemory(WithMaxEntries(2 * ids))
	var succeeded [ids]atomic.Int32
	var inFlight [ids]atomic.Int32
	var attempts atomic.Int64

	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for r := range rounds {
				for i := range ids {
					i := (i + g*31) % ids // start at different places
					fail := (i+g+r)%3 == 0
					_, err := m.Process(context.Background(), "g", strconv.Itoa(i), func(context.Context) error {
						attempts.Add(1)
						if n := inFlight[i].Add(1); n != 1 {
							t.Errorf("id %d: %d handlings at once; want 1", i, n)
						}
						defer inFlight[i].Add(-1)
						if fail {
							return errors.New("transient")
						}
						succeeded[i].Add(1)
						return nil
					})
					if err != nil && fail != (err.Error() == "transient") {
						t.Errorf("id %d: unexpected error %v", i, err)
					}
				}
			}
		})
	}
	wg.Wait()
	for i := range ids {
		if got := succeeded[i].Load(); got != 1 {
			t.Errorf("id %d handled successfully %d times; want 1", i, got)
		}
	}
	if got := m.Len(); got != ids {
		t.Errorf("Len() = %d; want %d", got, ids)
	}
	checkMemory(t, m)
	t.Logf("%d handler runs for %d ids", attempts.Load(), ids)
}

func TestMemoryContextCanceled(t *testing.T) {
	m := NewMemory()

	t.Run("before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		ran := false
		dup, err := m.Process(ctx, "g", "e1", func(context.Context) error {
			ran = true
			return nil
		})
		if !errors.Is(err, context.Canceled) || dup || ran {
			t.Errorf("Process with a canceled context = (%t, %v), ran %t; want (false, context.Canceled), not run", dup, err, ran)
		}
		process(t, m, "g", "e1", nil, false) // nothing was recorded
	})

	t.Run("while waiting", func(t *testing.T) {
		release := make(chan struct{})
		started := make(chan struct{})
		var wg sync.WaitGroup
		var firstDup bool
		var firstErr error
		wg.Go(func() {
			firstDup, firstErr = m.Process(context.Background(), "g", "e2", func(context.Context) error {
				close(started)
				<-release
				return nil
			})
		})
		<-started

		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		ran := false
		go func() {
			_, err := m.Process(ctx, "g", "e2", func(context.Context) error {
				ran = true
				return nil
			})
			errc <- err
		}()
		waitForWaiters(t, m, "g", "e2", 1)
		cancel()
		err := <-errc
		if !errors.Is(err, context.Canceled) || ran {
			t.Errorf("canceled waiter: Process error = %v, ran %t; want context.Canceled, not run", err, ran)
		}
		if got := m.waiters("g", "e2"); got != 0 {
			t.Errorf("after the waiter left, waiters = %d; want 0", got)
		}

		// The in-flight handling is not disturbed.
		close(release)
		wg.Wait()
		if firstDup || firstErr != nil {
			t.Errorf("first Process = (%t, %v); want (false, nil)", firstDup, firstErr)
		}
		process(t, m, "g", "e2", nil, true)
	})

	t.Run("passed to fn", func(t *testing.T) {
		type ctxKey struct{}
		ctx := context.WithValue(context.Background(), ctxKey{}, "v")
		var got any
		_, err := m.Process(ctx, "g", "e3", func(ctx context.Context) error {
			got = ctx.Value(ctxKey{})
			return nil
		})
		if err != nil || got != "v" {
			t.Errorf("fn saw context value %v (err %v); want v", got, err)
		}
	})
}

// TestMemoryReuse checks that reused in-flight records carry nothing over,
// and that the bookkeeping stays consistent through many generations.
func TestMemoryReuse(t *testing.T) {
	m := NewMemory(WithMaxEntries(2))
	for i := range 1000 {
		id := strconv.Itoa(i)
		if i%2 == 0 {
			process(t, m, "g", id, errors.New("x"), false)
		}
		process(t, m, "g", id, nil, false)
		process(t, m, "g", id, nil, true)
		if i > 0 {
			process(t, m, "g", strconv.Itoa(i-1), nil, true) // a generation of 1: i-1 is in the previous one
		}
		checkMemory(t, m)
	}
	if got := m.Len(); got != 2 {
		t.Errorf("Len() = %d; want 2", got)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.free) == 0 {
		t.Error("no in-flight record was kept for reuse")
	}
	for _, f := range m.free {
		if *f != (memFlight{}) {
			t.Errorf("a released in-flight record holds %+v", *f)
		}
	}
}

// held counts the marks and the in-flight events of every scope.
func (m *Memory) held() (marks, flights int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, sc := range m.scopes {
		marks += len(sc.cur) + len(sc.prev)
		flights += len(sc.flight)
	}
	return marks, flights
}

// remembered reports whether id has a mark in scope that Process would
// report as a duplicate, without recording anything.
func (m *Memory) remembered(scope, id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	sc := m.scopes[scope]
	return sc != nil && m.marked(sc, id)
}

// checkMemory checks the store's bookkeeping while no call is in progress.
func checkMemory(t *testing.T, m *Memory) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, prev := 0, 0
	for name, sc := range m.scopes {
		if sc.name != name {
			t.Errorf("scope %q is filed under %q", sc.name, name)
		}
		if len(sc.flight) != 0 {
			t.Errorf("scope %q: %d events in flight; want 0", name, len(sc.flight))
		}
		for id := range sc.cur {
			if _, ok := sc.prev[id]; ok {
				t.Errorf("scope %q: %q is in both generations", name, id)
			}
		}
		cur += len(sc.cur)
		prev += len(sc.prev)
	}
	if cur != m.curLen || prev != m.prevLen {
		t.Errorf("generations hold %d and %d marks; counted %d and %d", cur, prev, m.curLen, m.prevLen)
	}
	if m.curLen > m.genCap || m.prevLen > m.genCap || m.curLen+m.prevLen > m.maxEntries {
		t.Errorf("generations hold %d and %d marks; want at most %d each and %d together", m.curLen, m.prevLen, m.genCap, m.maxEntries)
	}
	if len(m.free) > maxFree {
		t.Errorf("%d in-flight records kept for reuse; want at most %d", len(m.free), maxFree)
	}
}
