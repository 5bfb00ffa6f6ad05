package consumer

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/tracing"
)

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
// gives up, reporting false, only when the partition is given up (revoked,
// lost or shut down), and the record is then redelivered.
func (rt *runtime) writeUntilAcked(d *delivery, what, topic string, write func(context.Context) error) bool {
	c := rt.c
	var b *backoff.ExponentialBackOff
	for {
		err := write(d.part.ctx)
		if err == nil {
			return true
		}
		if d.part.ctx.Err() != nil {
			return false
		}
		if b == nil {
			b = backoff.NewExponentialBackOff()
			b.InitialInterval = 100 * time.Millisecond
			b.MaxInterval = 10 * time.Second
			b.MaxElapsedTime = 0
		}
		c.stats.writeFailures.Add(1)
		wait := b.NextBackOff()
		c.log.ErrorContext(d.ctx, what+" write failed; the partition will not commit past this record until it succeeds",
			"topic", d.rec.Topic, "partition", d.rec.Partition, "offset", d.rec.Offset, "to", topic,
			"retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-d.part.ctx.Done():
			t.Stop()
			return false
		}
	}
}
