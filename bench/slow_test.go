package bench

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/kafkatest"
)

// The slow-handler workload: one partition, 1,000 keys, 20,000 events, a
// handler that takes 2 ms.
const (
	slowEvents = 20_000
	slowKeys   = 1_000
	slowSleep  = 2 * time.Millisecond
	// slowPrefix is how many events the per-partition run handles unless
	// BENCH_SLOW_FULL=1: at one event at a time, all 20,000 take 40 s.
	slowPrefix = 2_000
)

// BenchmarkSlowHandler measures what per-key ordering buys over
// per-partition ordering when handlers are slow: 20,000 events on one
// partition, 1,000 keys, a handler that sleeps 2 ms.
//
//   - per-key: WithOrdering(PerKey), Concurrency(64), all 20,000 events;
//   - per-partition: WithOrdering(PerPartition), one handler at a time.
//     Unless BENCH_SLOW_FULL=1 it handles only the first 2,000 events (4 s
//     instead of 40 s); its records/s is then measured on that prefix, and
//     the speed-up derived from it is an extrapolation. bench/run.sh runs
//     it in full.
//
// Per-key runs BENCH_ROUNDS times (default 1), per-partition once: its time
// is the handler's sleep, and hardly varies. Each reports records/s and the
// most handlers seen running at once; the speed-up is the ratio of the
// records/s. Both check inside the handler that
// every key's offsets arrive strictly increasing, and fail if not: that is
// the ordering guarantee, not a speed target.
func BenchmarkSlowHandler(b *testing.B) {
	e := newEnv(b)
	topic := e.cluster.Topic(b, 1)
	produceBacklog(b, e, topic, slowEvents, slowKeys)
	useNoopGlobals()
	b.Logf("load average before measuring: %s", loadavg())

	perPartition := slowPrefix
	if os.Getenv("BENCH_SLOW_FULL") == "1" {
		perPartition = slowEvents
	}
	for range envInt(b, "BENCH_ROUNDS", 1) {
		b.Run("per-key", func(b *testing.B) {
			for range b.N {
				slowRun(b, e, topic, slowEvents, consumer.WithOrdering(consumer.PerKey), consumer.Concurrency(64))
			}
		})
	}
	b.Run("per-partition", func(b *testing.B) {
		if perPartition < slowEvents {
			b.Logf("per-partition: measured on the first %d of %d events (BENCH_SLOW_FULL=1 for all)", perPartition, slowEvents)
		}
		for range b.N {
			slowRun(b, e, topic, perPartition, consumer.WithOrdering(consumer.PerPartition))
		}
	})
}

// slowRun consumes the first n events of topic with a 2 ms handler and the
// given options, checks per-key order, and reports records/s.
func slowRun(b *testing.B, e *env, topic string, n int, opts ...consumer.Option) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var (
		mu         sync.Mutex
		last       = make(map[string]int64, slowKeys)
		violations int
		firstBad   string
		handled    atomic.Int64
		running    atomic.Int64
		peak       atomic.Int64
		reached    = make(chan struct{})
	)
	opts = append([]consumer.Option{consumer.Logger(quietLogger)}, opts...)
	c, err := consumer.New(e.conn, e.reg, kafkatest.Group(b), opts...)
	if err != nil {
		b.Fatal(err)
	}
	consumer.Handle(c, topic, func(_ context.Context, ev consumer.Event[OrderPlaced]) error {
		r := running.Add(1)
		for p := peak.Load(); r > p && !peak.CompareAndSwap(p, r); p = peak.Load() {
		}
		mu.Lock()
		if prev, ok := last[ev.Key]; ok && ev.Offset <= prev {
			if violations == 0 {
				firstBad = ev.Key
			}
			violations++
		}
		last[ev.Key] = ev.Offset
		mu.Unlock()
		time.Sleep(slowSleep)
		running.Add(-1)
		if handled.Add(1) == int64(n) {
			close(reached)
		}
		return nil
	})

	b.ResetTimer()
	start := time.Now()
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()
	select {
	case <-reached:
	case err := <-runErr:
		b.Fatalf("Run returned after %d of %d records: %v", handled.Load(), n, err)
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d records after 5 minutes; stats %+v", handled.Load(), n, c.Stats())
	}
	took := time.Since(start)
	b.StopTimer()
	cancel()
	if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
		b.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if violations > 0 {
		b.Fatalf("per-key order violated %d times (first on key %s): offsets of a key must arrive strictly increasing", violations, firstBad)
	}
	b.ReportMetric(float64(n)/took.Seconds(), "records/s")
	b.ReportMetric(float64(peak.Load()), "max-concurrent")
	b.Logf("%d records in %v, at most %d handlers at once (load average %s)", n, took.Round(time.Millisecond), peak.Load(), loadavg())
}
