// Package consumer is choreo's service runtime: it joins a consumer group,
// routes each record to the typed handler registered for its event type,
// runs handlers concurrently while keeping each key in order, and commits an
// offset only once every record before it is done.
//
// # Handlers
//
// A handler is registered per topic and event type with Handle:
//
//	c, err := consumer.New(conn, reg, "payment-service")
//	consumer.Handle(c, "orders", func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
//		return charge(ctx, ev.Data)
//	})
//	err = c.Run(ctx)
//
// The event type is read from the ce_type header (the Avro full name of the
// value's schema) and the value is decoded with the handler type's schema as
// reader schema, so producers may evolve their schemas compatibly. The
// handler's context carries the event's metadata: a producer publishing with
// it gives the new event the same correlation id, and this event's id as
// causation id.
//
// # Ordering
//
// By key (the default): records with the same key are handled one at a time
// in offset order; records with different keys run concurrently, up to
// Concurrency. By partition: one record at a time per partition. Unordered:
// any record may run beside any other.
//
// # Delivery and commits
//
// Delivery into handlers is at least once. A record is done when its handler
// succeeded, when it was skipped as a duplicate, or when it was dead-lettered
// (with the dead letter acknowledged by the broker). The consumer commits,
// per partition, the offset after the longest run of done records from the
// last commit: never past a record that is not done. It commits every
// CommitInterval, when partitions are revoked, and when Run returns. After a
// crash, processing resumes at the first record that was not done; records
// after it that were already handled are delivered again (at most
// MaxUncommitted per partition): a durable store (idempotency/pgstore)
// skips them, the memory store only while this process still holds their
// marks. Commits happen one at a time and never move an offset back, and a
// partition given up is never committed again. Records of aborted producer
// transactions are never read (read_committed).
//
// # Idempotency
//
// Every record's ce_id is looked up in an idempotency.Store under the
// consumer group before its handler runs, and marked processed only after
// the handler succeeded. The default store is in memory; use a durable one
// (idempotency/pgstore) to make effects exactly once across restarts.
//
// # Backpressure
//
// At most MaxInFlight records (and MaxInFlightBytes of values) are taken on
// at a time: polled and not yet done. At the cap the consumer stops polling,
// so memory stays bounded whatever the backlog.
//
// # Circuit breakers
//
// Each route (topic and event type) has a circuit breaker (see Breaker).
// When its handler keeps failing with retryable errors, because a
// database, the schema registry or another dependency is down, the
// breaker opens: the route's records wait, uncommitted and without
// spending their attempts, and fetching its topic is paused, instead of
// every record burning its retries into the retry topics and the
// dead-letter topic. After a cool-down one probe goes through; its success
// closes the breaker and consumption resumes.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/idempotency"
	"github.com/choreokit/choreo/schema"
)

// Ordering says which records may be handled at the same time.
type Ordering int

// The orderings.
const (
	PerKey       Ordering = iota // same key in offset order; different keys concurrently (default)
	PerPartition                 // one record at a time per partition
	Unordered                    // no order: any records concurrently
)

// String names the ordering.
func (o Ordering) String() string {
	switch o {
	case PerKey:
		return "per-key"
	case PerPartition:
		return "per-partition"
	case Unordered:
		return "unordered"
	}
	return fmt.Sprintf("Ordering(%d)", int(o))
}

// Event is a decoded event handed to a handler: its data and everything the
// record said about it.
type Event[T any] struct {
	choreo.Metadata // id, type, source, time, correlation and causation ids

	Data T // the decoded value

	Key       string
	Topic     string
	Partition int32
	Offset    int64
	Timestamp time.Time // the record's timestamp
	Headers   []kgo.RecordHeader
	Attempt   int // 1 for the first delivery into a handler, counting retries
}

// Handler handles one event.
type Handler[T any] func(ctx context.Context, ev Event[T]) error

// route is a registered handler, typed away.
type route struct {
	reader  *schema.Schema
	invoke  func(ctx context.Context, d *delivery) error
	breaker *breaker // set by Run; nil when the route's breaker is off
}

// Consumer is a member of a consumer group that hands records to handlers.
// Register handlers with Handle before calling Run.
type Consumer struct {
	group string
	cfg   config
	conn  connection.Config
	reg   *schema.Registry
	codec *schema.Codec
	log   *slog.Logger

	mu     sync.Mutex
	routes map[string]map[string]*route // topic → ce_type → route
	topics []string
	ran    bool

	retryTopics  []string       // retry topic of each tier
	retryTier    map[string]int // retry topic → tier (1-based)
	redriveTopic string         // dlq.RedriveTopic(group): read always, its records routed like retry records

	stats  stats
	health health
	rt     atomic.Pointer[runtime] // the Run under way, for Stats
}

// New returns a consumer for group, connecting as conn says and decoding
// with the schemas of reg. The group is the service's identity: its
// idempotency scope, and the name its retry and dead-letter topics are
// derived from.
func New(conn connection.Config, reg *schema.Registry, group string, opts ...Option) (*Consumer, error) {
	if err := checkGroup(group); err != nil {
		return nil, err
	}
	if reg == nil {
		return nil, errors.New("consumer: a schema registry is required")
	}
	if _, err := conn.ClientOptions(); err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	cfg := defaults()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	if cfg.store == nil {
		cfg.store = idempotency.NewMemory()
	}
	if cfg.maxUncommitted == 0 {
		cfg.maxUncommitted = cfg.maxInFlight
	}
	if cfg.service == "" {
		cfg.service = group
	}
	if cfg.deadLetterTopic == "" {
		cfg.deadLetterTopic = dlq.Topic(group)
	}
	if _, err := dlq.TopicFor(group); err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	c := &Consumer{
		group:  group,
		cfg:    cfg,
		conn:   conn,
		reg:    reg,
		codec:  schema.NewCodec(reg, cfg.codecOpts...),
		log:    cfg.logger.With("group", group),
		routes: map[string]map[string]*route{},
	}
	c.redriveTopic = dlq.RedriveTopic(group)
	c.retryTopics = make([]string, len(cfg.retryDelays))
	c.retryTier = map[string]int{}
	for i, d := range cfg.retryDelays {
		c.retryTopics[i] = retryTopicName(group, i+1, d)
		c.retryTier[c.retryTopics[i]] = i + 1
	}
	return c, nil
}

var legalGroup = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,200}$`)

func checkGroup(group string) error {
	if !legalGroup.MatchString(group) {
		return fmt.Errorf("consumer: group %q: want 1 to 200 of a-z A-Z 0-9 . _ - (it names the service's retry and dead-letter topics)", group)
	}
	return nil
}

// Group returns the consumer group.
func (c *Consumer) Group() string { return c.group }

// Topics returns the topics handlers are registered on, in the order they
// were first registered: the source topics the consumer reads (besides
// its own retry and redrive topics).
func (c *Consumer) Topics() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.topics)
}

// Handle registers fn for events of type T (the Avro full name of T's
// schema) on topic. It panics if the consumer already runs or the pair
// already has a handler: both are programming errors found at start-up.
func Handle[T schema.Event](c *Consumer, topic string, fn Handler[T]) {
	var zero T
	reader := zero.AvroSchema()
	if reader == nil {
		panic(fmt.Sprintf("consumer.Handle: %T.AvroSchema() returned nil", zero))
	}
	r := &route{
		reader: reader,
		invoke: func(ctx context.Context, d *delivery) error {
			var data T
			if _, err := c.codec.Decode(ctx, d.rec.Value, reader, &data); err != nil {
				return err
			}
			return fn(ctx, Event[T]{
				Metadata:  d.md,
				Data:      data,
				Key:       string(d.rec.Key),
				Topic:     d.rec.Topic,
				Partition: d.rec.Partition,
				Offset:    d.rec.Offset,
				Timestamp: d.rec.Timestamp,
				Headers:   d.rec.Headers,
				Attempt:   d.priorAttempts + d.attempt,
			})
		},
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ran {
		panic("consumer.Handle: called after Run")
	}
	byType, ok := c.routes[topic]
	if !ok {
		byType = map[string]*route{}
		c.routes[topic] = byType
		c.topics = append(c.topics, topic)
	}
	if _, dup := byType[reader.FullName()]; dup {
		panic(fmt.Sprintf("consumer.Handle: a handler for %s on %s is already registered", reader.FullName(), topic))
	}
	byType[reader.FullName()] = r
}

// stats are the consumer's counters, read by Stats.
type stats struct {
	inFlight      atomic.Int64
	inFlightBytes atomic.Int64
	peakInFlight  atomic.Int64
	handled       atomic.Int64
	duplicates    atomic.Int64
	deadLettered  atomic.Int64
	retried       atomic.Int64
	forwarded     atomic.Int64
	writeFailures atomic.Int64
	skipped       atomic.Int64
	commits       atomic.Int64
	abandoned     atomic.Int64
	circuitWaits  atomic.Int64
	lastPoll      atomic.Int64 // unix nanos of the last poll loop step
	loop          atomic.Int32 // loopNotStarted, loopWaiting, loopBusy, loopEnded
	assigned      atomic.Int64 // partitions currently assigned
	joined        atomic.Bool
}

// Poll loop states, for Live.
const (
	loopNotStarted int32 = iota
	loopWaiting          // in PollRecords or waiting at the in-flight cap
	loopBusy             // dispatching polled records
	loopEnded
)

// Stats is a snapshot of the consumer's counters.
type Stats struct {
	InFlight      int64 // records taken on and not done
	PeakInFlight  int64 // the most records in flight at once since New
	Handled       int64 // handlers that succeeded
	Duplicates    int64 // records skipped as already processed
	Retried       int64 // handler attempts that failed and were retried in process
	Forwarded     int64 // records forwarded to a retry topic
	WriteFailures int64 // failed dead-letter writes and retry-topic forwards (each is retried)
	DeadLettered  int64 // records sent to the dead-letter topic
	Skipped       int64 // records of unknown type skipped
	Commits       int64 // successful offset commits
	Abandoned     int64 // handlers left running past RevokeTimeout or ShutdownTimeout because they ignored their context
	Uncommitted   int64 // records tracked and not yet committable, over the partitions owned (at most MaxUncommitted each)
	Assigned      int64 // partitions assigned now
	// CircuitWaits counts the times a record was held by its route's
	// circuit breaker (open, or half-open with its probe under way)
	// instead of making an attempt.
	CircuitWaits int64
	// Circuits is the state of each route's circuit breaker while Run
	// runs, keyed topic/eventType: "closed", "half-open" or "open".
	Circuits map[string]string
}

// Stats returns the consumer's counters.
func (c *Consumer) Stats() Stats {
	s := &c.stats
	return Stats{
		InFlight: s.inFlight.Load(), PeakInFlight: s.peakInFlight.Load(),
		Handled: s.handled.Load(), Duplicates: s.duplicates.Load(), Retried: s.retried.Load(), Forwarded: s.forwarded.Load(), WriteFailures: s.writeFailures.Load(),
		DeadLettered: s.deadLettered.Load(), Skipped: s.skipped.Load(), Commits: s.commits.Load(), Abandoned: s.abandoned.Load(),
		Assigned: s.assigned.Load(), Uncommitted: c.uncommitted(),
		CircuitWaits: s.circuitWaits.Load(), Circuits: c.circuits(),
	}
}

// circuits returns the state of the running consumer's breakers.
func (c *Consumer) circuits() map[string]string {
	rt := c.rt.Load()
	if rt == nil {
		return nil
	}
	return rt.circuits()
}

// uncommitted sums the backlogs of the partitions the running consumer
// tracks.
func (c *Consumer) uncommitted() int64 {
	rt := c.rt.Load()
	if rt == nil {
		return 0
	}
	rt.partsMu.Lock()
	defer rt.partsMu.Unlock()
	var n int64
	for _, p := range rt.parts {
		n += int64(p.backlog())
	}
	return n
}

// Live reports whether the consumer is working: not started yet, or
// running with its poll loop either waiting (for records, or at the
// in-flight cap) or having moved within the last minute. It is false once
// Run has returned. Use it for a liveness probe.
func (c *Consumer) Live() bool {
	switch c.stats.loop.Load() {
	case loopNotStarted:
		return true
	case loopWaiting:
		return true
	case loopBusy:
		return time.Since(time.Unix(0, c.stats.lastPoll.Load())) < time.Minute
	}
	return false // ended
}

// Ready reports whether the consumer has joined its group and nothing
// holds it back (see CheckReady). Use it for a readiness probe.
func (c *Consumer) Ready() bool { return c.CheckReady() == nil }

// CheckReady returns nil when the consumer is ready, and otherwise an
// error that says why not: not joined yet, or a condition a person must
// see, such as a dead-letter write that keeps failing or a topic the
// service needs that does not exist. A readiness endpoint can serve its
// text.
func (c *Consumer) CheckReady() error {
	c.health.mu.Lock()
	defer c.health.mu.Unlock()
	var why []string
	if !c.stats.joined.Load() {
		why = append(why, "not a member of group "+c.group+" yet")
	}
	for _, k := range c.health.order {
		why = append(why, c.health.reasons[k])
	}
	if len(why) == 0 {
		return nil
	}
	return fmt.Errorf("consumer %s not ready: %s", c.group, strings.Join(why, "; "))
}

// health holds the conditions that make the consumer not ready, each under
// a key so the code that found it can clear it.
type health struct {
	mu      sync.Mutex
	reasons map[string]string
	order   []string // keys in the order they were set
}

// setNotReady records a condition that makes the consumer not ready; a
// second call with the same key replaces its text.
func (c *Consumer) setNotReady(key, why string) {
	h := &c.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.reasons == nil {
		h.reasons = map[string]string{}
	}
	if _, ok := h.reasons[key]; !ok {
		h.order = append(h.order, key)
	}
	h.reasons[key] = why
}

// clearNotReady removes the condition recorded under key.
func (c *Consumer) clearNotReady(key string) {
	h := &c.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.reasons[key]; !ok {
		return
	}
	delete(h.reasons, key)
	for i, k := range h.order {
		if k == key {
			h.order = append(h.order[:i], h.order[i+1:]...)
			break
		}
	}
}
