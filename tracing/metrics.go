package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/choreokit/choreo"
)

// Metric names. In Prometheus they read with dots as underscores, a unit
// suffix for durations (_seconds) and _total for counters, for example
// choreo_consumer_events_total and choreo_consumer_handler_duration_seconds.
const (
	// MetricConsumerEvents counts records the consumer finished with, by
	// outcome (an Outcome), topic and group. Unit {event}.
	MetricConsumerEvents = "choreo.consumer.events"
	// MetricHandlerDuration is the time handlers ran, by topic and group.
	// Unit s.
	MetricHandlerDuration = "choreo.consumer.handler.duration"
	// MetricInFlight is the number of records taken from Kafka and not yet
	// done, by topic and group. Unit {record}.
	MetricInFlight = "choreo.consumer.in_flight"
	// MetricLag is how many records a group has still to consume, by group,
	// topic and partition: the high watermark minus the committed offset.
	// Unit {record}.
	MetricLag = "choreo.consumer.lag"
	// MetricPublishes counts publishes by topic and outcome (ok, error).
	// Unit {event}.
	MetricPublishes = "choreo.producer.publishes"
	// MetricPublishDuration is the time from publish to the broker's
	// answer, by topic and outcome. Unit s.
	MetricPublishDuration = "choreo.producer.publish.duration"
	// MetricDeadLetters counts records written to dead-letter topics, by
	// group, original topic and error kind. Unit {event}.
	MetricDeadLetters = "choreo.dlq.dead_letters"
	// MetricStuckWrites is the number of records whose dead-letter write
	// or retry-topic forward has kept failing for longer than the
	// consumer allows (consumer.StuckAfter), by group and topic (the
	// topic the record was consumed from). Each holds its partition's
	// commits until the write succeeds. Unit {record}.
	MetricStuckWrites = "choreo.consumer.stuck_writes"
	// MetricCircuitState is the state of each circuit breaker of a
	// consumer, by group, topic and event type (the route the breaker
	// guards): 0 closed, 1 half-open, 2 open (the CircuitState values).
	// Unit {state}.
	MetricCircuitState = "choreo.consumer.circuit.state"
)

// CircuitState is a circuit breaker's state as MetricCircuitState
// reports it.
type CircuitState int64

// The circuit breaker states.
const (
	CircuitClosed   CircuitState = 0 // attempts go through
	CircuitHalfOpen CircuitState = 1 // a probe attempt is let through after the cool-down
	CircuitOpen     CircuitState = 2 // attempts wait; fetching of the route's topic is paused
)

// String names the state: closed, half-open or open.
func (s CircuitState) String() string {
	switch s {
	case CircuitClosed:
		return "closed"
	case CircuitHalfOpen:
		return "half-open"
	case CircuitOpen:
		return "open"
	}
	return fmt.Sprintf("CircuitState(%d)", int64(s))
}

// Metric attribute keys. They are short because they become Prometheus
// labels that operators type.
const (
	MetricAttrOutcome   = attribute.Key("outcome")    // an Outcome; for publishes ok or error
	MetricAttrTopic     = attribute.Key("topic")      // the topic consumed from or published to
	MetricAttrGroup     = attribute.Key("group")      // the consumer group
	MetricAttrPartition = attribute.Key("partition")  // a partition number
	MetricAttrErrorKind = attribute.Key("error.kind") // a choreo.ErrorKind
	MetricAttrEventType = attribute.Key("event.type") // a ce_type: the Avro full name of an event's schema
)

// Outcomes of a publish in MetricPublishes.
const (
	PublishOK    = "ok"
	PublishError = "error"
)

// durationBuckets are the histogram boundaries in seconds the messaging
// conventions advise for messaging durations.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// Metrics holds choreo's instruments. Make one per process (or per
// producer and consumer) with NewMetrics; its methods are safe for
// concurrent use and a nil *Metrics records nothing.
//
// Recording is cheap on the hot path: the attribute sets of a topic (and
// group) are built once, on first use, and reused.
type Metrics struct {
	meter           metric.Meter
	consumerEvents  metric.Int64Counter
	handlerDuration metric.Float64Histogram
	inFlight        metric.Int64UpDownCounter
	lag             metric.Int64ObservableGauge
	publishes       metric.Int64Counter
	publishDuration metric.Float64Histogram
	deadLetters     metric.Int64Counter
	stuckWrites     metric.Int64UpDownCounter
	circuitState    metric.Int64Gauge

	consumers sync.Map // consumerKey → *ConsumerMetrics
	topics    sync.Map // string → *topicMetrics
}

type consumerKey struct{ group, topic string }

// NewMetrics creates choreo's instruments with a meter from mp; a nil mp
// means the global meter provider (otel.GetMeterProvider()) at the time of
// the call.
func NewMetrics(mp metric.MeterProvider) (*Metrics, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := &Metrics{meter: mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))}
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	m.consumerEvents, err = m.meter.Int64Counter(MetricConsumerEvents, metric.WithUnit("{event}"),
		metric.WithDescription("Records the consumer finished with, by outcome (handled, duplicate, retried, dead_lettered, skipped)."))
	check(err)
	m.handlerDuration, err = m.meter.Float64Histogram(MetricHandlerDuration, metric.WithUnit("s"),
		metric.WithDescription("Time event handlers ran."), metric.WithExplicitBucketBoundaries(durationBuckets...))
	check(err)
	m.inFlight, err = m.meter.Int64UpDownCounter(MetricInFlight, metric.WithUnit("{record}"),
		metric.WithDescription("Records taken from Kafka and not yet done."))
	check(err)
	m.lag, err = m.meter.Int64ObservableGauge(MetricLag, metric.WithUnit("{record}"),
		metric.WithDescription("Records a consumer group has still to consume: high watermark minus committed offset."))
	check(err)
	m.publishes, err = m.meter.Int64Counter(MetricPublishes, metric.WithUnit("{event}"),
		metric.WithDescription("Events published, by outcome (ok, error)."))
	check(err)
	m.publishDuration, err = m.meter.Float64Histogram(MetricPublishDuration, metric.WithUnit("s"),
		metric.WithDescription("Time from publish to the broker's acknowledgement or the failure."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	check(err)
	m.deadLetters, err = m.meter.Int64Counter(MetricDeadLetters, metric.WithUnit("{event}"),
		metric.WithDescription("Records written to dead-letter topics, by error kind."))
	check(err)
	m.stuckWrites, err = m.meter.Int64UpDownCounter(MetricStuckWrites, metric.WithUnit("{record}"),
		metric.WithDescription("Records whose dead-letter write or retry-topic forward keeps failing: each holds its partition's commits."))
	check(err)
	m.circuitState, err = m.meter.Int64Gauge(MetricCircuitState, metric.WithUnit("{state}"),
		metric.WithDescription("State of the consumer's circuit breaker of a route (topic and event type): 0 closed, 1 half-open, 2 open."))
	check(err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("tracing: metrics: %w", err)
	}
	return m, nil
}

// attrOpts holds one prepared attribute set as the option slices the
// instruments take, so that recording allocates nothing.
type attrOpts struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

func newAttrOpts(kvs ...attribute.KeyValue) attrOpts {
	o := metric.WithAttributeSet(attribute.NewSet(kvs...))
	return attrOpts{add: []metric.AddOption{o}, rec: []metric.RecordOption{o}}
}

// ConsumerMetrics records the consumer metrics of one group and topic. Get
// it from Metrics.Consumer; a nil *ConsumerMetrics records nothing.
type ConsumerMetrics struct {
	m        *Metrics
	group    string
	topic    string
	base     attrOpts    // group, topic
	outcomes [5]attrOpts // indexed by outcomeIndex
	kinds    sync.Map    // choreo.ErrorKind → attrOpts
}

// Consumer returns the instruments for records of topic consumed by group.
// The result is cached: calling Consumer per record is fine, keeping it is
// cheaper.
func (m *Metrics) Consumer(group, topic string) *ConsumerMetrics {
	if m == nil {
		return nil
	}
	k := consumerKey{group, topic}
	if c, ok := m.consumers.Load(k); ok {
		return c.(*ConsumerMetrics)
	}
	c := &ConsumerMetrics{m: m, group: group, topic: topic}
	g, t := MetricAttrGroup.String(group), MetricAttrTopic.String(topic)
	c.base = newAttrOpts(g, t)
	for i, o := range []Outcome{OutcomeHandled, OutcomeDuplicate, OutcomeRetried, OutcomeDeadLettered, OutcomeSkipped} {
		c.outcomes[i] = newAttrOpts(g, t, MetricAttrOutcome.String(string(o)))
	}
	actual, _ := m.consumers.LoadOrStore(k, c)
	return actual.(*ConsumerMetrics)
}

func outcomeIndex(o Outcome) int {
	switch o {
	case OutcomeHandled:
		return 0
	case OutcomeDuplicate:
		return 1
	case OutcomeRetried:
		return 2
	case OutcomeDeadLettered:
		return 3
	case OutcomeSkipped:
		return 4
	}
	return -1
}

// Event counts one record finished with outcome (choreo.consumer.events).
func (c *ConsumerMetrics) Event(ctx context.Context, outcome Outcome) {
	if c == nil {
		return
	}
	if i := outcomeIndex(outcome); i >= 0 {
		c.m.consumerEvents.Add(ctx, 1, c.outcomes[i].add...)
		return
	}
	c.m.consumerEvents.Add(ctx, 1, metric.WithAttributes(
		MetricAttrGroup.String(c.group), MetricAttrTopic.String(c.topic), MetricAttrOutcome.String(string(outcome))))
}

// HandlerDuration records how long a handler ran
// (choreo.consumer.handler.duration, in seconds).
func (c *ConsumerMetrics) HandlerDuration(ctx context.Context, d time.Duration) {
	if c == nil {
		return
	}
	c.m.handlerDuration.Record(ctx, d.Seconds(), c.base.rec...)
}

// InFlight adds delta to the records in flight (choreo.consumer.in_flight):
// +1 when a record is taken from a fetch, -1 when it is done.
func (c *ConsumerMetrics) InFlight(ctx context.Context, delta int64) {
	if c == nil {
		return
	}
	c.m.inFlight.Add(ctx, delta, c.base.add...)
}

// DeadLetter counts one record of this group and topic written to the
// dead-letter topic because of a failure of kind (choreo.dlq.dead_letters).
func (c *ConsumerMetrics) DeadLetter(ctx context.Context, kind choreo.ErrorKind) {
	if c == nil {
		return
	}
	o, ok := c.kinds.Load(kind)
	if !ok {
		o, _ = c.kinds.LoadOrStore(kind, newAttrOpts(
			MetricAttrGroup.String(c.group), MetricAttrTopic.String(c.topic), MetricAttrErrorKind.String(string(kind))))
	}
	c.m.deadLetters.Add(ctx, 1, o.(attrOpts).add...)
}

// StuckWrite adds delta to the records of this group and topic whose
// dead-letter write or retry-topic forward is stuck
// (choreo.consumer.stuck_writes): +1 when a record becomes stuck, -1 when
// its write succeeds or the consumer gives the record up.
func (c *ConsumerMetrics) StuckWrite(ctx context.Context, delta int64) {
	if c == nil {
		return
	}
	c.m.stuckWrites.Add(ctx, delta, c.base.add...)
}

// Circuit records the state of group's circuit breaker for events of
// eventType on topic (choreo.consumer.circuit.state).
func (m *Metrics) Circuit(ctx context.Context, group, topic, eventType string, state CircuitState) {
	if m == nil {
		return
	}
	m.circuitState.Record(ctx, int64(state), metric.WithAttributes(
		MetricAttrGroup.String(group), MetricAttrTopic.String(topic), MetricAttrEventType.String(eventType)))
}

// Lag is the consumer lag of one partition: records between the group's
// committed offset and the partition's high watermark.
type Lag struct {
	Topic     string
	Partition int32
	Lag       int64
}

// RegisterLag makes the choreo.consumer.lag gauge report, for group, what
// fn returns each time metrics are collected (a Prometheus scrape, an OTLP
// export). fn must be quick and safe to call from another goroutine: return
// the lag the consumer last computed rather than asking the broker. Call
// Unregister on the result when the consumer stops.
func (m *Metrics) RegisterLag(group string, fn func() []Lag) (metric.Registration, error) {
	if m == nil {
		return noRegistration{}, nil
	}
	g := MetricAttrGroup.String(group)
	reg, err := m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, l := range fn() {
			o.ObserveInt64(m.lag, l.Lag, metric.WithAttributes(
				g, MetricAttrTopic.String(l.Topic), MetricAttrPartition.Int(int(l.Partition))))
		}
		return nil
	}, m.lag)
	if err != nil {
		return nil, fmt.Errorf("tracing: register lag callback: %w", err)
	}
	return reg, nil
}

type noRegistration struct{ metric.Registration }

// Unregister does nothing: nothing was registered.
func (noRegistration) Unregister() error { return nil }

// topicMetrics holds the prepared attribute sets of one topic's publishes.
type topicMetrics struct{ ok, failed attrOpts }

// Published records one publish to topic that took d from the call to the
// broker's answer: choreo.producer.publishes and
// choreo.producer.publish.duration, with outcome error when err is not nil.
func (m *Metrics) Published(ctx context.Context, topic string, d time.Duration, err error) {
	if m == nil {
		return
	}
	v, ok := m.topics.Load(topic)
	if !ok {
		t := MetricAttrTopic.String(topic)
		v, _ = m.topics.LoadOrStore(topic, &topicMetrics{
			ok:     newAttrOpts(t, MetricAttrOutcome.String(PublishOK)),
			failed: newAttrOpts(t, MetricAttrOutcome.String(PublishError)),
		})
	}
	tm := v.(*topicMetrics)
	o := tm.ok
	if err != nil {
		o = tm.failed
	}
	m.publishes.Add(ctx, 1, o.add...)
	m.publishDuration.Record(ctx, d.Seconds(), o.rec...)
}

// PrometheusHandler returns a metric reader backed by the OpenTelemetry
// Prometheus exporter and the http.Handler that serves what it reads in the
// Prometheus exposition format. Pass the reader to Setup (WithMetricReader)
// or to an SDK MeterProvider, and mount the handler on /metrics:
//
//	reader, metrics, err := tracing.PrometheusHandler()
//	…
//	shutdown, err := tracing.Setup(ctx, "payment", tracing.WithMetricReader(reader))
//	…
//	mux.Handle("GET /metrics", metrics)
//
// Each call has a Prometheus registry of its own (not the global one), so
// metrics of other libraries are not mixed in. opts are passed to the
// exporter.
func PrometheusHandler(opts ...otelprom.Option) (sdkmetric.Reader, http.Handler, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(append([]otelprom.Option{otelprom.WithRegisterer(reg)}, opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: prometheus exporter: %w", err)
	}
	return exp, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), nil
}
