package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/choreokit/choreo/internal/benchkit"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/schema/registry"
)

// benchFlags are the flags of `choreo bench`.
type benchFlags struct {
	kafka      *kafkaFlags
	registry   *registryFlags
	output     *outputFlag
	scenario   string
	events     int
	size       int
	partitions int
	rounds     int
	rate       int
}

// scenarioAll runs every scenario.
const scenarioAll = "all"

func newBenchCmd() *cobra.Command {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure choreo against raw franz-go doing the same work, in one run",
		Long: `Measure choreo's producer and consumer against raw franz-go doing the same
work (the same encoded bytes and headers, the same decode with choreo's
codec), in this process, in alternating rounds (raw, choreo, raw, choreo),
so that the machine's noise hits both. It prints one row per variant:
events per second (median over the rounds), the ratio to the raw variant,
p50/p99 latency where it applies, the peak heap while a round ran, the
load average and the settings.

Scenarios:
  produce   PublishAsync vs kgo Produce (--events records); and, as
            produce-sync, Publish vs ProduceSync one call at a time, with
            the latency of each call (--events/100 calls, at most 1,000)
  consume   a backlog of --events events of --size bytes on --partitions
            partitions and up to 100,000 keys: the choreo consumer with its
            defaults and a counting handler vs a kgo poll loop decoding each
            value; timed from the first record to the last
  slow      a handler that decodes and sleeps 2 ms, one partition, 1,000
            keys: per-key ordering (Concurrency 64, up to 20,000 events) vs
            per-partition ordering vs a sequential kgo loop (up to 2,000
            events each, once: their time is the sleep)
  latency   publish -> handler -> publish -> handler at --rate events/s
            (at most two seconds' worth a round): p50/p99 from when each
            event was due to the end of the second handler

Without --brokers (and KAFKA_BROKERS), it starts an embedded broker (one
kfake broker) in this process; without --registry, an embedded schema
registry. The embedded broker shares the CPUs with the clients and keeps
every record in memory (counted in the peak heap): compare the ratios, not
the absolute figures, with other machines and brokers. On a real cluster,
every topic, group and subject of the run is named choreo-bench-<time>-<id>
and deleted at the end.

Progress goes to standard error; the results to standard output.`,
		Example: `  choreo bench
  choreo bench --scenario consume --events 1000000
  choreo bench --brokers 127.0.0.1:19092 --output json`,
		Args: usageArgs(cobra.NoArgs, func(args []string) string {
			return fmt.Sprintf("unexpected argument %q", args[0])
		}),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd.Context(), f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f.kafka = addKafkaFlags(cmd)
	f.registry = addRegistryFlag(cmd)
	f.output = addOutputFlag(cmd)
	fs := cmd.Flags()
	scenarios := append(slices.Clone(benchkit.Scenarios), scenarioAll)
	fs.StringVar(&f.scenario, "scenario", scenarioAll, "what to measure: "+orList(scenarios)+", or a comma-separated list")
	fs.IntVar(&f.events, "events", benchkit.DefaultEvents, "events per round of produce and consume (the other scenarios take fewer)")
	fs.IntVar(&f.size, "size", benchkit.DefaultSize, fmt.Sprintf("encoded value size in bytes, wire format header included (%d to %d)", benchkit.MinSize, benchkit.MaxSize))
	fs.IntVar(&f.partitions, "partitions", benchkit.DefaultPartitions, "partitions of the produce, consume and latency topics")
	fs.IntVar(&f.rounds, "rounds", benchkit.DefaultRounds, "rounds of each comparison")
	fs.IntVar(&f.rate, "rate", benchkit.DefaultRate, "events per second published in the latency scenario")
	_ = cmd.RegisterFlagCompletionFunc("scenario", cobra.FixedCompletions(scenarios, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// scenarios parses --scenario.
func (f *benchFlags) scenarios() ([]string, error) {
	var out []string
	for _, s := range strings.Split(f.scenario, ",") {
		s = strings.TrimSpace(s)
		switch {
		case s == scenarioAll:
			return benchkit.Scenarios, nil
		case slices.Contains(benchkit.Scenarios, s):
			out = append(out, s)
		default:
			return nil, usagef("--scenario %q: want %s", s, orList(append(slices.Clone(benchkit.Scenarios), scenarioAll)))
		}
	}
	return out, nil
}

// check reports a bad flag value as a usage error.
func (f *benchFlags) check() error {
	switch {
	case f.events < 1:
		return usagef("--events %d: want at least 1", f.events)
	case f.size < benchkit.MinSize || f.size > benchkit.MaxSize:
		return usagef("--size %d: want %d to %d bytes", f.size, benchkit.MinSize, benchkit.MaxSize)
	case f.partitions < 1 || f.partitions > 10_000:
		return usagef("--partitions %d: want 1 to 10000", f.partitions)
	case f.rounds < 1 || f.rounds > 100:
		return usagef("--rounds %d: want 1 to 100", f.rounds)
	case f.rate < 1 || f.rate > 1_000_000:
		return usagef("--rate %d: want 1 to 1000000 events per second", f.rate)
	}
	return nil
}

// runBench checks the flags, brings up what is missing of the stack, runs
// the scenarios and prints the results.
func runBench(ctx context.Context, f *benchFlags, stdout, stderr io.Writer) error {
	scenarios, err := f.scenarios()
	if err != nil {
		return err
	}
	if err := f.check(); err != nil {
		return err
	}
	conn, err := f.kafka.config()
	if err != nil {
		return err
	}
	var reg *schema.Registry
	regDesc := "embedded (in this process)"
	if strings.TrimSpace(f.registry.url) != "" {
		if reg, err = f.registry.client(); err != nil {
			return err
		}
		regDesc = redactURL(f.registry.url)
	} else {
		url, stop, err := startBenchRegistry()
		if err != nil {
			return err
		}
		defer stop()
		if reg, err = schema.NewRegistry([]string{url}); err != nil {
			return fmt.Errorf("embedded schema registry: %w", err)
		}
	}
	brokerDesc := "embedded (kfake, one broker, in this process)"
	if len(conn.Brokers) == 0 {
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ClusterID("choreo-bench"))
		if err != nil {
			return fmt.Errorf("embedded broker: %w", err)
		}
		defer cluster.Close()
		conn.Brokers = cluster.ListenAddrs()
	} else {
		brokerDesc = "kafka at " + strings.Join(conn.Brokers, ",")
	}

	env, err := benchkit.NewEnv(ctx, conn, reg)
	if err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		return err
	}
	prog := newBenchProgress(stderr)
	loadStart := benchkit.LoadAverage()
	started := time.Now()
	results, runErr := benchkit.Run(ctx, env, benchkit.Config{
		Scenarios:  scenarios,
		Events:     f.events,
		Size:       f.size,
		Partitions: f.partitions,
		Rounds:     f.rounds,
		Rate:       f.rate,
		Broker:     brokerDesc,
		Progress:   prog,
	})
	prog.close()
	closeErr := env.Close()
	if runErr != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		return runErr
	}

	if f.output.format == outputTable {
		fmt.Fprintf(stdout, "choreo bench, %s (run %s)\n", started.UTC().Format("2006-01-02 15:04 UTC"), env.Prefix)
		fmt.Fprintf(stdout, "broker: %s; registry: %s\n", brokerDesc, regDesc)
		fmt.Fprintf(stdout, "machine: %d CPUs (GOMAXPROCS %d), %s %s/%s; load average %s at start, %s at end; %v\n\n",
			runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH,
			loadStart, benchkit.LoadAverage(), time.Since(started).Round(time.Second))
	}
	columns := []string{"SCENARIO", "VARIANT", "EVENTS/S", "RATIO", "P50", "P99", "PEAK HEAP", "LOAD", "SETTINGS"}
	if err := writeOutput(stdout, f.output, columns, results, benchRow); err != nil {
		return err
	}
	if f.output.format == outputTable {
		fmt.Fprintln(stdout, "\nEVENTS/S is the median over the rounds; RATIO the median of the per-round ratios to the variant named.")
	}
	return closeErr
}

// benchRow is one table row.
func benchRow(r benchkit.Result) []string {
	ratio, p50, p99 := "", "", ""
	switch {
	case r.P50Vs > 0:
		ratio = fmt.Sprintf("p50 %.2f× %s", r.P50Vs, r.Vs)
	case r.Vs != "":
		ratio = fmt.Sprintf("%.2f× %s", r.Ratio, r.Vs)
	}
	if r.P50 > 0 {
		p50, p99 = fmtMillis(r.P50), fmtMillis(r.P99)
	}
	return []string{r.Scenario, r.Variant, benchkit.FormatCount(r.Rate), ratio, p50, p99,
		benchkit.FormatBytes(r.Heap), r.Load, r.Config.String()}
}

// fmtMillis writes a latency in milliseconds.
func fmtMillis(ms float64) string {
	return benchkit.FormatDuration(time.Duration(ms * float64(time.Millisecond)))
}

// redactURL drops the user information of a URL, which may hold a
// password.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	u.User = nil
	return u.String()
}

// startBenchRegistry serves an embedded schema registry on a loopback
// port and returns its URL and what stops it.
func startBenchRegistry() (string, func(), error) {
	reg, err := registry.New()
	if err != nil {
		return "", nil, fmt.Errorf("embedded schema registry: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("embedded schema registry: %w", err)
	}
	srv := &http.Server{Handler: reg, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
	return "http://" + ln.Addr().String(), stop, nil
}

// benchProgress shows the steps of a run on standard error: a progress bar
// on a terminal, and a line per finished step either way.
type benchProgress struct {
	w        io.Writer
	terminal bool

	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

func newBenchProgress(w io.Writer) *benchProgress {
	p := &benchProgress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

// Start begins a step: a new bar on a terminal.
func (p *benchProgress) Start(step string, total int64) {
	if !p.terminal {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(step),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("ev"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetRenderBlankState(true),
	)
}

// Update moves the bar.
func (p *benchProgress) Update(done int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Set64(done)
	}
}

// Finish clears the bar and prints the step's line.
func (p *benchProgress) Finish(summary string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Clear()
		_ = p.bar.Exit()
		p.bar = nil
	}
	fmt.Fprintf(p.w, "bench: %s\n", summary)
}

// close removes a bar left by a step that did not finish.
func (p *benchProgress) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Clear()
		_ = p.bar.Exit()
		p.bar = nil
	}
}
