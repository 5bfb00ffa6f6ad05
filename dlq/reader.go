package dlq

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/schema"
)

// ErrInvalidEnvelope is wrapped by Decode's error for a record that is not
// a valid dead letter: an empty value, bytes that are not the wire
// format, Avro of another schema, a truncated or otherwise malformed
// envelope, or one without an original topic. Such a record cannot become
// valid by trying again.
var ErrInvalidEnvelope = errors.New("invalid dead-letter envelope")

// errNoCodec is returned by Decode for a nil codec.
var errNoCodec = errors.New("nil codec")

// Decode reads the dead letter in rec, a record of a dead-letter topic,
// with codec (whose schema source has the envelope's writer schema: the
// registry the writer used). A codec made with the default
// schema.MaxBytesLength reads originals up to 16 MiB.
//
// The value must be exactly one well-formed Avro datum of a
// choreo.dlq.DeadLetter schema, this version or another one that resolves
// to it (schema evolution), with a non-empty original topic and a
// partition and offset that are not negative. Anything else fails with an
// error wrapping ErrInvalidEnvelope and, when the codec rejected it, the
// codec's error (schema.ErrTruncated …). An error kind this version does
// not know is kept, not rejected: see ErrorInfo.KnownKind.
//
// An error that does not wrap ErrInvalidEnvelope says nothing about the
// record (the registry could not be reached, ctx is done): try again.
// Decode never panics.
func Decode(ctx context.Context, codec *schema.Codec, rec *kgo.Record) (*DeadLetter, error) {
	if rec == nil {
		return nil, fmt.Errorf("dlq: decode: %w: %w", ErrInvalidEnvelope, errNilRecord)
	}
	op := "dlq: decode " + rec.Topic + "/" + strconv.FormatInt(int64(rec.Partition), 10) + "/" + strconv.FormatInt(rec.Offset, 10)
	if codec == nil {
		return nil, fmt.Errorf("%s: %w", op, errNoCodec)
	}
	invalid := func(err error) error {
		if choreo.IsPermanent(err) {
			return fmt.Errorf("%s: %w: %w", op, ErrInvalidEnvelope, err)
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	// Check the writer schema is an envelope before resolving: another
	// record whose fields all had defaults would resolve to one.
	_, ws, err := codec.Validate(ctx, rec.Value)
	if err != nil {
		return nil, invalid(err)
	}
	if ws.FullName() != envelopeSchema.FullName() {
		return nil, fmt.Errorf("%s: %w: value is a %s, not a %s", op, ErrInvalidEnvelope, ws.FullName(), envelopeSchema.FullName())
	}
	var dl DeadLetter
	if _, err := codec.Decode(ctx, rec.Value, envelopeSchema, &dl); err != nil {
		return nil, invalid(err)
	}
	switch {
	case dl.Original.Topic == "":
		return nil, fmt.Errorf("%s: %w: empty original topic", op, ErrInvalidEnvelope)
	case dl.Original.Partition < 0 || dl.Original.Offset < 0:
		return nil, fmt.Errorf("%s: %w: original partition %d, offset %d", op, ErrInvalidEnvelope, dl.Original.Partition, dl.Original.Offset)
	}
	return &dl, nil
}

// Replay returns the record that redrives dl to the service that failed:
// a record for that service's redrive topic, RedriveTopic(dl.Group), which
// the consumer runtime creates and reads beside its retry topics and which
// no other service reads. Republishing to the original topic instead would
// reach every service reading it, protected only by their idempotency
// stores (an in-memory store forgets on restart and at its cap).
//
// The record has the original key and value, and the original headers
// without their choreo- ones (the toolkit's state of an earlier delivery),
// so the ce_id is kept: if the service handled the event meanwhile, its
// idempotency store skips it. Beside them:
//
//	choreo-original-topic, -partition, -offset
//	                       the original coordinates: the consumer routes
//	                       the record by its original topic, like a
//	                       record from a retry topic, and a new dead
//	                       letter names the same original
//	choreo-redrive-count   RedriveCount() + 1: the loop guard
//	choreo-replayed-from   "<dlq topic>/<partition>/<offset>" of from, the
//	                       record dl was decoded from (none for a nil from)
//
// It has no choreo-attempt: the consumer counts attempts from 1 again (a
// redrive is a new round, after a fix), and handles it at once (there is
// no choreo-not-before). A failure follows the normal path: retries in
// process, the retry topics, then a new dead letter that keeps the
// choreo-redrive-count and choreo-replayed-from headers, so it links the
// earlier one.
//
// The partition is left to the partitioner (records of a key stay
// together and in order), the timestamp zero (the time of the redrive, so
// that a topic's retention does not delete it at once). Redacted header
// values stay redacted, and a dead letter whose original was cut to fit
// its topic (Original.Truncated) gives the cut record: do not redrive it.
// dl.Group must not be empty.
func (dl *DeadLetter) Replay(from *kgo.Record) *kgo.Record {
	rec := dl.rebuild(RedriveTopic(dl.Group), from, 3)
	o := dl.Original
	rec.Headers = append(rec.Headers,
		kgo.RecordHeader{Key: choreo.HeaderOriginalTopic, Value: []byte(o.Topic)},
		kgo.RecordHeader{Key: choreo.HeaderOriginalPartition, Value: strconv.AppendInt(nil, int64(o.Partition), 10)},
		kgo.RecordHeader{Key: choreo.HeaderOriginalOffset, Value: strconv.AppendInt(nil, o.Offset, 10)},
	)
	return dl.addLineage(rec, from)
}

// ReplayTo returns the original record rebuilt for republishing to topic,
// for a deliberate republish (to the original topic, say, for every
// service reading it): the original key, value and headers without their
// choreo- ones, a choreo-redrive-count header (RedriveCount() + 1) and,
// for a non-nil from, a choreo-replayed-from header naming the dead
// letter. Everything else is as for Replay; prefer Replay, which reaches
// only the service that failed.
func (dl *DeadLetter) ReplayTo(topic string, from *kgo.Record) *kgo.Record {
	return dl.addLineage(dl.rebuild(topic, from, 0), from)
}

// rebuild returns the original record for topic, with room for extra more
// headers beside the lineage ones.
func (dl *DeadLetter) rebuild(topic string, from *kgo.Record, extra int) *kgo.Record {
	o := dl.Original
	rec := &kgo.Record{
		Topic:   topic,
		Key:     o.Key,
		Value:   o.Value,
		Headers: make([]kgo.RecordHeader, 0, len(o.Headers)+extra+2),
	}
	for _, h := range o.Headers {
		if strings.HasPrefix(h.Key, toolkitPrefix) {
			continue
		}
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return rec
}

// addLineage appends the choreo-redrive-count and choreo-replayed-from
// headers to rec.
func (dl *DeadLetter) addLineage(rec *kgo.Record, from *kgo.Record) *kgo.Record {
	rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: choreo.HeaderRedriveCount, Value: strconv.AppendInt(nil, int64(dl.RedriveCount())+1, 10)})
	if from != nil {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{
			Key:   choreo.HeaderReplayedFrom,
			Value: []byte(from.Topic + "/" + strconv.FormatInt(int64(from.Partition), 10) + "/" + strconv.FormatInt(from.Offset, 10)),
		})
	}
	return rec
}

// toolkitPrefix starts the names of choreo's own headers.
const toolkitPrefix = "choreo-"

// RedriveCount returns how many times the original record had been
// redriven when it failed as dl says: the value of its last
// choreo-redrive-count header, 0 without one (or with one that is not a
// number that is not negative).
func (dl *DeadLetter) RedriveCount() int {
	for i := len(dl.Original.Headers) - 1; i >= 0; i-- {
		if h := dl.Original.Headers[i]; h.Key == choreo.HeaderRedriveCount {
			n, err := strconv.Atoi(string(h.Value))
			if err != nil || n < 0 {
				return 0
			}
			return n
		}
	}
	return 0
}

// Bytes is a byte string that encodes to JSON readably: as a JSON string
// when it is text (UTF-8 without control characters other than tab,
// newline and carriage return), as {"base64": "…"} when it is not, and as
// null when it is nil.
type Bytes []byte

// MarshalJSON encodes b as described at Bytes.
func (b Bytes) MarshalJSON() ([]byte, error) {
	switch {
	case b == nil:
		return []byte("null"), nil
	case isText(b):
		return json.Marshal(string(b))
	}
	return json.Marshal(struct {
		Base64 string `json:"base64"`
	}{base64.StdEncoding.EncodeToString(b)})
}

// isText reports whether b is UTF-8 without control characters other
// than tab, newline and carriage return.
func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
			return false
		}
	}
	return true
}

// View is a dead letter as a person reads it, ready for encoding/json: the
// CLI prints it. Make one with DeadLetter.View. Times are RFC 3339 text in
// UTC (text, so that any year encodes).
type View struct {
	Original       OriginalView `json:"original"`
	Error          ErrorView    `json:"error"`
	Attempts       int32        `json:"attempts"`
	FirstFailure   string       `json:"first_failure"`
	LastFailure    string       `json:"last_failure"`
	Service        string       `json:"service"`
	Group          string       `json:"group"`
	EventID        *string      `json:"event_id"`
	EventType      *string      `json:"event_type"`
	CorrelationID  *string      `json:"correlation_id"`
	DeadLetteredAt string       `json:"dead_lettered_at"`
}

// OriginalView is the original record in a View. Value is the decoded
// value (as schema.Codec.DecodeGeneric gives it) when it decodes, with
// ValueSchema its writer schema's full name; otherwise Value holds the raw
// bytes (a Bytes) and ValueError says why it did not decode. A truncated
// value is never decoded. ValueSHA256 is in hexadecimal.
type OriginalView struct {
	Topic            string       `json:"topic"`
	Partition        int32        `json:"partition"`
	Offset           int64        `json:"offset"`
	Timestamp        string       `json:"timestamp"`
	Key              Bytes        `json:"key"`
	Value            any          `json:"value"`
	ValueSchema      string       `json:"value_schema,omitempty"`
	ValueError       string       `json:"value_error,omitempty"`
	ValueSize        *int64       `json:"value_size,omitempty"`
	ValueSHA256      string       `json:"value_sha256,omitempty"`
	ValueTruncated   bool         `json:"value_truncated,omitempty"`
	Headers          []HeaderView `json:"headers"`
	HeadersTruncated bool         `json:"headers_truncated,omitempty"`
}

// HeaderView is one header in a View.
type HeaderView struct {
	Key   string `json:"key"`
	Value Bytes  `json:"value"`
}

// ErrorView is the error in a View; KnownKind is false for a kind this
// version of choreo does not define.
type ErrorView struct {
	Kind      choreo.ErrorKind `json:"kind"`
	KnownKind bool             `json:"known_kind"`
	Message   string           `json:"message"`
	Type      string           `json:"type"`
}

// View returns dl as a person reads it, with the original value decoded by
// codec when it can be (a nil codec never decodes it).
func (dl *DeadLetter) View(ctx context.Context, codec *schema.Codec) View {
	o := dl.Original
	v := View{
		Original: OriginalView{
			Topic:     o.Topic,
			Partition: o.Partition,
			Offset:    o.Offset,
			Timestamp: timeText(o.Timestamp),
			Key:       Bytes(o.Key),
			Headers:   make([]HeaderView, len(o.Headers)),

			ValueSize:        o.ValueSize,
			ValueSHA256:      hex.EncodeToString(o.ValueSHA256),
			ValueTruncated:   o.ValueTruncated,
			HeadersTruncated: o.HeadersTruncated,
		},
		Error: ErrorView{
			Kind:      dl.Error.Kind,
			KnownKind: dl.Error.KnownKind(),
			Message:   dl.Error.Message,
			Type:      dl.Error.Type,
		},
		Attempts:       dl.Attempts,
		FirstFailure:   timeText(dl.FirstFailure),
		LastFailure:    timeText(dl.LastFailure),
		Service:        dl.Service,
		Group:          dl.Group,
		EventID:        dl.EventID,
		EventType:      dl.EventType,
		CorrelationID:  dl.CorrelationID,
		DeadLetteredAt: timeText(dl.DeadLetteredAt),
	}
	for i, h := range o.Headers {
		v.Original.Headers[i] = HeaderView{Key: h.Key, Value: Bytes(h.Value)}
	}
	switch {
	case o.Value == nil:
		// A tombstone: null.
	case codec == nil:
		v.Original.Value = Bytes(o.Value)
	case o.ValueTruncated:
		v.Original.Value = Bytes(o.Value)
		v.Original.ValueError = fmt.Sprintf("truncated: the first %d bytes of the value are kept", len(o.Value))
		if o.ValueSize != nil {
			v.Original.ValueError += fmt.Sprintf(", of %d", *o.ValueSize)
		}
	default:
		val, s, err := codec.DecodeGeneric(ctx, o.Value)
		if err != nil {
			v.Original.Value = Bytes(o.Value)
			v.Original.ValueError = err.Error()
			if s != nil {
				v.Original.ValueSchema = s.FullName()
			}
		} else {
			v.Original.Value = val
			v.Original.ValueSchema = s.FullName()
		}
	}
	return v
}

// timeText returns t in RFC 3339 with as many fraction digits as needed,
// in UTC.
func timeText(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
