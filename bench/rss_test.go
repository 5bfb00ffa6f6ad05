package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/schema"
)

// The child process of BenchmarkPeakRSS is this test binary run again with
// these variables set; TestRSSChild then consumes and reports.
const (
	envRSSChild    = "BENCH_RSS_CHILD" // "choreo" or "raw"
	envRSSBrokers  = "BENCH_RSS_BROKERS"
	envRSSRegistry = "BENCH_RSS_REGISTRY"
	envRSSTopic    = "BENCH_RSS_TOPIC"
	envRSSSeconds  = "BENCH_RSS_SECONDS"
	rssReportTag   = "BENCH-RSS-CHILD"
	rssSleep       = time.Millisecond
	rssConcurrency = 64
)

// BenchmarkPeakRSS measures the peak resident memory (VmHWM) of a consumer
// working through a backlog of BENCH_EVENTS events (default 100,000;
// bench/run.sh uses 1,000,000) with a slow handler (1 ms) and 64 handlers
// at once, for BENCH_RSS_SECONDS (default 5; run.sh uses 20) or until the
// backlog is done.
//
// The consumer runs in a child process (this test binary, re-executed to
// run TestRSSChild) against this process's embedded broker and schema
// registry, so the broker's memory is not counted. The child reads its own
// VmHWM from /proc/self/status when it is done and prints it.
//
//   - choreo: the choreo consumer, Concurrency(64), otherwise defaults
//     (MaxInFlight 1024, in-memory idempotency store of up to 100,000 ids);
//   - choreo-bounded: the same with franz-go's fetch buffer bounded
//     (FetchMaxBytes 8 MiB instead of 50 MiB, MaxConcurrentFetches 1
//     instead of one per broker), to show how much of the peak is the
//     client's fetch buffer;
//   - raw: a franz-go poll loop taking at most 1,024 records a poll (as the
//     choreo consumer's MaxInFlight does), handing them to 64 goroutines and
//     committing after each batch; franz-go's default fetch settings.
//
// Each child consumes with a group of its own name from the start of the
// topic: every run (and round) starts from the same backlog. Each reports
// peak-MB (VmHWM in MiB) and the records handled. The variants alternate
// for BENCH_ROUNDS rounds (default 1).
func BenchmarkPeakRSS(b *testing.B) {
	n := envInt(b, "BENCH_EVENTS", 100_000)
	seconds := envInt(b, envRSSSeconds, 5)
	e := newEnv(b)
	topic := e.cluster.Topic(b, consumePartitions)
	produceBacklog(b, e, topic, n, consumeKeys)
	rounds := envInt(b, "BENCH_ROUNDS", 1)
	b.Logf("load average before measuring: %s", loadavg())
	for range rounds {
		for _, mode := range []string{"choreo", "choreo-bounded", "raw"} {
			b.Run(mode, func(b *testing.B) {
				for range b.N {
					hwm, handled := runRSSChild(b, e, topic, mode, seconds)
					b.ReportMetric(float64(hwm)/1024, "peak-MB")
					b.ReportMetric(float64(handled), "handled")
					b.Logf("%s child: VmHWM %d kB, %d records handled in at most %d s (load average %s)", mode, hwm, handled, seconds, loadavg())
				}
			})
		}
	}
}

// runRSSChild runs TestRSSChild in a child process and returns the VmHWM
// (kB) and the record count it printed.
func runRSSChild(b *testing.B, e *env, topic, mode string, seconds int) (hwmKB, handled int64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRSSChild$", "-test.bench=^$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		envRSSChild+"="+mode,
		envRSSBrokers+"="+strings.Join(e.conn.Brokers, ","),
		envRSSRegistry+"="+e.regURL,
		envRSSTopic+"="+topic,
		envRSSSeconds+"="+strconv.Itoa(seconds),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	b.ResetTimer()
	err := cmd.Run()
	b.StopTimer()
	if err != nil {
		b.Fatalf("child: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if os.Getenv("BENCH_RSS_DEBUG") != "" {
		b.Logf("child stderr:\n%s", stderr.String())
	}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var tag string
		if _, err := fmt.Sscanf(sc.Text(), "%s vmhwm_kb=%d handled=%d", &tag, &hwmKB, &handled); err == nil && tag == rssReportTag {
			return hwmKB, handled
		}
	}
	b.Fatalf("child printed no %s line:\n%s\nstderr:\n%s", rssReportTag, stdout.String(), stderr.String())
	return 0, 0
}

// TestRSSChild is the child process of BenchmarkPeakRSS; it is skipped
// unless BENCH_RSS_CHILD is set.
func TestRSSChild(t *testing.T) {
	mode := os.Getenv(envRSSChild)
	if mode == "" {
		t.Skip("the child process of BenchmarkPeakRSS; set by the benchmark")
	}
	seconds, err := strconv.Atoi(os.Getenv(envRSSSeconds))
	if err != nil {
		t.Fatal(err)
	}
	conn := connection.Config{Brokers: strings.Split(os.Getenv(envRSSBrokers), ",")}
	reg, err := schema.NewRegistry([]string{os.Getenv(envRSSRegistry)})
	if err != nil {
		t.Fatal(err)
	}
	topic := os.Getenv(envRSSTopic)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second)
	defer cancel()
	if path := os.Getenv("BENCH_RSS_HEAPPROFILE"); path != "" {
		// Half-way through, write what is live then, for pprof.
		timer := time.AfterFunc(time.Duration(seconds)*time.Second/2, func() {
			runtime.GC()
			f, err := os.Create(fmt.Sprintf("%s.%s.pprof", path, mode))
			if err == nil {
				_ = pprof.WriteHeapProfile(f)
				_ = f.Close()
			}
		})
		defer timer.Stop()
	}
	var handled int64
	switch mode {
	case "choreo":
		handled = rssChoreo(ctx, t, conn, reg, topic)
	case "choreo-bounded":
		handled = rssChoreo(ctx, t, conn, reg, topic, consumer.ClientOptions(kgo.FetchMaxBytes(8<<20), kgo.MaxConcurrentFetches(1)))
	case "raw":
		handled = rssRaw(ctx, t, conn, reg, topic)
	default:
		t.Fatalf("%s=%q: want choreo or raw", envRSSChild, mode)
	}
	hwm, err := vmHWM()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s vmhwm_kb=%d handled=%d\n", rssReportTag, hwm, handled)
}

// rssChoreo consumes topic with the choreo consumer until ctx ends.
func rssChoreo(ctx context.Context, t *testing.T, conn connection.Config, reg *schema.Registry, topic string, opts ...consumer.Option) int64 {
	opts = append([]consumer.Option{consumer.Concurrency(rssConcurrency), consumer.Logger(quietLogger)}, opts...)
	c, err := consumer.New(conn, reg, kafkaGroup("bench-rss-choreo"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	consumer.Handle(c, topic, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		time.Sleep(rssSleep)
		return nil
	})
	if err := c.Run(ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: %v", err)
	}
	s := c.Stats()
	if s.DeadLettered != 0 {
		t.Fatalf("stats %+v: want nothing dead-lettered", s)
	}
	return s.Handled
}

// rssRaw consumes topic with a franz-go poll loop taking up to 1,024
// records at a time and a pool of 64 goroutines per polled batch, until ctx
// ends.
func rssRaw(ctx context.Context, t *testing.T, conn connection.Config, reg *schema.Registry, topic string) int64 {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(conn.Brokers...),
		kgo.ConsumerGroup(kafkaGroup("bench-rss-raw")),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	codec := schema.NewCodec(reg)
	reader := OrderPlaced{}.AvroSchema()
	var handled, failed atomic.Int64
	for ctx.Err() == nil {
		fs := cl.PollRecords(ctx, 1024)
		if fs.IsClientClosed() {
			break
		}
		recs := fs.Records()
		work := make(chan *kgo.Record)
		var wg sync.WaitGroup
		for range rssConcurrency {
			wg.Go(func() {
				for r := range work {
					var ev OrderPlaced
					if _, err := codec.Decode(ctx, r.Value, reader, &ev); err != nil {
						failed.Add(1)
					}
					time.Sleep(rssSleep)
					handled.Add(1)
				}
			})
		}
		for _, r := range recs {
			work <- r
		}
		close(work)
		wg.Wait()
		if err := cl.CommitRecords(context.Background(), recs...); err != nil && ctx.Err() == nil {
			t.Fatalf("commit: %v", err)
		}
	}
	if failed.Load() > 0 {
		t.Fatalf("%d records failed to decode", failed.Load())
	}
	return handled.Load()
}

// kafkaGroup returns a group name unique to this child process.
func kafkaGroup(prefix string) string { return fmt.Sprintf("%s-%d", prefix, os.Getpid()) }

// vmHWM returns this process's peak resident set size in kB.
func vmHWM() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}
