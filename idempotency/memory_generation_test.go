package idempotency

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// TestMemoryGuarantee drives stores of many sizes and time to live with a
// random mix of new events, redeliveries, failures and clock steps, and
// checks every mark against the guarantee Memory documents. For a mark
// with k newer marks recorded since (in any scope) and age a:
//
//   - if k <= n/2 and (no ttl or a < ttl/2), it must be reported;
//   - if k >= n, or a >= ttl with a ttl, it must not be;
//   - in between, either.
//
// It also checks that Len counts no more than the marks that may be held
// and no fewer than those that must be.
func TestMemoryGuarantee(t *testing.T) {
	for _, tc := range []struct {
		n   int
		ttl time.Duration
	}{
		{1, 0}, {2, 0}, {3, 0}, {4, 0}, {7, 0}, {10, 0}, {64, 0},
		{1, 5}, {5, 1}, {5, 2}, {10, 7}, {64, 7}, {64, 100}, {1000, 100}, {1000, 0},
	} {
		t.Run(fmt.Sprintf("n=%d/ttl=%d", tc.n, tc.ttl), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.n), uint64(tc.ttl)))
			clock := newFakeClock()
			m := NewMemory(WithMaxEntries(tc.n), WithTTL(tc.ttl), WithClock(clock.Now))
			maxStep := int64(3)
			if tc.ttl > 0 {
				maxStep = int64(tc.ttl)/4 + 1
			}

			type key struct{ scope, id string }
			type mark struct {
				seq int       // marks recorded before it
				at  time.Time // when it was recorded
			}
			marks := map[key]mark{}
			var order []key // keys in the order of their latest mark, with repeats
			seq := 0
			ids := 0
			newKey := func() key {
				ids++
				id := strconv.Itoa(ids) + "-"
				// Lengths up to 300 bytes: some ids are copied on their own.
				id += strings.Repeat("x", rng.IntN(300))
				return key{scope: []string{"a", "b", "c"}[rng.IntN(3)], id: id}
			}
			must := func(k key) (remember, forget bool) {
				mk, ok := marks[k]
				if !ok {
					return false, true
				}
				newer := seq - mk.seq - 1
				age := clock.Now().Sub(mk.at)
				remember = newer <= tc.n/2 && (tc.ttl <= 0 || 2*age < tc.ttl)
				forget = newer >= tc.n || (tc.ttl > 0 && age >= tc.ttl)
				return remember, forget
			}
			check := func(step int) {
				t.Helper()
				mustHold, mayHold := 0, 0
				seen := map[key]bool{}
				for i := len(order) - 1; i >= 0 && i >= len(order)-2*tc.n-10; i-- {
					k := order[i]
					if seen[k] {
						continue
					}
					seen[k] = true
					remember, forget := must(k)
					got := m.remembered(k.scope, k.id)
					if remember && !got || forget && got {
						mk := marks[k]
						t.Fatalf("step %d: %v (%d newer marks, %v old) remembered = %t; want %t",
							step, k.id[:strings.IndexByte(k.id, '-')], seq-mk.seq-1, clock.Now().Sub(mk.at), got, remember)
					}
					if remember {
						mustHold++
					}
					if !forget {
						mayHold++
					}
				}
				if n := m.Len(); n < mustHold || n > mayHold {
					t.Fatalf("step %d: Len() = %d; want %d to %d", step, n, mustHold, mayHold)
				}
				checkMemory(t, m)
			}

			for step := range 3000 {
				switch r := rng.IntN(10); {
				case r < 2:
					clock.Advance(time.Duration(rng.Int64N(maxStep)))
				case r < 8 || len(order) == 0:
					k := newKey()
					fail := rng.IntN(8) == 0
					var fnErr error
					if fail {
						fnErr = errors.New("x")
					}
					process(t, m, k.scope, k.id, fnErr, false)
					if !fail {
						marks[k] = mark{seq: seq, at: clock.Now()}
						order = append(order, k)
						seq++
					}
				default: // redeliver a recent event
					k := order[max(0, len(order)-1-rng.IntN(2*tc.n+2))]
					remember, forget := must(k)
					dup, err := m.Process(context.Background(), k.scope, k.id, func(context.Context) error { return nil })
					if err != nil || remember && !dup || forget && dup {
						t.Fatalf("step %d: redelivery = (%t, %v); must be remembered %t, forgotten %t", step, dup, err, remember, forget)
					}
					if !dup {
						marks[k] = mark{seq: seq, at: clock.Now()}
						order = append(order, k)
						seq++
					}
				}
				if tc.n <= 64 || step%20 == 0 {
					check(step)
				}
			}
		})
	}
}

// TestMemoryInFlightSurvivesGenerations checks that an event in flight is
// not dropped with a generation, nor with its scope: a concurrent call for
// it still waits, however many generations and expiries pass meanwhile.
func TestMemoryInFlightSurvivesGenerations(t *testing.T) {
	const n = 10
	clock := newFakeClock()
	m := NewMemory(WithMaxEntries(n), WithTTL(time.Hour), WithClock(clock.Now))
	release := make(chan struct{})
	started := make(chan struct{})
	var wg sync.WaitGroup
	var firstErr error
	wg.Go(func() {
		// The only event of its scope.
		_, firstErr = m.Process(context.Background(), "lonely", "x", func(context.Context) error {
			close(started)
			<-release
			return nil
		})
	})
	<-started

	for i := range 5 * n {
		if i%7 == 3 {
			clock.Advance(2 * time.Hour) // every generation expires
		}
		process(t, m, "g", strconv.Itoa(i), nil, false)
	}
	if got := m.Len(); got == 0 {
		t.Fatal("Len() = 0; want the latest marks")
	}

	var dup bool
	var err error
	ran := false
	wg.Go(func() {
		dup, err = m.Process(context.Background(), "lonely", "x", func(context.Context) error {
			ran = true
			return nil
		})
	})
	waitForWaiters(t, m, "lonely", "x", 1)
	close(release)
	wg.Wait()
	if firstErr != nil || err != nil || !dup || ran {
		t.Errorf("first error %v; second Process = (%t, %v), ran %t; want a duplicate, not run", firstErr, dup, err, ran)
	}
	checkMemory(t, m)
}

// TestMemoryGoexitNotMarked checks that a handler ending its goroutine
// with runtime.Goexit (as t.FailNow does) leaves no mark and no event in
// flight.
func TestMemoryGoexitNotMarked(t *testing.T) {
	m := NewMemory()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = m.Process(context.Background(), "g", "e1", func(context.Context) error {
			runtime.Goexit()
			return nil
		})
	}()
	<-done
	process(t, m, "g", "e1", nil, false)
	process(t, m, "g", "e1", nil, true)
	checkMemory(t, m)
}

// TestMemoryKeepsCopies checks that marks hold copies of the ids, short
// (carved from the shared block) and long, never the caller's bytes.
func TestMemoryKeepsCopies(t *testing.T) {
	m := NewMemory()
	headers := "ce_type=order.placed;ce_id=" + strings.Repeat("7", 36) + ";ce_long=" + strings.Repeat("L", 1000)
	short := headers[strings.Index(headers, "ce_id=")+6:][:36]
	long := headers[len(headers)-1000:]
	process(t, m, "g", short, nil, false)
	process(t, m, "g", long, nil, false)
	process(t, m, "g", strings.Repeat("7", 36), nil, true)
	process(t, m, "g", strings.Repeat("L", 1000), nil, true)

	lo := uintptr(unsafe.Pointer(unsafe.StringData(headers)))
	hi := lo + uintptr(len(headers))
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range m.scopes["g"].cur {
		if p := uintptr(unsafe.Pointer(unsafe.StringData(id))); p >= lo && p < hi {
			t.Errorf("the mark of a %d-byte id points into the caller's string", len(id))
		}
	}
}

// TestMemoryExpiryLetsGo checks that expired generations free their maps
// and idle scopes are forgotten.
func TestMemoryExpiryLetsGo(t *testing.T) {
	clock := newFakeClock()
	m := NewMemory(WithTTL(time.Minute), WithClock(clock.Now))
	for i := range 100 {
		process(t, m, "old", strconv.Itoa(i), nil, false)
	}
	clock.Advance(time.Minute)
	if got := m.Len(); got != 0 {
		t.Errorf("after the ttl, Len() = %d; want 0", got)
	}
	process(t, m, "new", "e1", nil, false)
	m.mu.Lock()
	_, old := m.scopes["old"]
	m.mu.Unlock()
	if old {
		t.Error("a scope whose marks all expired is still held")
	}
	process(t, m, "old", "1", nil, false)
	checkMemory(t, m)
}
