package consumer

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/idempotency"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/tracing"
)

// UnknownType says what to do with a record whose ce_type has no handler on
// its topic.
type UnknownType int

// The choices for records of unknown type.
const (
	SkipUnknown       UnknownType = iota // count it and commit past it (default: a topic may carry types this service does not need)
	DeadLetterUnknown                    // send it to the dead-letter topic
)

type config struct {
	concurrency      int
	ordering         Ordering
	maxInFlight      int
	maxInFlightBytes int64
	maxUncommitted   int                 // per partition; 0: maxInFlight
	commitHook       func(periodic bool) // tests: runs in a commit between reading the offsets and sending them
	maxValueBytes    int
	commitInterval   time.Duration
	handlerTimeout   time.Duration
	revokeTimeout    time.Duration
	shutdownTimeout  time.Duration
	store            idempotency.Store
	logger           *slog.Logger
	codecOpts        []schema.CodecOption
	kgoOpts          []kgo.Opt
	startAtLatest    bool
	unknown          UnknownType
	retry            RetryPolicy
	retryDelays      []time.Duration // one retry topic per delay; empty: blocking retries only
	classify         func(error) choreo.ErrorKind
	service          string
	deadLetterTopic  string
	provision        bool
	redact           []string
	production       bool          // dead-letter envelope schema looked up, never registered (deadletter.go)
	stuckAfter       time.Duration // a failing dead-letter write or forward is stuck after this; 0: defaultStuckAfter
	failOnStuck      bool          // a stuck write ends Run with an error
	metrics          *tracing.Metrics
	breaker          Breaker               // every route's circuit breaker (breaker.go)
	routeBreakers    map[routeName]Breaker // routes with a breaker of their own
}

func defaults() config {
	return config{
		concurrency:      16,
		ordering:         PerKey,
		maxInFlight:      1024,
		maxInFlightBytes: 64 << 20,
		maxValueBytes:    8 << 20,
		commitInterval:   time.Second,
		handlerTimeout:   30 * time.Second,
		revokeTimeout:    20 * time.Second,
		shutdownTimeout:  30 * time.Second,
		logger:           slog.Default(),
		retry:            DefaultRetryPolicy(),
		retryDelays:      DefaultRetryDelays(),
		provision:        true,
	}
}

// DefaultRetryDelays returns the delays of the default retry topics: 10
// seconds, 1 minute, 10 minutes.
func DefaultRetryDelays() []time.Duration {
	return []time.Duration{10 * time.Second, time.Minute, 10 * time.Minute}
}

func (c *config) validate() error {
	switch {
	case c.concurrency < 1:
		return fmt.Errorf("concurrency %d: want at least 1", c.concurrency)
	case c.maxInFlight < 1:
		return fmt.Errorf("max in flight %d: want at least 1", c.maxInFlight)
	case c.maxUncommitted < 0:
		return fmt.Errorf("max uncommitted %d: want at least 1", c.maxUncommitted)
	case c.maxInFlightBytes < 1:
		return fmt.Errorf("max in-flight bytes %d: want at least 1", c.maxInFlightBytes)
	case c.maxValueBytes < 1:
		return fmt.Errorf("max value bytes %d: want at least 1", c.maxValueBytes)
	case c.commitInterval <= 0:
		return fmt.Errorf("commit interval %v: want more than 0", c.commitInterval)
	case c.handlerTimeout <= 0:
		return fmt.Errorf("handler timeout %v: want more than 0", c.handlerTimeout)
	case c.revokeTimeout <= 0 || c.shutdownTimeout <= 0:
		return errors.New("revoke and shutdown timeouts must be more than 0")
	case c.ordering < PerKey || c.ordering > Unordered:
		return fmt.Errorf("unknown ordering %d", c.ordering)
	case c.logger == nil:
		return errors.New("nil logger")
	}
	for _, d := range c.retryDelays {
		if d <= 0 {
			return fmt.Errorf("retry topic delay %v: want more than 0", d)
		}
	}
	if err := c.validateBreakers(); err != nil {
		return err
	}
	return c.retry.validate()
}

// Option configures a Consumer.
type Option func(*config)

// Concurrency sets how many handlers may run at once (default 16).
func Concurrency(n int) Option { return func(c *config) { c.concurrency = n } }

// WithOrdering sets which records may run at the same time (default PerKey).
func WithOrdering(o Ordering) Option { return func(c *config) { c.ordering = o } }

// MaxInFlight caps the records taken on and not yet done (default 1024).
// At the cap the consumer stops fetching.
func MaxInFlight(n int) Option { return func(c *config) { c.maxInFlight = n } }

// MaxUncommitted caps, per partition, the records taken on and not yet
// committable: in flight, or done behind a record that is not done yet
// (default: the MaxInFlight value). When one record is stuck (a hung
// handler, a long retry, a dead-letter outage), the records after it are
// handled until the cap; the rest of the partition's fetch is parked
// within the in-flight budget (not fetched again), and once the head has
// been stuck a while the partition's fetching is paused until its backlog
// drains. That bounds what a restart redelivers (fewer than this many done
// records of the partition) and the tracker's memory (this many records
// per partition, about 16 bytes each, plus at most MaxInFlight parked
// records for a stuck partition).
func MaxUncommitted(n int) Option { return func(c *config) { c.maxUncommitted = n } }

// MaxInFlightBytes caps the value bytes of records in flight (default 64
// MiB). It also sizes the client's fetches (a 64th of it, 1 to 16 MiB),
// since what is fetched ahead is memory too; kgo.FetchMaxBytes through
// ClientOptions overrides that.
func MaxInFlightBytes(n int64) Option { return func(c *config) { c.maxInFlightBytes = n } }

// MaxValueBytes sets the largest value the consumer will decode (default 8
// MiB); a larger one is dead-lettered as choreo.KindTooLarge.
func MaxValueBytes(n int) Option { return func(c *config) { c.maxValueBytes = n } }

// CommitInterval sets how often done offsets are committed (default 1s).
func CommitInterval(d time.Duration) Option { return func(c *config) { c.commitInterval = d } }

// HandlerTimeout sets the deadline of each handler call (default 30s). A
// handler must honour its context: Go cannot stop a goroutine, so a handler
// that ignores the deadline holds its key (and a worker) until it returns.
// One that fails after its deadline fails as choreo.KindTimeout, which is
// retried like any retryable error (see Classify).
func HandlerTimeout(d time.Duration) Option { return func(c *config) { c.handlerTimeout = d } }

// RevokeTimeout bounds how long a revocation waits for the running handlers
// of the revoked partitions before committing (default 20s; keep it under
// the group's rebalance timeout).
func RevokeTimeout(d time.Duration) Option { return func(c *config) { c.revokeTimeout = d } }

// ShutdownTimeout bounds how long Run waits for running handlers after its
// context ends (default 30s).
func ShutdownTimeout(d time.Duration) Option { return func(c *config) { c.shutdownTimeout = d } }

// Store sets the idempotency store (default: idempotency.NewMemory()).
func Store(s idempotency.Store) Option { return func(c *config) { c.store = s } }

// Logger sets the logger (default slog.Default()).
func Logger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// CodecOptions passes options to the consumer's codec.
func CodecOptions(opts ...schema.CodecOption) Option {
	return func(c *config) { c.codecOpts = append(c.codecOpts, opts...) }
}

// ClientOptions adds franz-go options to the consumer's client (fetch
// sizes, session timeout …). Options that take over group handling
// (commits, rebalance callbacks) break the consumer's guarantees.
func ClientOptions(opts ...kgo.Opt) Option {
	return func(c *config) { c.kgoOpts = append(c.kgoOpts, opts...) }
}

// StartAtLatest makes a group with no committed offsets start at the end of
// its topics. The default is the start: a new service sees every event
// still retained.
func StartAtLatest() Option { return func(c *config) { c.startAtLatest = true } }

// OnUnknownType sets what happens to records of a type without a handler.
func OnUnknownType(u UnknownType) Option { return func(c *config) { c.unknown = u } }

// Retry sets the in-process retry policy for retryable handler errors.
func Retry(p RetryPolicy) Option { return func(c *config) { c.retry = p } }

// RetryTopics sets the delays of the service's retry topics (default 10s,
// 1m, 10m). A record still failing after its in-process attempts is
// forwarded to the first retry topic, to be handled again once the delay
// has passed; failing there, to the next; after the last, it is
// dead-lettered as choreo.KindRetriesExhausted. Meanwhile the records after
// it, even of the same key, go on: retry topics trade order for liveness.
// The topics are named <group>.retry.<n>-<delay>, e.g. payments.retry.1-10s.
//
// Changing the delays leaves the old topics behind, maybe with records
// waiting in them whose source offsets are committed. Run finds the
// group's retry topics that the configuration no longer writes to (by
// exact name) and keeps consuming them: their records are handled when
// due, like any retry record, and one that fails again goes on to the
// current configuration's next tier after its own (a record from old tier
// n to tier n+1), or, if there is none, to the dead-letter topic. Delete
// an old topic once the group has no lag on it.
func RetryTopics(delays ...time.Duration) Option {
	return func(c *config) { c.retryDelays = append([]time.Duration(nil), delays...) }
}

// BlockingRetries turns retry topics off: a failing record is retried in
// process only (see Retry), holding its key, and then dead-lettered. Choose
// it when the order of a key's events matters more than liveness.
//
// Records that earlier configurations forwarded to retry topics are still
// read from them (see RetryTopics); with no retry topics to go on to, one
// that fails again is dead-lettered.
func BlockingRetries() Option { return func(c *config) { c.retryDelays = nil } }

// Classify overrides how errors are classified: return
// choreo.KindRetryable to retry, any other kind to dead-letter at once.
// The default is choreo.KindOf: retryable unless marked choreo.Permanent or
// a decode, schema, header or panic error; a handler that ran past its
// HandlerTimeout (choreo.KindTimeout) is retried too, and dead-lettered
// only once its retries are exhausted. Return choreo.KindTimeout for it to
// dead-letter a timeout at once.
func Classify(fn func(error) choreo.ErrorKind) Option { return func(c *config) { c.classify = fn } }

// Service sets the service name written in dead letters (default: the group).
func Service(name string) Option { return func(c *config) { c.service = name } }

// DeadLetterTopic overrides the dead-letter topic (default <group>.dlq).
func DeadLetterTopic(name string) Option { return func(c *config) { c.deadLetterTopic = name } }

// NoProvisioning stops the consumer from creating its retry, dead-letter
// and redrive (<group>.redrive) topics; they must exist. If any is
// missing, Run returns an error at once, before joining the group, naming
// each missing topic with the partitions and max.message.bytes to create
// it with.
func NoProvisioning() Option { return func(c *config) { c.provision = false } }

// RedactHeaders replaces the values of these headers (case-insensitive
// names, e.g. "authorization") with "[redacted]" in dead letters and in
// the records forwarded to retry topics, so that a secret a record carries
// is stored in neither. A handler therefore sees "[redacted]" in such a
// header when it handles a record again from a retry topic. ce_id and
// ce_type are kept in forwards (the retried record needs them).
func RedactHeaders(names ...string) Option {
	return func(c *config) { c.redact = append(c.redact, names...) }
}

// Metrics sets the instruments the consumer records to (default: built
// from the global meter provider when Run starts; see tracing.Setup).
func Metrics(m *tracing.Metrics) Option { return func(c *config) { c.metrics = m } }
