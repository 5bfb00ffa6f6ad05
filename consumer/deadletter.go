package consumer

import (
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
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 10 * time.Second
	b.MaxElapsedTime = 0
	for {
		err := rt.dlqWriter.Write(d.part.ctx, c.cfg.deadLetterTopic, dl)
		if err == nil {
			c.stats.deadLettered.Add(1)
			d.outcome, d.err = tracing.OutcomeDeadLettered, cause
			tracing.RecordDeadLetter(d.ctx, c.cfg.deadLetterTopic, dl.Error.Kind)
			d.metrics.DeadLetter(d.ctx, dl.Error.Kind)
			c.log.WarnContext(d.ctx, "event dead-lettered", "topic", d.rec.Topic, "partition", d.rec.Partition, "offset", d.rec.Offset,
				"kind", dl.Error.Kind, "dlq", c.cfg.deadLetterTopic, "err", cause)
			return true
		}
		if d.part.ctx.Err() != nil {
			return false
		}
		c.stats.writeFailures.Add(1)
		wait := b.NextBackOff()
		c.log.Error("dead-letter write failed; the partition will not commit past this record until it succeeds",
			"topic", d.rec.Topic, "partition", d.rec.Partition, "offset", d.rec.Offset, "dlq", c.cfg.deadLetterTopic,
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
