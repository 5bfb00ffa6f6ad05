package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/tracing"
)

// readMetadata reads the ce_ headers. ce_id and ce_type are required: the
// first is the idempotency key, the second picks the handler.
func (d *delivery) readMetadata() error {
	// One string holds every value read, so the metadata costs one
	// allocation instead of one per header.
	var idx [6]int // header index per field, -1 when absent
	n := 0
	for i := range idx {
		idx[i] = -1
	}
	for i, h := range d.rec.Headers {
		f := metadataField(h.Key)
		if f >= 0 {
			idx[f] = i
			n += len(h.Value)
		}
	}
	buf := make([]byte, 0, n)
	var bounds [6][2]int
	for f, i := range idx {
		if i >= 0 {
			start := len(buf)
			buf = append(buf, d.rec.Headers[i].Value...)
			bounds[f] = [2]int{start, len(buf)}
		}
	}
	// buf is never written again: the string can share its bytes.
	all := unsafe.String(unsafe.SliceData(buf), len(buf))
	field := func(f int) string { return all[bounds[f][0]:bounds[f][1]] }
	md := choreo.Metadata{
		ID: field(0), Type: field(1), Source: field(2),
		CorrelationID: field(4), CausationID: field(5),
	}
	if ts := field(3); ts != "" {
		if t, err := parseTime(ts); err == nil {
			md.Time = t
		}
	}
	d.md = md
	switch {
	case md.ID == "":
		return choreo.Errorf(choreo.KindMissingHeader, "record has no %s header", choreo.HeaderID)
	case md.Type == "":
		return choreo.Errorf(choreo.KindMissingHeader, "record has no %s header", choreo.HeaderType)
	}
	if md.CorrelationID == "" {
		d.md.CorrelationID = md.ID
	}
	return nil
}

// metadataField maps a ce_ header to its place in readMetadata, or -1.
func metadataField(key string) int {
	switch key {
	case choreo.HeaderID:
		return 0
	case choreo.HeaderType:
		return 1
	case choreo.HeaderSource:
		return 2
	case choreo.HeaderTime:
		return 3
	case choreo.HeaderCorrelationID:
		return 4
	case choreo.HeaderCausationID:
		return 5
	}
	return -1
}

// handle takes a delivery through checks, the idempotency store and one
// handler attempt. It reports whether the record is done, or, for a
// retryable failure with attempts left, how long to wait before the next
// attempt: the caller parks the key's lane meanwhile, freeing the worker,
// so a retrying key never holds up other keys. The wait is waitBreaker
// when the route's circuit breaker holds the record: the lane then waits
// for the breaker instead of a timer.
func (rt *runtime) handle(d *delivery) (done bool, retryIn time.Duration) {
	c := rt.c
	if d.span == nil {
		// One context value carries the record's position, then its
		// metadata and each invocation's handler scope.
		hctx := d.handling.Init(d.part.ctx, c.group, choreo.Position{Topic: d.rec.Topic, Partition: d.rec.Partition, Offset: d.rec.Offset})
		d.ctx, d.span = tracing.StartProcess(hctx, d.rec, c.group)
		if err := rt.prepare(d); err != nil {
			if d.first.IsZero() {
				d.first = time.Now()
			}
			return rt.deadLetter(d, err, d.first), 0
		}
		if d.route == nil { // unknown type, skipped
			c.stats.skipped.Add(1)
			d.outcome = tracing.OutcomeSkipped
			return true, 0
		}
		d.handling.SetMetadata(d.md)
	}
	// An open circuit breaker holds the record without an attempt: it
	// waits, its attempt count unchanged, until the breaker lets it
	// through (breaker.go).
	br := d.route.breaker
	if !br.allow(d) {
		c.stats.circuitWaits.Add(1)
		return false, waitBreaker
	}
	d.attempt++
	dup, err := rt.attempt(d, d.route)
	if err == nil {
		d.outcome = tracing.OutcomeHandled
		result := error(nil)
		if dup {
			d.outcome = tracing.OutcomeDuplicate
			result = errNeutral
		}
		br.settle(d, result)
		return true, 0
	}
	if d.first.IsZero() {
		d.first = time.Now()
	}
	if d.part.ctx.Err() != nil {
		br.settle(d, errNeutral)
		return false, 0 // partition lost or shutdown deadline passed: not done
	}
	if k := c.classify(err); k.Permanent() {
		br.settle(d, errNeutral)
		if choreo.KindOf(err) != k {
			err = &choreo.Error{Kind: k, Err: err}
		}
		return rt.deadLetter(d, err, d.first), 0
	}
	probe := d.probe
	if !br.settle(d, errFailure) {
		// The breaker is open (this failure may have opened it) or its
		// probe is under way: rather than spend its attempts against a
		// dependency that is down, the record waits for it; unless it
		// was the probe and this was its last attempt (see Breaker).
		if !probe || d.attempt < c.cfg.retry.MaxAttempts {
			c.stats.retried.Add(1)
			tracing.RecordRetry(d.ctx, d.attempt, err)
			c.log.DebugContext(d.ctx, "handler failed; waiting for the circuit breaker", "topic", d.rec.Topic, "partition", d.rec.Partition,
				"offset", d.rec.Offset, "attempt", d.attempt, "err", err)
			return false, waitBreaker
		}
	}
	if d.attempt >= c.cfg.retry.MaxAttempts {
		return rt.exhausted(d, err, d.first), 0
	}
	if d.backoff == nil {
		d.backoff = c.cfg.retry.backoff()
	}
	wait := d.backoff.NextBackOff()
	if wait < 0 { // MaxElapsedTime passed
		return rt.exhausted(d, err, d.first), 0
	}
	if wait == 0 {
		wait = time.Nanosecond
	}
	c.stats.retried.Add(1)
	tracing.RecordRetry(d.ctx, d.attempt, err)
	c.log.DebugContext(d.ctx, "handler failed; retrying", "topic", d.rec.Topic, "partition", d.rec.Partition,
		"offset", d.rec.Offset, "attempt", d.attempt, "wait", wait, "err", err)
	return false, wait
}

// prepare reads what the record says about itself and finds its handler.
// An error is one to dead-letter; a nil route with no error means the type
// has no handler and is skipped.
func (rt *runtime) prepare(d *delivery) error {
	c := rt.c
	if err := d.readMetadata(); err != nil {
		return err
	}
	source := d.rec.Topic
	// A record from a retry topic, or a redriven dead letter (tier 0: its
	// attempts start again at the first tier), names its original topic,
	// which routes it.
	if d.tier > 0 || d.rec.Topic == c.redriveTopic {
		st, err := readRetryState(d.rec, d.tier)
		if err != nil {
			return err
		}
		d.priorAttempts, d.origin, source = st.priorAttempts, st.origin, st.origin.Topic
		d.first = st.firstFailure // the dead letter's first failure is the first tier's
	}
	if len(d.rec.Value) > c.cfg.maxValueBytes {
		return choreo.Errorf(choreo.KindTooLarge, "value of %d bytes is over the limit of %d", len(d.rec.Value), c.cfg.maxValueBytes)
	}
	d.route = c.routeFor(source, d.md.Type)
	if d.route == nil && c.cfg.unknown == DeadLetterUnknown {
		return choreo.Errorf(choreo.KindUnknownType, "no handler for %s on %s", d.md.Type, source)
	}
	return nil
}

// exhausted handles a record whose in-process attempts all failed with a
// retryable error: on to the next retry topic, or, after the last, to the
// dead-letter topic.
func (rt *runtime) exhausted(d *delivery, err error, first time.Time) bool {
	if d.tier < len(rt.c.retryTopics) {
		return rt.forward(d, err, d.tier+1)
	}
	total := d.priorAttempts + d.attempt
	return rt.deadLetter(d, &choreo.Error{Kind: choreo.KindRetriesExhausted,
		Err: fmt.Errorf("%d attempts failed, last: %w", total, err)}, first)
}

// attempt runs the handler once through the idempotency store; dup
// reports a record skipped as already processed.
func (rt *runtime) attempt(d *delivery, r *route) (dup bool, err error) {
	c := rt.c
	start := time.Now()
	ctx, release := d.deadline(start.Add(c.cfg.handlerTimeout))
	defer release()
	d.handling.StartScope() // events it publishes get ids derived from d's, counted from 0
	dup, err = c.cfg.store.Process(ctx, c.group, d.md.ID, invokeDelivery)
	switch {
	case dup:
		c.stats.duplicates.Add(1)
		return true, nil
	case err == nil:
		d.metrics.HandlerDuration(ctx, time.Since(start))
		c.stats.handled.Add(1)
		return false, nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded) && d.part.ctx.Err() == nil && choreo.KindOf(err) == choreo.KindRetryable:
		err = &choreo.Error{Kind: choreo.KindTimeout, Err: fmt.Errorf("handler ran past its %v deadline: %w", c.cfg.handlerTimeout, err)}
	}
	d.metrics.HandlerDuration(ctx, time.Since(start))
	return false, err
}

// end closes the delivery's span and counts its outcome.
func (rt *runtime) end(d *delivery, done bool) {
	if d.span == nil {
		return
	}
	outcome := d.outcome
	if !done {
		outcome = ""
		if d.err == nil {
			d.err = d.part.ctx.Err()
		}
	} else {
		d.metrics.Event(d.ctx, outcome)
	}
	tracing.EndProcess(d.span, outcome, d.err)
	d.span = nil
}

// invokeDelivery is the function the store runs: it finds its delivery in
// the handler context (see delivery.deadline), so that no closure is made
// per record.
func invokeDelivery(ctx context.Context) error {
	d, _ := ctx.Value(deliveryKey{}).(*delivery)
	if d == nil {
		return errors.New("consumer: handler context without its delivery")
	}
	return invoke(ctx, d.route, d)
}

// invoke calls the route's handler, turning a panic into an error.
func invoke(ctx context.Context, r *route, d *delivery) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &choreo.Error{Kind: choreo.KindPanic, Err: fmt.Errorf("handler panicked: %v", p)}
		}
	}()
	return r.invoke(ctx, d)
}

// classify returns the kind that decides err's fate. A handler that ran
// past its deadline is retried unless Classify says otherwise: a slow
// dependency should be retried, not dead-lettered, and a handling that
// timed out waiting for a concurrent handling of the same event finds it
// processed on the next attempt.
func (c *Consumer) classify(err error) choreo.ErrorKind {
	if c.cfg.classify != nil {
		if k := c.cfg.classify(err); k != "" {
			return k
		}
	}
	if k := choreo.KindOf(err); k != choreo.KindTimeout {
		return k
	}
	return choreo.KindRetryable
}

// routeFor returns the handler for typ on topic, or nil.
func (c *Consumer) routeFor(topic, typ string) *route {
	// routes is not written after Run starts: no lock needed.
	return c.routes[topic][typ]
}
