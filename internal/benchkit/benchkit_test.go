package benchkit

import (
	"context"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/schema/registry"
)

func TestEventsSize(t *testing.T) {
	codec := schema.NewCodec(schema.StaticSource{1: orderPlacedSchema})
	for _, size := range []int{MinSize, 100, 200, 1000, 100_000} {
		e, err := NewEvents(size)
		if err != nil {
			t.Fatalf("NewEvents(%d): %v", size, err)
		}
		for _, i := range []int{0, 1, 99_999, 123_456} {
			v, err := codec.Encode(1, orderPlacedSchema, e.Event(i, 1000))
			if err != nil {
				t.Fatal(err)
			}
			if d := len(v) - size; d < -3 || d > 2 {
				t.Errorf("NewEvents(%d): event %d is %d bytes; want %d give or take 2", size, i, len(v), size)
			}
		}
	}
	for _, size := range []int{-1, 0, MinSize - 1, MaxSize + 1} {
		if _, err := NewEvents(size); err == nil {
			t.Errorf("NewEvents(%d) = nil error; want one", size)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {1, 1}} {
		if got := percentile(d, tc.p); got != tc.want {
			t.Errorf("percentile(1..100, %v) = %v; want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile(nil) = %v; want 0", got)
	}
	if got := median([]float64{3, 1, 2, 10}); got != 2.5 {
		t.Errorf("median = %v; want 2.5", got)
	}
}

func TestFormat(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567"} {
		if got := FormatCount(in); got != want {
			t.Errorf("FormatCount(%v) = %q; want %q", in, got, want)
		}
	}
}

// embedded starts a one-broker kfake cluster and a registry for t.
func embedded(t *testing.T) (connection.Config, *schema.Registry) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	srv, err := registry.New()
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	reg, err := schema.NewRegistry([]string{hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	return connection.Config{Brokers: c.ListenAddrs()}, reg
}

// progressLog records the progress of a run.
type progressLog struct{ steps, finished []string }

func (p *progressLog) Start(step string, _ int64) { p.steps = append(p.steps, step) }
func (p *progressLog) Update(int64)               {}
func (p *progressLog) Finish(line string)         { p.finished = append(p.finished, line) }

// TestRun runs every scenario, tiny, on the embedded broker, and checks
// the rows (never the speed), and that the run leaves nothing behind.
func TestRun(t *testing.T) {
	conn, reg := embedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env, err := NewEnv(ctx, conn, reg)
	if err != nil {
		t.Fatal(err)
	}
	var prog progressLog
	res, err := Run(ctx, env, Config{Events: 200, Partitions: 3, Rounds: 2, Rate: 2000, Broker: "embedded", Progress: &prog})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var rows []string
	for _, r := range res {
		rows = append(rows, r.Scenario+"/"+r.Variant)
		if r.Rate <= 0 || r.Heap == 0 || r.Load == "" || r.Config.Events <= 0 {
			t.Errorf("%s/%s: %+v; want a rate, a heap, a load average and settings", r.Scenario, r.Variant, r)
		}
		if r.Vs != "" && r.Ratio <= 0 {
			t.Errorf("%s/%s: ratio %v against %s; want more than 0", r.Scenario, r.Variant, r.Ratio, r.Vs)
		}
	}
	want := []string{"produce/raw", "produce/choreo", "produce-sync/raw", "produce-sync/choreo",
		"consume/raw", "consume/choreo", "slow/raw-sequential", "slow/per-partition", "slow/per-key",
		"latency/raw", "latency/choreo"}
	if !slices.Equal(rows, want) {
		t.Errorf("rows %v; want %v", rows, want)
	}
	for _, r := range res {
		switch r.Scenario {
		case "produce-sync", Latency:
			if r.P50 <= 0 || r.P99 < r.P50 {
				t.Errorf("%s/%s: p50 %v, p99 %v; want 0 < p50 <= p99", r.Scenario, r.Variant, r.P50, r.P99)
			}
		}
	}
	if len(prog.finished) != len(prog.steps) || len(prog.steps) == 0 {
		t.Errorf("%d steps started, %d finished; want as many, more than 0", len(prog.steps), len(prog.finished))
	}
	if err := env.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(conn.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	td, err := kadm.NewClient(cl).ListTopics(context.Background())
	if err != nil {
		t.Errorf("list topics: %v", err)
	} else {
		for _, name := range td.Names() {
			if strings.HasPrefix(name, env.Prefix) {
				t.Errorf("topic %s left behind", name)
			}
		}
	}
}

func TestNewEnvUnreachable(t *testing.T) {
	_, reg := embedded(t)
	start := time.Now()
	_, err := NewEnv(context.Background(), connection.Config{Brokers: []string{"127.0.0.1:1"}}, reg)
	if err == nil || !strings.Contains(err.Error(), "cannot reach kafka at 127.0.0.1:1") {
		t.Fatalf("NewEnv = %v; want cannot reach kafka", err)
	}
	if took := time.Since(start); took > 2*ReachTimeout {
		t.Errorf("NewEnv took %v to fail", took)
	}
}
