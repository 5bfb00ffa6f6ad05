package flows

import (
	"context"
	"encoding/binary"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/schema"
)

// Kind says what an indexed record is: an event where it was published, or
// one of the toolkit's copies of it (a retry-topic forward, a dead letter,
// a redrive).
type Kind string

// The kinds of indexed records.
const (
	KindEvent      Kind = "event"       // an event on a topic of the choreography
	KindRetry      Kind = "retry"       // a failed event forwarded to a service's retry topic, <group>.retry.<n>-<delay>
	KindDeadLetter Kind = "dead_letter" // a dead letter on a service's dead-letter topic, <group>.dlq
	KindRedrive    Kind = "redrive"     // a dead letter sent back to its service through <group>.redrive
)

// Record is the metadata of one Kafka record carrying a choreo event: what
// the index keeps of it (never the payload). It is identified by its
// topic, partition and offset; the same event (ce_id) can be in several
// records: where it was published, forwarded to retry topics, dead-lettered,
// redriven, or published twice.
type Record struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Kind      Kind   `json:"kind"`

	EventID       string    `json:"eventId"`                 // ce_id ("" only for a dead letter of a record that had none)
	Type          string    `json:"type"`                    // ce_type
	Source        string    `json:"source,omitempty"`        // ce_source: the producing service
	Time          time.Time `json:"time"`                    // ce_time, or the record's timestamp when it has none
	CorrelationID string    `json:"correlationId,omitempty"` // ce_correlationid; the event's own id when absent
	CausationID   string    `json:"causationId,omitempty"`   // ce_causationid
	Key           string    `json:"key,omitempty"`           // the record key as text (hex for bytes that are not UTF-8)
	Timestamp     time.Time `json:"timestamp"`               // the Kafka record's timestamp
	SchemaID      int       `json:"schemaId,omitempty"`      // from the Confluent wire prefix of the value; 0 when it has none

	// For retries, dead letters and redrives: the service (consumer
	// group) that failed the event, read from the topic's name.
	Group string `json:"group,omitempty"`
	// Service is the failing service's name from the dead-letter envelope
	// (when a registry is at hand); often the group's name.
	Service      string    `json:"service,omitempty"`
	ErrorKind    string    `json:"errorKind,omitempty"`    // choreo-error-kind
	ErrorMessage string    `json:"errorMessage,omitempty"` // choreo-error-message (at most 1 KiB)
	Attempt      int       `json:"attempt,omitempty"`      // choreo-attempt: delivery attempts so far
	FailedAt     time.Time `json:"failedAt,omitzero"`      // when the group failed it: a forward's not-before less its delay, a dead letter's time
	NotBefore    time.Time `json:"notBefore,omitzero"`     // choreo-not-before of a retry record
	ReplayedFrom string    `json:"replayedFrom,omitempty"` // choreo-replayed-from: "<dlq topic>/<partition>/<offset>" of the dead letter a redrive came from

	// OriginalTopic, OriginalPartition and OriginalOffset are where the
	// event was first consumed from, for retries and dead letters
	// (choreo-original-*); -1 partition and offset when unknown.
	OriginalTopic     string `json:"originalTopic,omitempty"`
	OriginalPartition int32  `json:"originalPartition"`
	OriginalOffset    int64  `json:"originalOffset"`
}

// Due is when the record's group is expected to handle it: a retry record
// once its not-before time has come, any other at its time.
func (r *Record) Due() time.Time {
	if r.Kind == KindRetry && r.NotBefore.After(r.Time) {
		return r.NotBefore
	}
	return r.Time
}

// Coordinates returns "topic/partition/offset".
func (r *Record) Coordinates() string {
	return r.Topic + "/" + strconv.FormatInt(int64(r.Partition), 10) + "/" + strconv.FormatInt(r.Offset, 10)
}

// TopicRole is what a topic's name says it is: a service's retry,
// dead-letter or redrive topic (with the service's group), or any other
// topic, whose events are the choreography's own.
type TopicRole struct {
	Kind  Kind
	Group string        // for KindRetry, KindDeadLetter and KindRedrive
	Tier  int           // for KindRetry: the 1-based tier
	Delay time.Duration // for KindRetry: the tier's delay
}

// Classify returns the role of a topic from its name, following the
// consumer's naming: "<group>.dlq" (dlq.Topic), "<group>.redrive"
// (dlq.RedriveTopic) and "<group>.retry.<n>-<delay>" with a delay that
// round-trips (10s, 1m, 1h30m, 250ms). Any other name is KindEvent.
func Classify(topic string) TopicRole {
	if g, ok := strings.CutSuffix(topic, dlq.Suffix); ok && g != "" {
		return TopicRole{Kind: KindDeadLetter, Group: g}
	}
	if g, ok := strings.CutSuffix(topic, dlq.RedriveSuffix); ok && g != "" {
		return TopicRole{Kind: KindRedrive, Group: g}
	}
	if i := strings.LastIndex(topic, ".retry."); i > 0 {
		g, rest := topic[:i], topic[i+len(".retry."):]
		if n, delay, ok := strings.Cut(rest, "-"); ok {
			tier, err := strconv.Atoi(n)
			d, derr := time.ParseDuration(delay)
			if err == nil && derr == nil && tier >= 1 && d > 0 && retryTopicName(g, tier, d) == topic {
				return TopicRole{Kind: KindRetry, Group: g, Tier: tier, Delay: d}
			}
		}
	}
	return TopicRole{Kind: KindEvent}
}

// retryTopicName is the consumer's name of a retry topic (see package
// consumer): <group>.retry.<n>-<delay> with the delay written without zero
// units.
func retryTopicName(group string, tier int, delay time.Duration) string {
	return group + ".retry." + strconv.Itoa(tier) + "-" + shortDuration(delay)
}

// shortDuration writes d as the consumer names retry topics: 10s, 1m,
// 1h30m, 1500ms.
func shortDuration(d time.Duration) string {
	if d < time.Second || d%time.Second != 0 {
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Skip reasons of Parse: why a record was not indexed.
const (
	SkipNoEventID    = "no_ce_id"     // the record has no ce_id header (and is not a dead letter)
	SkipBadDeadLeter = "bad_envelope" // a record of a dead-letter topic without readable dead-letter headers
)

// Parse reads the index's record from rec. It never fails on malformed
// input: a record it cannot index returns ok false and the reason (one of
// the Skip constants). A dead letter without ce_id (a record that failed
// for having none) is indexed all the same, outside any flow. codec, if
// not nil, decodes dead-letter envelopes for what their headers do not
// say (the original's source, time and causation id, the service).
func Parse(ctx context.Context, rec *kgo.Record, codec *schema.Codec) (r Record, ok bool, skip string) {
	role := Classify(rec.Topic)
	r = Record{
		Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
		Kind: role.Kind, Group: role.Group, Timestamp: rec.Timestamp.UTC(),
		Key: keyText(rec.Key), OriginalPartition: -1, OriginalOffset: -1,
	}
	if len(rec.Value) >= 5 && rec.Value[0] == 0 {
		r.SchemaID = int(binary.BigEndian.Uint32(rec.Value[1:5]))
	}
	var ceTime string
	for _, h := range rec.Headers {
		v := string(h.Value)
		switch h.Key {
		case choreo.HeaderID:
			r.EventID = v
		case choreo.HeaderType:
			r.Type = v
		case choreo.HeaderSource:
			r.Source = v
		case choreo.HeaderTime:
			ceTime = v
		case choreo.HeaderCorrelationID:
			r.CorrelationID = v
		case choreo.HeaderCausationID:
			r.CausationID = v
		case choreo.HeaderErrorKind:
			r.ErrorKind = v
		case choreo.HeaderErrorMessage:
			r.ErrorMessage = v
		case choreo.HeaderReplayedFrom:
			r.ReplayedFrom = v
		case choreo.HeaderAttempt:
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				r.Attempt = n
			}
		case choreo.HeaderNotBefore:
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				r.NotBefore = t.UTC()
			}
		case choreo.HeaderOriginalTopic:
			r.OriginalTopic = v
		case choreo.HeaderOriginalPartition:
			if n, err := strconv.ParseInt(v, 10, 32); err == nil && n >= 0 {
				r.OriginalPartition = int32(n)
			}
		case choreo.HeaderOriginalOffset:
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				r.OriginalOffset = n
			}
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, ceTime); err == nil {
		r.Time = t.UTC()
	}
	switch r.Kind {
	case KindDeadLetter:
		if _, err := dlq.Peek(rec); err != nil {
			return Record{}, false, SkipBadDeadLeter
		}
		r.FailedAt = r.Timestamp
		if codec != nil {
			if dl, err := dlq.Decode(ctx, codec, rec); err == nil {
				fromEnvelope(&r, dl)
			}
		}
		r.SchemaID = 0 // the envelope's, not the event's
	case KindRetry:
		if !r.NotBefore.IsZero() {
			r.FailedAt = r.NotBefore.Add(-role.Delay)
		}
	}
	if r.EventID == "" && r.Kind != KindDeadLetter {
		return Record{}, false, SkipNoEventID
	}
	if r.Time.IsZero() {
		r.Time = r.Timestamp
	}
	if r.CorrelationID == "" {
		r.CorrelationID = r.EventID // a first event's correlation id is its own id
	}
	r.Type = clip(r.Type, 512)
	r.Source = clip(r.Source, 512)
	r.ErrorMessage = clip(r.ErrorMessage, 1024)
	return r, true, ""
}

// fromEnvelope fills in from a decoded dead letter what its readable
// headers leave out.
func fromEnvelope(r *Record, dl *dlq.DeadLetter) {
	r.Service = dl.Service
	if dl.Group != "" {
		r.Group = dl.Group
	}
	if !dl.LastFailure.IsZero() {
		r.FailedAt = dl.LastFailure.UTC()
	}
	if r.EventID == "" && dl.EventID != nil {
		r.EventID = *dl.EventID
	}
	for _, h := range dl.Original.Headers {
		v := string(h.Value)
		switch h.Key {
		case choreo.HeaderSource:
			if r.Source == "" {
				r.Source = v
			}
		case choreo.HeaderCausationID:
			if r.CausationID == "" {
				r.CausationID = v
			}
		case choreo.HeaderTime:
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil && r.Time.IsZero() {
				r.Time = t.UTC()
			}
		}
	}
	if r.Time.IsZero() && !dl.Original.Timestamp.IsZero() {
		r.Time = dl.Original.Timestamp.UTC()
	}
}

// keyText returns a record key as text: itself when it is UTF-8, else
// "0x" and its bytes in hexadecimal. It is cut at 256 bytes.
func keyText(k []byte) string {
	if len(k) > 256 {
		k = k[:256]
	}
	if utf8.Valid(k) {
		return string(k)
	}
	const hex = "0123456789abcdef"
	b := make([]byte, 2, 2+2*len(k))
	b[0], b[1] = '0', 'x'
	for _, c := range k {
		b = append(b, hex[c>>4], hex[c&0x0f])
	}
	return string(b)
}

// clip cuts s to at most n bytes on a UTF-8 boundary and makes it valid
// UTF-8.
func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "")
}
