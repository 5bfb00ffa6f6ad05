package reliability_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/idempotency"
	"github.com/choreokit/choreo/idempotency/pgstore"
	"github.com/choreokit/choreo/schema"
)

// childStats is what a child service prints every CHILD_STATS_MS.
type childStats struct {
	Handled     int64 `json:"handled"`
	Distinct    int64 `json:"distinct"`
	InFlight    int64 `json:"in_flight"`
	PeakIn      int64 `json:"peak_in_flight"`
	Uncommitted int64 `json:"uncommitted"`
	Assigned    int64 `json:"assigned"`
	DeadLetters int64 `json:"dead_lettered"`
}

// runChild runs the child role: "service" is a consumer of CHILD_TOPIC in
// CHILD_GROUP that applies each event's effect (a row in CHILD_EFFECTS in
// the pgstore transaction, or, with CHILD_STORE=memory, a count in
// memory). It prints "ready" once assigned partitions, "first <unix nanos>"
// at its first effect, and a stats line every CHILD_STATS_MS if set. It
// shuts down cleanly on SIGTERM.
func runChild(role string) error {
	if role != "service" {
		return fmt.Errorf("unknown child role %q", role)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	reg, err := schema.NewRegistry([]string{os.Getenv("CHILD_REGISTRY")})
	if err != nil {
		return err
	}
	var store idempotency.Store
	apply := func(context.Context, consumer.Event[OrderPlaced]) error { return nil }
	var mu sync.Mutex
	seen := map[string]bool{}
	if os.Getenv("CHILD_STORE") == "memory" {
		store = idempotency.NewMemory()
		apply = func(_ context.Context, ev consumer.Event[OrderPlaced]) error {
			mu.Lock()
			seen[ev.ID] = true
			mu.Unlock()
			return nil
		}
	} else {
		pool, err := newPool(ctx, os.Getenv("DATABASE_URL"))
		if err != nil {
			return err
		}
		defer pool.Close()
		st, err := pgstore.New(ctx, pool, pgstore.WithTable(os.Getenv("CHILD_MARKS")))
		if err != nil {
			return err
		}
		store = st
		table := os.Getenv("CHILD_EFFECTS")
		apply = func(ctx context.Context, ev consumer.Event[OrderPlaced]) error { return applyPG(ctx, table, ev) }
	}
	opts := []consumer.Option{consumer.Store(store), consumer.CommitInterval(100 * time.Millisecond),
		consumer.RevokeTimeout(8 * time.Second),
		// A killed member holds its partitions until its session times
		// out; a rebalance waits at most RebalanceTimeout for members.
		consumer.ClientOptions(kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(500*time.Millisecond), kgo.RebalanceTimeout(12*time.Second))}
	if n, _ := strconv.Atoi(os.Getenv("CHILD_CONCURRENCY")); n > 0 {
		opts = append(opts, consumer.Concurrency(n))
	}
	c, err := consumer.New(connection.Config{Brokers: strings.Split(os.Getenv("CHILD_BROKERS"), ",")}, reg, os.Getenv("CHILD_GROUP"), opts...)
	if err != nil {
		return err
	}
	sleep, _ := time.ParseDuration(os.Getenv("CHILD_SLEEP"))
	var handled atomic.Int64
	var first sync.Once
	consumer.Handle(c, os.Getenv("CHILD_TOPIC"), func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		if sleep > 0 {
			time.Sleep(sleep)
		}
		if err := apply(ctx, ev); err != nil {
			return err
		}
		handled.Add(1)
		first.Do(func() { fmt.Printf("first %d\n", time.Now().UnixNano()) })
		return nil
	})
	if ms, _ := strconv.Atoi(os.Getenv("CHILD_STATS_MS")); ms > 0 {
		go func() {
			t := time.NewTicker(time.Duration(ms) * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				s := c.Stats()
				mu.Lock()
				distinct := int64(len(seen))
				mu.Unlock()
				line, _ := json.Marshal(childStats{Handled: handled.Load(), Distinct: distinct, InFlight: s.InFlight, PeakIn: s.PeakInFlight,
					Uncommitted: s.Uncommitted, Assigned: s.Assigned, DeadLetters: s.DeadLettered})
				fmt.Printf("stats %s\n", line)
			}
		}()
	}
	go func() {
		for ctx.Err() == nil && !c.Ready() {
			time.Sleep(20 * time.Millisecond)
		}
		fmt.Println("ready")
	}()
	return c.Run(ctx)
}

// child is a child service process.
type child struct {
	cmd     *exec.Cmd
	started time.Time
	mu      sync.Mutex
	first   time.Time // when it applied its first effect
	ready   bool
	stats   []childStats
	exited  chan struct{}
}

// childConfig is what a child service is started with.
type childConfig struct {
	group       string
	store       string // "memory", or "" for the pg sink's tables
	sleep       time.Duration
	statsEvery  time.Duration
	concurrency int
}

// startChild starts a service process for e's topic.
func (e *env) startChild(cfg childConfig) *child {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=service",
		"CHILD_BROKERS="+strings.Join(e.cluster.Seeds(), ","), "CHILD_REGISTRY="+e.regURL,
		"CHILD_TOPIC="+e.topic, "CHILD_GROUP="+cfg.group, "CHILD_STORE="+cfg.store,
		"CHILD_SLEEP="+cfg.sleep.String(), "CHILD_STATS_MS="+strconv.Itoa(int(cfg.statsEvery.Milliseconds())),
		"CHILD_CONCURRENCY="+strconv.Itoa(cfg.concurrency))
	if pg, ok := e.sink.(*pgSink); ok && cfg.store == "" {
		cmd.Env = append(cmd.Env, "CHILD_EFFECTS="+pg.table, "CHILD_MARKS="+pg.marks, "DATABASE_URL="+pg.url)
	}
	cmd.Stderr = &lineWriter{t: e.t, prefix: "child: "}
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	ch := &child{cmd: cmd, started: time.Now(), exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			ch.mu.Lock()
			switch {
			case line == "ready":
				ch.ready = true
			case strings.HasPrefix(line, "first "):
				n, _ := strconv.ParseInt(strings.TrimPrefix(line, "first "), 10, 64)
				ch.first = time.Unix(0, n)
			case strings.HasPrefix(line, "stats "):
				var s childStats
				if json.Unmarshal([]byte(strings.TrimPrefix(line, "stats ")), &s) == nil {
					ch.stats = append(ch.stats, s)
				}
			}
			ch.mu.Unlock()
		}
		_ = cmd.Wait()
		close(ch.exited)
	}()
	e.t.Cleanup(func() { ch.kill() })
	return ch
}

// kill sends SIGKILL and waits for the process to be gone.
func (ch *child) kill() {
	_ = ch.cmd.Process.Signal(syscall.SIGKILL)
	<-ch.exited
}

// term asks the child to shut down (SIGTERM) and waits up to d.
func (ch *child) term(d time.Duration) error {
	_ = ch.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ch.exited:
		if s := ch.cmd.ProcessState; s != nil && !s.Success() {
			return fmt.Errorf("child exited: %v", s)
		}
		return nil
	case <-time.After(d):
		ch.kill()
		return fmt.Errorf("child did not stop within %v of SIGTERM", d)
	}
}

func (ch *child) firstEffect() time.Time {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.first
}

func (ch *child) lastStats() (childStats, []childStats) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if len(ch.stats) == 0 {
		return childStats{}, nil
	}
	return ch.stats[len(ch.stats)-1], append([]childStats(nil), ch.stats...)
}

// rss reads the child's resident set size in bytes from /proc.
func (ch *child) rss() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", ch.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", ch.cmd.Process.Pid)
}

// lineWriter passes a child's stderr to the test log, line by line,
// keeping only warnings and errors (the children log at Info).
type lineWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if strings.Contains(line, " ERROR ") || strings.HasPrefix(line, "child:") || strings.Contains(line, "panic") {
			w.t.Log(w.prefix + line)
		}
	}
	return len(p), nil
}
