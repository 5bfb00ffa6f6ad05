package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kfake"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/schema/registry"
	"github.com/choreokit/choreo/tracing"
)

// ---- own topics, as the consumer reports them ----

// probeEvent is an event type for a consumer that only has to start.
type probeEvent struct {
	ID string `avro:"id"`
}

var probeSchema = schema.MustParse(`{"type":"record","name":"Probe","namespace":"choreo.deploycheck","fields":[{"name":"id","type":"string"}]}`)

func (probeEvent) AvroSchema() *schema.Schema { return probeSchema }

var ownTopicsErr = regexp.MustCompile(`create (.+) \(each with at least (\d+) partitions and max\.message\.bytes=(\d+)\)`)

// OwnTopics runs a consumer of group, with the default options, on an
// embedded broker whose one source topic has the given partitions, and
// with provisioning off; it returns what the consumer says it needs and
// found missing: the names of its own (retry and dead-letter) topics, their
// max.message.bytes and their partitions. So the deployment files are
// checked against the consumer's own answer, not a copy of its naming rule.
func OwnTopics(group string, partitions int32) (names []string, maxBytes int, parts int32, err error) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, "deploycheck-source"))
	if err != nil {
		return nil, 0, 0, err
	}
	defer cluster.Close()
	srv, err := registry.New()
	if err != nil {
		return nil, 0, 0, err
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	reg, err := schema.NewRegistry([]string{hs.URL})
	if err != nil {
		return nil, 0, 0, err
	}
	c, err := consumer.New(connection.Config{Brokers: cluster.ListenAddrs()}, reg, group,
		consumer.NoProvisioning(), consumer.Logger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return nil, 0, 0, err
	}
	consumer.Handle(c, "deploycheck-source", func(context.Context, consumer.Event[probeEvent]) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runErr := c.Run(ctx)
	if runErr == nil || ctx.Err() != nil {
		return nil, 0, 0, fmt.Errorf("consumer with provisioning off and no own topics: Run = %v; want it to fail at once naming them", runErr)
	}
	m := ownTopicsErr.FindStringSubmatch(runErr.Error())
	if m == nil {
		return nil, 0, 0, fmt.Errorf("consumer's error does not say which topics to create: %v", runErr)
	}
	for _, n := range strings.Split(m[1], ", ") {
		names = append(names, strings.TrimSpace(n))
	}
	sort.Strings(names)
	p, _ := strconv.Atoi(m[2])
	maxBytes, _ = strconv.Atoi(m[3])
	return names, maxBytes, int32(p), nil
}

// ---- metrics ----

// Family is one metric family as Prometheus scrapes it.
type Family struct {
	Name   string
	Type   string                     // counter, gauge, histogram …
	Labels map[string]map[string]bool // label name → values seen
}

// Metrics are the families tracing.PrometheusHandler serves, by name.
type Metrics map[string]*Family

// Lookup finds the family of a series name, including a histogram's
// _bucket, _sum and _count series; extra are the labels the series has
// beyond the family's (le for buckets).
func (m Metrics) Lookup(series string) (f *Family, extra []string) {
	if f, ok := m[series]; ok {
		return f, nil
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(series, suf); ok {
			if f, ok := m[base]; ok && (f.Type == "histogram" || f.Type == "summary") {
				if suf == "_bucket" {
					return f, []string{"le"}
				}
				return f, nil
			}
		}
	}
	return nil, nil
}

// Outcomes are the consumer outcomes tracing defines; ScrapeMetrics records
// one event of each.
var Outcomes = []tracing.Outcome{tracing.OutcomeHandled, tracing.OutcomeDuplicate, tracing.OutcomeRetried, tracing.OutcomeDeadLettered, tracing.OutcomeSkipped}

// ScrapeMetrics records every instrument of tracing.Metrics once (every
// consumer outcome, both publish outcomes, a dead letter, a stuck write,
// lag, a circuit breaker's state) on a meter provider read by tracing.PrometheusHandler, scrapes the
// handler and returns the families it served: the names and labels
// dashboards and alerts can use.
func ScrapeMetrics() (Metrics, error) {
	reader, handler, err := tracing.PrometheusHandler()
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	m, err := tracing.NewMetrics(mp)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	c := m.Consumer("g", "t")
	for _, o := range Outcomes {
		c.Event(ctx, o)
	}
	c.HandlerDuration(ctx, 10*time.Millisecond)
	c.InFlight(ctx, 1)
	c.DeadLetter(ctx, choreo.KindPanic)
	c.StuckWrite(ctx, 1)
	m.Circuit(ctx, "g", "t", "shop.orders.OrderPlaced", tracing.CircuitOpen)
	m.Published(ctx, "t", time.Millisecond, nil)
	m.Published(ctx, "t", time.Millisecond, errors.New("refused"))
	reg, err := m.RegisterLag("g", func() []tracing.Lag { return []tracing.Lag{{Topic: "t", Partition: 0, Lag: 1}} })
	if err != nil {
		return nil, err
	}
	defer reg.Unregister()

	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("/metrics: status %d", rec.Code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		return nil, fmt.Errorf("/metrics: %w", err)
	}
	out := Metrics{}
	for name, mf := range fams {
		f := &Family{Name: name, Type: strings.ToLower(mf.GetType().String()), Labels: map[string]map[string]bool{}}
		for _, metric := range mf.GetMetric() {
			for _, lp := range metric.GetLabel() {
				if f.Labels[lp.GetName()] == nil {
					f.Labels[lp.GetName()] = map[string]bool{}
				}
				f.Labels[lp.GetName()][lp.GetValue()] = true
			}
		}
		out[name] = f
	}
	// Every instrument tracing names must have been served.
	for _, name := range []string{tracing.MetricConsumerEvents, tracing.MetricHandlerDuration, tracing.MetricInFlight, tracing.MetricLag,
		tracing.MetricPublishes, tracing.MetricPublishDuration, tracing.MetricDeadLetters, tracing.MetricStuckWrites, tracing.MetricCircuitState} {
		prefix := strings.ReplaceAll(name, ".", "_")
		found := false
		for served := range out {
			if strings.HasPrefix(served, prefix) {
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("/metrics serves no family for instrument %s", name)
		}
	}
	return out, nil
}
