package consumer

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
)

// Hot-path benchmarks of the consumer's internals, with allocations:
//
//	go test -run '^$' -bench 'PartitionTracker|ReadMetadata|Scheduler|Pipeline' ./consumer
//
// One op is one record in each. See also metadata_bench_test.go and
// scheduler_bench_test.go.

// trackWindow is how many records a partition has in flight in the
// windowed benchmarks: MaxInFlight's default.
const trackWindow = 1024

// BenchmarkPartitionTracker measures the done-tracking of one partition:
// what each record pays on its way in (track, by dispatch) and out (start
// and finish, by a worker), under the partition's mutex, with a toCommit
// (the commit loop's read) every trackWindow records.
//
//   - in-order: one record in flight at a time;
//   - window-shuffled: trackWindow records taken on, then finished in a
//     random order, as per-key workers finish them;
//   - head-last: trackWindow records taken on, the first finished last, so
//     the rest wait done behind it (a slow head of the partition);
//   - contended: every goroutine of RunParallel tracks and finishes its
//     own records on the one partition, as dispatch and the workers do.
func BenchmarkPartitionTracker(b *testing.B) {
	ctx := context.Background()
	b.Run("in-order", func(b *testing.B) {
		p := newPartition(ctx, "t", 0)
		b.ReportAllocs()
		off := int64(0)
		for b.Loop() {
			seq := p.track(off)
			p.start()
			p.finish(seq, true)
			off++
			if off%trackWindow == 0 {
				p.toCommit()
			}
		}
		if c, _ := p.toCommit(); c != off {
			b.Fatalf("committable %d; want %d", c, off)
		}
	})

	windowed := func(b *testing.B, order []int) {
		p := newPartition(ctx, "t", 0)
		seqs := make([]uint64, trackWindow)
		b.ReportAllocs()
		off := int64(0)
		for i := 0; i < b.N; i += trackWindow {
			for j := range seqs {
				seqs[j] = p.track(off + int64(j))
			}
			for _, j := range order {
				p.start()
				p.finish(seqs[j], true)
			}
			off += trackWindow
			if c, ok := p.toCommit(); !ok || c != off {
				b.Fatalf("committable %d, %t; want %d", c, ok, off)
			}
			p.committedAt(off)
		}
	}
	b.Run("window-shuffled", func(b *testing.B) {
		order := rand.New(rand.NewPCG(1, 2)).Perm(trackWindow)
		windowed(b, order)
	})
	b.Run("head-last", func(b *testing.B) {
		order := make([]int, 0, trackWindow)
		for j := 1; j < trackWindow; j++ {
			order = append(order, j)
		}
		windowed(b, append(order, 0))
	})

	b.Run("contended", func(b *testing.B) {
		p := newPartition(ctx, "t", 0)
		var mu sync.Mutex // offsets are taken in order, as dispatch does
		next := int64(0)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.Lock()
				seq := p.track(next)
				next++
				mu.Unlock()
				p.start()
				p.finish(seq, true)
			}
		})
	})
}
