package idempotency

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkMemoryProcess measures the store's own cost per event with a
// handler that does nothing:
//
//   - "new" handles a stream of distinct ids with the store full at its
//     default bound (every mark pushes older ones out; the cost is mostly
//     cache misses in maps of 50,000–100,000 ids);
//   - "new-small" does the same at a bound of 1,000 that fits in the CPU
//     caches;
//   - "new-no-ttl" is "new" with WithTTL(0), which needs no clock;
//   - "duplicate" redelivers one id that was just marked;
//   - "duplicate-old" redelivers an id followed by 60,000 newer marks (in
//     the generational store, a hit in the older generation);
//   - "parallel" runs "new" from GOMAXPROCS goroutines.
//
// It uses only the exported API, so the same file measures an older
// version of memory.go too.
func BenchmarkMemoryProcess(b *testing.B) {
	ctx := context.Background()
	noop := func(context.Context) error { return nil }
	ids := make([]string, 1<<17) // more than DefaultMaxEntries: every id is new again
	for i := range ids {
		ids[i] = fmt.Sprintf("0190a1b2-c3d4-7e5f-8a9b-%012d", i)
	}

	newIDs := func(b *testing.B, m *Memory, ids []string) {
		for _, id := range ids { // fill up to the bound
			_, _ = m.Process(ctx, "g", id, noop)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if dup, err := m.Process(ctx, "g", ids[i&(len(ids)-1)], noop); dup || err != nil {
				b.Fatalf("Process = (%t, %v); want (false, nil)", dup, err)
			}
			i++
		}
	}
	b.Run("new", func(b *testing.B) { newIDs(b, NewMemory(), ids) })
	b.Run("new-small", func(b *testing.B) { newIDs(b, NewMemory(WithMaxEntries(1000)), ids[:1024]) })
	b.Run("new-no-ttl", func(b *testing.B) { newIDs(b, NewMemory(WithTTL(0)), ids) })

	duplicate := func(b *testing.B, newer int) {
		m := NewMemory()
		_, _ = m.Process(ctx, "g", ids[0], noop)
		for _, id := range ids[1 : 1+newer] {
			_, _ = m.Process(ctx, "g", id, noop)
		}
		b.ReportAllocs()
		for b.Loop() {
			if dup, err := m.Process(ctx, "g", ids[0], noop); !dup || err != nil {
				b.Fatalf("Process = (%t, %v); want (true, nil)", dup, err)
			}
		}
	}
	b.Run("duplicate", func(b *testing.B) { duplicate(b, 0) })
	b.Run("duplicate-old", func(b *testing.B) { duplicate(b, 60_000) })

	b.Run("parallel", func(b *testing.B) {
		m := NewMemory()
		var next atomic.Uint64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := next.Add(1)
				_, _ = m.Process(ctx, "g", ids[i&uint64(len(ids)-1)], noop)
			}
		})
	})
}
