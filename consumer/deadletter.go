package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/tracing"
)

// Production makes the consumer's dead-letter writer look the envelope
// schema (dlq.Schema, file dlq/deadletter.avsc) up in the registry instead
// of registering it: for registries where the service's credentials may
// read schemas but not register them. Register the envelope schema of
// this version of choreo under the dead-letter topic's subject
// ("<group>.dlq-value" by default) ahead of time, e.g.
//
//	choreo schema register --subject payment-service.dlq-value dlq/deadletter.avsc
//
// Run then checks at start-up, before joining the group, that it is
// there, and fails with an error naming the subject when it is not,
// rather than holding a partition at its first poison record.
func Production() Option { return func(c *config) { c.production = true } }

// defaultStuckAfter is how long a dead-letter write or forward may keep
// failing before the record counts as stuck, unless StuckAfter says.
const defaultStuckAfter = time.Minute

// StuckAfter sets how long a dead-letter write, or a forward to a retry
// topic, may keep failing before the record counts as stuck (default 1
// minute; d <= 0 keeps the default). A failing write is retried with
// back-off, the record kept uncommitted, so nothing is lost; once it is
// stuck the consumer also reports it: CheckReady names the record and
// the error, the choreo.consumer.stuck_writes gauge counts it, and an
// error is logged once per StuckAfter interval until the write succeeds.
// With FailOnStuckWrite, Run returns an error instead.
func StuckAfter(d time.Duration) Option { return func(c *config) { c.stuckAfter = d } }

// FailOnStuckWrite makes Run return an error as soon as a record is stuck
// (see StuckAfter) instead of retrying its write for as long as it takes:
// for services run by a supervisor that restarts them and alerts on exit.
// Run stops fetching, commits what is done (never past the stuck record)
// and returns an error that names the record's topic, partition and offset
// and wraps the write's error.
func FailOnStuckWrite() Option { return func(c *config) { c.failOnStuck = true } }

// deadLetter sends d to the service's dead-letter topic and reports whether
// the record is done. It keeps trying until the broker acknowledges the
// dead letter: until then the record is not done, so no offset past it is
// committed and nothing is lost. It gives up (not done) only when the
// partition is revoked, lost or shut down.
func (rt *runtime) deadLetter(d *delivery, cause error, first time.Time) bool {
	c := rt.c
	attempts := d.attempt
	if attempts < 1 {
		attempts = 1
	}
	attempts += d.priorAttempts
	dl := dlq.New(d.rec, dlq.Failure{
		Err:          cause,
		Kind:         choreo.KindOf(cause),
		Attempts:     attempts,
		FirstFailure: first,
		LastFailure:  time.Now(),
		Service:      c.cfg.service,
		Group:        c.group,
	})
	if d.origin != nil {
		dl.Original = *d.origin
	}
	if !rt.writeUntilAcked(d, "dead letter", c.cfg.deadLetterTopic, func(ctx context.Context) error {
		return rt.dlqWriter.Write(ctx, c.cfg.deadLetterTopic, dl)
	}) {
		return false
	}
	c.stats.deadLettered.Add(1)
	d.outcome, d.err = tracing.OutcomeDeadLettered, cause
	tracing.RecordDeadLetter(d.ctx, c.cfg.deadLetterTopic, dl.Error.Kind)
	d.metrics.DeadLetter(d.ctx, dl.Error.Kind)
	c.log.WarnContext(d.ctx, "event dead-lettered", "topic", d.rec.Topic, "partition", d.rec.Partition, "offset", d.rec.Offset,
		"kind", dl.Error.Kind, "dlq", c.cfg.deadLetterTopic, "err", cause)
	return true
}

// writeUntilAcked runs write (a dead letter or a forward to a retry topic)
// until the broker acknowledges it, backing off between failures. Until
// then the record is not done, so no commit passes it: nothing is lost. It
// gives up, reporting false, when the partition is given up (revoked, lost
// or shut down; the record is then redelivered), or when Run is ending
// with an error (FailOnStuckWrite).
//
// A write not acknowledged within StuckAfter of its first attempt, failing
// or hanging, is stuck (see watchWrite): a write that can never succeed
// (no authorization, a deleted topic, a limit) must not hold its partition
// silently.
func (rt *runtime) writeUntilAcked(d *delivery, what, topic string, write func(context.Context) error) bool {
	c := rt.c
	// ctx is cancelled to abandon the write when Run must end with an error.
	ctx, abandon := context.WithCancel(d.part.ctx)
	defer abandon()
	w := rt.watchWrite(d, what, topic, abandon)
	defer w.stop()
	var b *backoff.ExponentialBackOff
	for {
		err := write(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		c.stats.writeFailures.Add(1)
		failures := w.failed(err)
		if b == nil {
			b = backoff.NewExponentialBackOff()
			b.InitialInterval = 100 * time.Millisecond
			b.MaxInterval = 10 * time.Second
			b.MaxElapsedTime = 0
		}
		wait := b.NextBackOff()
		if failures == 1 {
			c.log.WarnContext(d.ctx, what+" write failed; the partition will not commit past this record until it succeeds",
				"topic", d.rec.Topic, "partition", d.rec.Partition, "offset", d.rec.Offset, "to", topic, "retry_in", wait, "err", err)
		} else {
			c.log.DebugContext(d.ctx, what+" write failed again", "topic", d.rec.Topic, "partition", d.rec.Partition,
				"offset", d.rec.Offset, "to", topic, "failures", failures, "retry_in", wait, "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		case <-rt.fatal.done():
			t.Stop()
			return false // Run is ending with another record's error
		}
	}
}

// writeWatch watches one record's dead-letter write or forward from its
// first attempt until it is acknowledged or given up.
type writeWatch struct {
	rt               *runtime
	d                *delivery
	what, topic, key string
	where            string // the record: topic/partition/offset
	every            time.Duration
	abandon          context.CancelFunc
	start            time.Time
	mu               sync.Mutex
	timer            *time.Timer
	failures         int
	lastErr          error
	stuck, stopped   bool
}

// watchWrite starts watching a write. When it is not acknowledged within
// StuckAfter, failing or hanging, the record is stuck: the consumer is not
// ready (CheckReady names the record, its destination and the last error),
// the choreo.consumer.stuck_writes gauge counts it, and an error is logged
// then and once per StuckAfter after, until stop clears all three. With
// FailOnStuckWrite, Run is made to end with an error instead, and the
// write is abandoned (abandon).
func (rt *runtime) watchWrite(d *delivery, what, topic string, abandon context.CancelFunc) *writeWatch {
	every := rt.c.cfg.stuckAfter
	if every <= 0 {
		every = defaultStuckAfter
	}
	where := fmt.Sprintf("%s/%d/%d", d.rec.Topic, d.rec.Partition, d.rec.Offset)
	w := &writeWatch{rt: rt, d: d, what: what, topic: topic, where: where, key: "stuck-write:" + where,
		every: every, abandon: abandon, start: time.Now()}
	w.mu.Lock()
	w.timer = time.AfterFunc(every, w.check)
	w.mu.Unlock()
	return w
}

// failed records a failed attempt and returns the failures so far.
func (w *writeWatch) failed(err error) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failures++
	w.lastErr = err
	return w.failures
}

// check runs every StuckAfter while the write is not acknowledged. It
// does its reporting under w.mu, so that stop, which clears it, never
// runs half-way through.
func (w *writeWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	c := w.rt.c
	elapsed := time.Since(w.start)
	cause := w.lastErr
	if cause == nil {
		cause = errors.New("no answer from the broker yet")
	}
	if c.cfg.failOnStuck {
		w.rt.fatal.fail(fmt.Errorf("consumer: %s of %s to %s stuck, not acknowledged after %v (%d failed attempts): %w",
			w.what, w.where, w.topic, elapsed.Round(time.Millisecond), w.failures, cause))
		w.abandon()
		return
	}
	if !w.stuck {
		w.stuck = true
		w.d.metrics.StuckWrite(w.rt.handlerBase, 1)
	}
	c.setNotReady(w.key, fmt.Sprintf("%s of %s to %s stuck, not acknowledged after %v (%d failed attempts): %v",
		w.what, w.where, w.topic, elapsed.Round(time.Second), w.failures, cause))
	c.log.ErrorContext(w.d.ctx, w.what+" write stuck; the partition will not commit past this record until it succeeds",
		"topic", w.d.rec.Topic, "partition", w.d.rec.Partition, "offset", w.d.rec.Offset, "to", w.topic,
		"failing_for", elapsed.Round(time.Millisecond), "failures", w.failures, "err", cause)
	w.timer.Reset(w.every)
}

// stop ends the watch: the write was acknowledged or given up.
func (w *writeWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
	if w.stuck {
		w.rt.c.clearNotReady(w.key)
		w.d.metrics.StuckWrite(w.rt.handlerBase, -1)
		w.rt.c.log.InfoContext(w.d.ctx, w.what+" write no longer stuck: acknowledged or given up", "topic", w.d.rec.Topic,
			"partition", w.d.rec.Partition, "offset", w.d.rec.Offset, "to", w.topic, "after", time.Since(w.start).Round(time.Millisecond))
	}
}

// fatal is how a worker ends Run with an error (FailOnStuckWrite). Run
// runs its poll loop with a context that cancel cancels; fail records the
// first error and cancels it, Run then shuts down as when its own context
// ends (nothing is committed past a record that is not done) and returns
// the error.
type fatal struct {
	mu     sync.Mutex
	err    error
	cancel context.CancelFunc // stops the poll loop; set by Run
	ch     chan struct{}      // closed by fail
}

// fail makes Run end with err, unless it is ending with an earlier one.
func (f *fatal) fail(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
		if f.ch == nil {
			f.ch = make(chan struct{})
		}
		close(f.ch)
	}
	cancel := f.cancel
	f.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// done returns a channel closed once fail has been called.
func (f *fatal) done() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ch == nil {
		f.ch = make(chan struct{})
	}
	return f.ch
}

// error returns the error Run must end with, or nil.
func (f *fatal) error() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// deadLetterRoom is what the consumer's own topics (dead-letter and retry)
// and its client admit beyond MaxValueBytes: a dead letter's overhead
// (the error message, up to 16 KiB, copies of a few headers, the envelope's
// fields) with room to spare for the original's headers.
const deadLetterRoom = 1 << 20

// ownTopicMaxBytes is the max.message.bytes the consumer gives its own
// topics, and the largest batch its client produces: MaxValueBytes plus
// deadLetterRoom. Every dead letter is cut to fit it (dlq.MaxRecordBytes).
func (c *config) ownTopicMaxBytes() int { return c.maxValueBytes + deadLetterRoom }

// dlqWriterOptions are the options of the consumer's dead-letter writer:
// limits that keep every dead letter within what the consumer provisions
// (so that a too-large record is dead-lettered cut rather than never),
// redaction, and look-ups instead of registration with Production.
func (c *Consumer) dlqWriterOptions() []dlq.WriterOption {
	limit := c.cfg.ownTopicMaxBytes()
	opts := []dlq.WriterOption{dlq.MaxRecordBytes(limit), dlq.MaxBytesLength(max(limit, schema.DefaultMaxBytesLength))}
	if len(c.cfg.redact) > 0 {
		opts = append(opts, dlq.Redact(c.cfg.redact...))
	}
	if c.cfg.production {
		opts = append(opts, dlq.Production())
	}
	return opts
}

// checkDeadLetterSchema makes sure, with Production, that the envelope
// schema is registered under the dead-letter topic's subject: Run calls
// it before joining the group, so that a missing schema stops the service
// at start-up rather than holding a partition at its first poison record.
func (c *Consumer) checkDeadLetterSchema(ctx context.Context) error {
	if !c.cfg.production {
		return nil
	}
	if err := dlq.NewWriter(nil, c.reg, c.dlqWriterOptions()...).Check(ctx, c.cfg.deadLetterTopic); err != nil {
		return fmt.Errorf("consumer: dead letters could not be written (Production: register dlq/deadletter.avsc under the subject first): %w", err)
	}
	return nil
}
