package benchkit

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// The scenarios.
const (
	Produce = "produce" // PublishAsync vs kgo Produce; Publish vs ProduceSync per call
	Consume = "consume" // a backlog through the consumer vs a kgo poll loop
	Slow    = "slow"    // a 2 ms handler: per-key vs per-partition vs a sequential kgo loop
	Latency = "latency" // two hops at a fixed rate, end to end
)

// Scenarios lists every scenario, in the order Run runs them.
var Scenarios = []string{Produce, Consume, Slow, Latency}

// Defaults of Config.
const (
	DefaultEvents     = 100_000
	DefaultSize       = 200
	DefaultPartitions = 12
	DefaultRounds     = 2
	DefaultRate       = 1_000
)

// StallTimeout is how long a step may go without an event counted before
// Run gives up on it.
const StallTimeout = 30 * time.Second

// Config is what Run measures. The zero value of a field means its
// default.
type Config struct {
	Scenarios  []string // default: all, in the order of Scenarios
	Events     int      // events per round of produce and consume; the other scenarios take fewer (see Run)
	Size       int      // encoded value bytes, wire format header included
	Partitions int      // partitions of the produce, consume and latency topics
	Rounds     int      // rounds of each comparison, raw and choreo alternating
	Rate       int      // events per second published in the latency scenario
	Broker     string   // what the broker is, for the settings ("embedded", or its address)
	Progress   Progress // where progress goes; nil for nowhere
}

// Progress receives the steps of a run as they go: one Start, any number
// of Updates, one Finish each.
type Progress interface {
	// Start begins a step that counts up to total events.
	Start(step string, total int64)
	// Update reports how many events of the step are done.
	Update(done int64)
	// Finish ends the step with a one-line summary of it.
	Finish(summary string)
}

type noProgress struct{}

func (noProgress) Start(string, int64) {}
func (noProgress) Update(int64)        {}
func (noProgress) Finish(string)       {}

// Settings are the parameters of one result row.
type Settings struct {
	Events      int    `json:"events"`                // events per round
	Rounds      int    `json:"rounds"`                // rounds measured
	ValueBytes  int    `json:"value_bytes"`           // encoded value, wire format header included
	Partitions  int    `json:"partitions"`            // of the topics read or written
	Keys        int    `json:"keys"`                  // distinct keys
	Concurrency int    `json:"concurrency,omitempty"` // choreo consumer's handlers at once (0: its default)
	Handler     string `json:"handler,omitempty"`     // what the handler does
	Rate        int    `json:"rate,omitempty"`        // events per second published (latency)
	Broker      string `json:"broker"`
	CPUs        int    `json:"cpus"` // GOMAXPROCS
}

// String returns the settings in a few words, for a table cell.
func (s Settings) String() string {
	parts := []string{fmt.Sprintf("%d ev ×%d", s.Events, s.Rounds), fmt.Sprintf("%d B", s.ValueBytes),
		fmt.Sprintf("%d part", s.Partitions), fmt.Sprintf("%d keys", s.Keys)}
	if s.Concurrency > 0 {
		parts = append(parts, fmt.Sprintf("conc %d", s.Concurrency))
	}
	if s.Handler != "" {
		parts = append(parts, s.Handler)
	}
	if s.Rate > 0 {
		parts = append(parts, fmt.Sprintf("%d/s", s.Rate))
	}
	return strings.Join(parts, ", ")
}

// Result is one row: a variant of a scenario over its rounds.
type Result struct {
	Scenario string `json:"scenario"` // produce, produce-sync, consume, slow, latency
	Variant  string `json:"variant"`  // raw, choreo, per-key, ...
	// Rate is the median over the rounds of events (or calls) per second.
	Rate   float64   `json:"events_per_sec"`
	Rates  []float64 `json:"round_rates"`
	Vs     string    `json:"vs,omitempty"`    // the variant Ratio compares with
	Ratio  float64   `json:"ratio,omitempty"` // median over the rounds of Rate / Vs's rate, paired round by round
	P50    float64   `json:"p50_ms,omitempty"`
	P99    float64   `json:"p99_ms,omitempty"`
	P50Vs  float64   `json:"p50_ratio,omitempty"` // P50 / Vs's P50 (latency rows)
	Heap   uint64    `json:"peak_heap_bytes"`     // the most heap in use while a round ran (the embedded broker's included)
	Load   string    `json:"load_average"`        // 1, 5, 15 minutes, as the last round ended
	Config Settings  `json:"settings"`
}

// series collects the rounds of one variant.
type series struct {
	scenario, variant, vs string
	settings              Settings
	rates                 []float64
	lat                   []time.Duration
	heap                  uint64
	load                  string
}

func (s *series) add(m measurement, heap uint64) {
	if m.took > 0 {
		s.rates = append(s.rates, float64(m.n)/m.took.Seconds())
	}
	s.lat = append(s.lat, m.lat...)
	s.heap = max(s.heap, heap)
	s.load = LoadAverage()
	s.settings.Rounds = len(s.rates)
}

// measurement is what one step measured.
type measurement struct {
	n    int             // events (or calls) measured
	took time.Duration   // over this time
	lat  []time.Duration // latencies, where the step measures them
}

// runner is one Run.
type runner struct {
	cfg      Config
	env      *Env
	events   *Events
	progress Progress
	series   []*series
}

// Run runs the scenarios of cfg on env and returns one result per variant
// of each, in order. Each comparison alternates the raw franz-go variant
// and the choreo one for cfg.Rounds rounds in this process, so that the
// machine's noise hits both.
//
// Sizes: produce and consume take cfg.Events events a round (and
// produce-sync a hundredth of them, at most 1,000 calls); slow takes at
// most 20,000 events per-key and 2,000 in the sequential variants, whose
// time is the handler's sleep; latency publishes at most two seconds' worth
// at cfg.Rate.
func Run(ctx context.Context, env *Env, cfg Config) ([]Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	events, err := NewEvents(cfg.Size)
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, env: env, events: events, progress: cfg.Progress}
	if r.progress == nil {
		r.progress = noProgress{}
	}
	for _, sc := range cfg.Scenarios {
		var err error
		switch sc {
		case Produce:
			err = r.produce(ctx)
		case Consume:
			err = r.consume(ctx)
		case Slow:
			err = r.slow(ctx)
		case Latency:
			err = r.latency(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return r.results(), ctx.Err()
			}
			return r.results(), fmt.Errorf("%s: %w", sc, err)
		}
	}
	return r.results(), nil
}

// withDefaults fills in the defaults and checks the values.
func (c Config) withDefaults() (Config, error) {
	if len(c.Scenarios) == 0 {
		c.Scenarios = Scenarios
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return c, fmt.Errorf("unknown scenario %q: want %s", s, strings.Join(Scenarios, ", "))
		}
	}
	// Run them in the canonical order, each once.
	var ordered []string
	for _, s := range Scenarios {
		if slices.Contains(c.Scenarios, s) {
			ordered = append(ordered, s)
		}
	}
	c.Scenarios = ordered
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Events, DefaultEvents)
	def(&c.Size, DefaultSize)
	def(&c.Partitions, DefaultPartitions)
	def(&c.Rounds, DefaultRounds)
	def(&c.Rate, DefaultRate)
	switch {
	case c.Events < 1:
		return c, fmt.Errorf("events %d: want at least 1", c.Events)
	case c.Partitions < 1:
		return c, fmt.Errorf("partitions %d: want at least 1", c.Partitions)
	case c.Rounds < 1:
		return c, fmt.Errorf("rounds %d: want at least 1", c.Rounds)
	case c.Rate < 1:
		return c, fmt.Errorf("rate %d: want at least 1 event per second", c.Rate)
	}
	if c.Broker == "" {
		c.Broker = "unknown"
	}
	return c, nil
}

// newSeries starts a result row.
func (r *runner) newSeries(scenario, variant, vs string, s Settings) *series {
	s.Broker, s.CPUs = r.cfg.Broker, runtime.GOMAXPROCS(0)
	if s.ValueBytes == 0 {
		s.ValueBytes = r.events.Size()
	}
	se := &series{scenario: scenario, variant: variant, vs: vs, settings: s}
	r.series = append(r.series, se)
	return se
}

// results turns the series into rows.
func (r *runner) results() []Result {
	byName := map[[2]string]*series{}
	for _, s := range r.series {
		byName[[2]string{s.scenario, s.variant}] = s
	}
	var out []Result
	for _, s := range r.series {
		if len(s.rates) == 0 {
			continue
		}
		res := Result{Scenario: s.scenario, Variant: s.variant, Rate: median(s.rates), Rates: s.rates,
			Heap: s.heap, Load: s.load, Config: s.settings}
		lat := slices.Clone(s.lat)
		slices.Sort(lat)
		res.P50, res.P99 = ms(percentile(lat, 50)), ms(percentile(lat, 99))
		if base := byName[[2]string{s.scenario, s.vs}]; base != nil && s.vs != "" && len(base.rates) > 0 {
			res.Vs = s.vs
			var ratios []float64
			for i := range min(len(s.rates), len(base.rates)) {
				ratios = append(ratios, s.rates[i]/base.rates[i])
			}
			if len(base.rates) != len(s.rates) { // not paired: median over median
				ratios = []float64{median(s.rates) / median(base.rates)}
			}
			res.Ratio = median(ratios)
			if bl := slices.Clone(base.lat); len(bl) > 0 && len(lat) > 0 {
				slices.Sort(bl)
				if b50 := percentile(bl, 50); b50 > 0 {
					res.P50Vs = float64(percentile(lat, 50)) / float64(b50)
				}
			}
		}
		out = append(out, res)
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// stepFunc does the work of a step, counting events in count as they are
// done, and returns what it measured.
type stepFunc func(ctx context.Context, count *atomic.Int64) (measurement, error)

// errStalled is the cause of a step's context ending for want of progress.
var errStalled = errors.New("no progress")

// step runs fn as a step named name of total events: it samples the heap
// meanwhile, reports progress, gives up after StallTimeout without an
// event counted, and adds the measurement to se (if not nil).
func (r *runner) step(parent context.Context, se *series, name string, total int, fn stepFunc) (measurement, error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	var count atomic.Int64
	r.progress.Start(name, int64(total))
	heap := sampleHeap()
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		last, since := int64(-1), time.Now()
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				n := count.Load()
				r.progress.Update(n)
				if n != last {
					last, since = n, now
				} else if now.Sub(since) > StallTimeout {
					cancel(fmt.Errorf("%s: %w for %v, at %d of %d events", name, errStalled, StallTimeout, n, total))
					return
				}
			}
		}
	}()
	m, err := fn(ctx, &count)
	close(stop)
	<-watched
	peak := heap.done()
	if cause := context.Cause(ctx); cause != nil && errors.Is(cause, errStalled) {
		err = cause
	}
	if err != nil {
		if parent.Err() != nil {
			r.progress.Finish(name + ": interrupted")
		} else {
			r.progress.Finish(fmt.Sprintf("%s: failed: %v", name, err))
		}
		return m, err
	}
	r.progress.Update(count.Load())
	if se != nil {
		se.add(m, peak)
	}
	r.progress.Finish(summary(name, m, peak))
	return m, nil
}

// summary is the progress line of a finished step.
func summary(name string, m measurement, heap uint64) string {
	s := fmt.Sprintf("%s: %d in %v", name, m.n, m.took.Round(time.Millisecond))
	if m.took > 0 {
		s += fmt.Sprintf(", %s/s", FormatCount(float64(m.n)/m.took.Seconds()))
	}
	if len(m.lat) > 0 {
		lat := slices.Clone(m.lat)
		slices.Sort(lat)
		s += fmt.Sprintf(", p50 %s p99 %s", FormatDuration(percentile(lat, 50)), FormatDuration(percentile(lat, 99)))
	}
	if heap > 0 {
		s += fmt.Sprintf(", heap %s", FormatBytes(heap))
	}
	return s + fmt.Sprintf(" (load %s)", LoadAverage())
}

// FormatCount writes n rounded, with thousands separators: 1,234,567.
func FormatCount(n float64) string {
	s := fmt.Sprintf("%.0f", n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// FormatDuration writes d in milliseconds with three significant digits.
func FormatDuration(d time.Duration) string {
	v := ms(d)
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0fms", v)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.2fms", v)
	}
}

// FormatBytes writes n in MB (10^6 bytes), or kB below one MB.
func FormatBytes(n uint64) string {
	if n < 1_000_000 {
		return fmt.Sprintf("%.0f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%.0f MB", float64(n)/1e6)
}
