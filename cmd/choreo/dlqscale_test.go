package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/dlq"
)

// lineCounter counts the lines written to it and keeps nothing.
type lineCounter struct{ n atomic.Int64 }

func (c *lineCounter) Write(p []byte) (int, error) {
	c.n.Add(int64(bytes.Count(p, []byte{'\n'})))
	return len(p), nil
}

// TestDLQListBoundedMemory lists 100,000 dead letters (every 1,000th
// written twice) and checks that the reader held a bounded number of them
// at any time: its window of dead letters held back and its memory of the
// failures passed on never pass their caps, whatever the topic's size,
// while every dead letter is listed once and every duplicate merged. The
// time and the heap it took are logged (docs/PERFORMANCE.md).
func TestDLQListBoundedMemory(t *testing.T) {
	const n = 100_000
	fx := newDLQFixture(t, 3)
	ctx := context.Background()

	// Write the dead letters: records built by the writer, produced in bulk.
	start := time.Now()
	cl := fx.c.Client(t, kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(20_000))
	var wg sync.WaitGroup
	var produceErr atomic.Value
	produce := func(rec *kgo.Record) {
		wg.Add(1)
		cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			if err != nil {
				produceErr.Store(err)
			}
			wg.Done()
		})
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	for i := range n {
		key := fmt.Sprintf("ord-%d", i%5000)
		orig := &kgo.Record{Topic: "orders", Partition: int32(i % 6), Offset: int64(i), Key: []byte(key), Value: []byte("value of " + key),
			Headers: []kgo.RecordHeader{{Key: choreo.HeaderID, Value: []byte(fmt.Sprintf("evt-%d", i))}, {Key: choreo.HeaderType, Value: []byte("shop.OrderPlaced")}}}
		dl := dlq.New(orig, dlq.Failure{Err: errors.New("card declined"), Kind: choreo.KindPermanent, Group: fx.group})
		dl.DeadLetteredAt = base.Add(time.Duration(i) * time.Millisecond)
		rec, err := fx.w.Record(ctx, fx.topic, dl)
		if err != nil {
			t.Fatal(err)
		}
		produce(rec)
		if i%1000 == 0 {
			dup := *rec
			produce(&dup) // the same dead letter again, as after a lost acknowledgement
		}
	}
	wg.Wait()
	if err, _ := produceErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d dead letters (+%d duplicates) in %v", n, n/1000, time.Since(start).Round(time.Millisecond))

	// Caps smaller than the topic, so that the bound shows.
	defer func(w, s int) { dedupeWindow, dedupeSeen = w, s }(dedupeWindow, dedupeSeen)
	dedupeWindow, dedupeSeen = 512, 4096
	var stats scanStats
	scanObserver = func(s scanStats) { stats = s }
	defer func() { scanObserver = nil }()

	// The live heap (what the last GC found reachable), sampled: the
	// embedded broker's copy of the topic is in it too.
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	liveHeap := func() uint64 {
		metrics.Read(live)
		return live[0].Value.Uint64()
	}
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	runtime.GC()
	before := liveHeap()
	sample := func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if h := liveHeap(); h > peak.Load() {
				peak.Store(h)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}
	go sample()
	var out lineCounter
	var errOut bytes.Buffer
	start = time.Now()
	code := execute(ctx, newRootCmd(), fx.args("dlq", "list", fx.group, "-o", "jsonl"), &out, &errOut)
	took := time.Since(start)
	close(stop)
	<-sampled
	if code != 0 {
		t.Fatalf("list: status %d, stderr %q", code, errOut.String())
	}
	t.Logf("listed %d dead letters in %v (%.0f/s); live heap %d MiB before, at most %d MiB during",
		out.n.Load(), took.Round(time.Millisecond), float64(n)/took.Seconds(), before>>20, peak.Load()>>20)
	t.Logf("scan: %+v", stats)

	if got := out.n.Load(); got != n {
		t.Errorf("listed %d dead letters; want %d (each once)", got, n)
	}
	if stats.read != n+n/1000 || stats.duplicates != n/1000 || stats.lateDuplicates != 0 {
		t.Errorf("read %d, merged %d duplicates, %d late; want %d read, %d merged, 0 late", stats.read, stats.duplicates, stats.lateDuplicates, n+n/1000, n/1000)
	}
	if stats.maxPending > dedupeWindow+1 || stats.maxSeen > dedupeSeen {
		t.Errorf("held back at most %d dead letters and remembered %d failures; want at most %d and %d", stats.maxPending, stats.maxSeen, dedupeWindow+1, dedupeSeen)
	}
	if stats.maxPending < dedupeWindow || stats.maxSeen < dedupeSeen {
		t.Errorf("held back at most %d, remembered %d: the caps (%d, %d) were never reached, so this test shows nothing", stats.maxPending, stats.maxSeen, dedupeWindow, dedupeSeen)
	}

	// With the default caps, for docs/PERFORMANCE.md.
	dedupeWindow, dedupeSeen = 1024, 1<<18
	peak.Store(0)
	runtime.GC()
	before = liveHeap()
	stop, sampled = make(chan struct{}), make(chan struct{})
	go sample()
	start = time.Now()
	code = execute(ctx, newRootCmd(), fx.args("dlq", "list", fx.group, "-o", "jsonl"), &out, &errOut)
	took = time.Since(start)
	close(stop)
	<-sampled
	if code != 0 {
		t.Fatalf("list: status %d, stderr %q", code, errOut.String())
	}
	t.Logf("default caps: listed in %v (%.0f/s); live heap %d MiB before, at most %d MiB during; scan %+v",
		took.Round(time.Millisecond), float64(n)/took.Seconds(), before>>20, peak.Load()>>20, stats)
}

// TestDLQListFollow: --follow lists what is there, then what arrives,
// until interrupted, which ends it with status 0.
func TestDLQListFollow(t *testing.T) {
	fx := newDLQFixture(t, 1)
	fx.writeGolden(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	var errOut bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- execute(ctx, newRootCmd(), fx.args("dlq", "list", fx.group, "--follow", "-o", "jsonl"), out, &errOut)
	}()
	waitFor(t, 20*time.Second, "the existing dead letters listed", func() bool { return strings.Count(out.String(), "\n") == 5 })
	dl := dlq.New(&kgo.Record{Topic: "orders", Partition: 2, Offset: 77, Key: []byte("late")}, dlq.Failure{Err: errors.New("late failure"), Group: fx.group})
	if err := fx.w.Write(context.Background(), fx.topic, dl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the new dead letter listed", func() bool { return strings.Contains(out.String(), "late failure") })
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("--follow ended with status %d (stderr %q); want 0", code, errOut.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("--follow did not end when interrupted")
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDLQSilentBroker: a broker that accepts connections and never
// answers fails the command after the connection timeout, in one line.
func TestDLQSilentBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	defer func(d time.Duration) { dlqConnectTimeout = d }(dlqConnectTimeout)
	dlqConnectTimeout = 500 * time.Millisecond
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"dlq", "stats", "svc", "--brokers", ln.Addr().String()}, &out, &errOut)
	want := fmt.Sprintf("choreo dlq stats: cannot reach Kafka at %s: no answer within 500ms\n", ln.Addr())
	if code != 1 || errOut.String() != want {
		t.Errorf("status %d, stderr %q; want 1, %q", code, errOut.String(), want)
	}
}
