package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/tracing"
)

// retryTopicName names the retry topic of a tier: <group>.retry.<n>-<delay>.
func retryTopicName(group string, tier int, delay time.Duration) string {
	return fmt.Sprintf("%s.retry.%d-%s", group, tier, shortDuration(delay))
}

// retryTopicTier reports whether name is a retry topic of group, of this
// or any other configuration, and its tier: whether it is exactly what
// retryTopicName writes for group, some tier and some delay. The exact
// round trip keeps out another group's topics, even one whose name starts
// with this group's (pay and pay.retry.1-10s: the latter's retry topic
// pay.retry.1-10s.retry.1-10s is not pay's).
func retryTopicTier(group, name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, group+".retry.")
	if !ok {
		return 0, false
	}
	n, delay, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	tier, err := strconv.Atoi(n)
	if err != nil || tier < 1 {
		return 0, false
	}
	d, err := time.ParseDuration(delay)
	if err != nil || d <= 0 || retryTopicName(group, tier, d) != name {
		return 0, false
	}
	return tier, true
}

// shortDuration writes d without zero units: 10s, 1m, 1h30m, 1500ms.
func shortDuration(d time.Duration) string {
	if d < time.Second || d%time.Second != 0 {
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
	s := d.String() // e.g. 1h30m0s
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// retryState is what a record from a retry topic says about its history.
type retryState struct {
	tier          int       // 1-based tier of the retry topic the record came from
	priorAttempts int       // handler attempts before this delivery
	notBefore     time.Time // not to be handled before
	firstFailure  time.Time // when handling first failed, in the source topic's tier; zero if not said
	origin        *dlq.Original
}

// readRetryState reads the choreo- headers of a record from a retry topic:
// the original coordinates, the attempts so far, the not-before time and
// when handling first failed.
func readRetryState(r *kgo.Record, tier int) (retryState, error) {
	st := retryState{tier: tier}
	orig := dlq.Original{Key: r.Key, Value: r.Value, Timestamp: r.Timestamp, Partition: -1, Offset: -1}
	for _, h := range r.Headers {
		v := string(h.Value)
		switch h.Key {
		case choreo.HeaderAttempt:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return st, choreo.Errorf(choreo.KindMissingHeader, "retry record: bad %s %q", choreo.HeaderAttempt, v)
			}
			st.priorAttempts = n
		case choreo.HeaderNotBefore:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return st, choreo.Errorf(choreo.KindMissingHeader, "retry record: bad %s %q", choreo.HeaderNotBefore, v)
			}
			st.notBefore = t
		case choreo.HeaderFirstFailure:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return st, choreo.Errorf(choreo.KindMissingHeader, "retry record: bad %s %q", choreo.HeaderFirstFailure, v)
			}
			st.firstFailure = t
		case choreo.HeaderOriginalTopic:
			orig.Topic = v
		case choreo.HeaderOriginalPartition:
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				return st, choreo.Errorf(choreo.KindMissingHeader, "retry record: bad %s %q", choreo.HeaderOriginalPartition, v)
			}
			orig.Partition = int32(n)
		case choreo.HeaderOriginalOffset:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return st, choreo.Errorf(choreo.KindMissingHeader, "retry record: bad %s %q", choreo.HeaderOriginalOffset, v)
			}
			orig.Offset = n
		case choreo.HeaderErrorKind, choreo.HeaderErrorMessage:
		default:
			orig.Headers = append(orig.Headers, dlq.Header{Key: h.Key, Value: h.Value})
		}
	}
	if orig.Topic == "" || orig.Partition < 0 || orig.Offset < 0 {
		return st, choreo.Errorf(choreo.KindMissingHeader, "retry record: original topic, partition or offset missing")
	}
	st.origin = &orig
	return st, nil
}

// forward sends d to the retry topic of the next tier, to be handled again
// after that tier's delay, and reports whether the record is done (the
// broker acknowledged the forward). Like dead-lettering, it keeps trying
// until it succeeds or the partition is given up.
func (rt *runtime) forward(d *delivery, cause error, tier int) bool {
	c := rt.c
	topic := c.retryTopics[tier-1]
	notBefore := time.Now().Add(c.cfg.retryDelays[tier-1])
	attempts := d.priorAttempts + d.attempt

	rec := &kgo.Record{Topic: topic, Key: d.rec.Key, Value: d.rec.Value, Timestamp: d.rec.Timestamp}
	origTopic, origPart, origOff := d.rec.Topic, d.rec.Partition, d.rec.Offset
	if d.origin != nil {
		origTopic, origPart, origOff = d.origin.Topic, d.origin.Partition, d.origin.Offset
	}
	for _, h := range d.rec.Headers {
		// The toolkit's headers are written anew below, except the
		// lineage of a redriven record, which a later dead letter keeps.
		if !strings.HasPrefix(h.Key, "choreo-") || h.Key == choreo.HeaderRedriveCount || h.Key == choreo.HeaderReplayedFrom {
			if c.redacts(h.Key) {
				h.Value = []byte(dlq.Redacted) // a secret is stored in no retry topic either
			}
			rec.Headers = append(rec.Headers, h)
		}
	}
	msg := dlq.HeaderMessage(cause.Error())
	add := func(k, v string) { rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	add(choreo.HeaderAttempt, strconv.Itoa(attempts))
	add(choreo.HeaderNotBefore, notBefore.UTC().Format(time.RFC3339Nano))
	if !d.first.IsZero() {
		add(choreo.HeaderFirstFailure, d.first.UTC().Format(time.RFC3339Nano))
	}
	add(choreo.HeaderOriginalTopic, origTopic)
	add(choreo.HeaderOriginalPartition, strconv.FormatInt(int64(origPart), 10))
	add(choreo.HeaderOriginalOffset, strconv.FormatInt(origOff, 10))
	add(choreo.HeaderErrorKind, string(choreo.KindOf(cause)))
	add(choreo.HeaderErrorMessage, msg)

	// A record the retry topic refuses as too large (its headers grew
	// with the retry state, or the topic's max.message.bytes is below
	// the source's) would be refused for ever: it goes to the dead-letter
	// topic instead, whose writer cuts a dead letter to fit, rather than
	// holding its partition until an operator raises the limit.
	var refused error
	if !rt.writeUntilAcked(d, "retry-topic forward", topic, func(ctx context.Context) error {
		err := rt.cl.ProduceSync(ctx, rec).FirstErr()
		if errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) {
			refused = err
			return nil
		}
		return err
	}) {
		return false
	}
	if refused != nil {
		c.log.WarnContext(d.ctx, "event too large for its retry topic: dead-lettered instead", "topic", d.rec.Topic, "partition", d.rec.Partition,
			"offset", d.rec.Offset, "retry_topic", topic, "attempt", attempts, "err", refused)
		return rt.deadLetter(d, &choreo.Error{Kind: choreo.KindTooLarge,
			Err: fmt.Errorf("not forwarded to retry topic %s, which refused it as too large (%w), after %d attempt(s), last: %w", topic, refused, attempts, cause)}, d.first)
	}
	c.stats.forwarded.Add(1)
	d.outcome, d.err = tracing.OutcomeRetried, cause
	tracing.RecordForward(d.ctx, topic, attempts)
	c.log.InfoContext(d.ctx, "event forwarded to retry topic", "topic", d.rec.Topic, "partition", d.rec.Partition,
		"offset", d.rec.Offset, "retry_topic", topic, "attempt", attempts, "not_before", notBefore, "err", cause)
	return true
}

// redacts reports whether a header named key is redacted in forwards
// (RedactHeaders), compared without regard to case as the dead-letter
// writer does. ce_id and ce_type are kept: the retried record needs them
// to find its handler and its idempotency mark.
func (c *Consumer) redacts(key string) bool {
	if key == choreo.HeaderID || key == choreo.HeaderType {
		return false
	}
	for _, n := range c.cfg.redact {
		if strings.EqualFold(n, key) {
			return true
		}
	}
	return false
}
