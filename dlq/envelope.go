package dlq

import (
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/schema"
)

//go:embed deadletter.avsc
var envelopeText string

var envelopeSchema = schema.MustParse(envelopeText)

// Schema returns the Avro schema of the dead-letter envelope,
// choreo.dlq.DeadLetter, as in the file deadletter.avsc.
func Schema() *schema.Schema { return envelopeSchema }

// Limits on the error message.
const (
	// MaxMessageLen is the longest error message kept in the envelope, in
	// bytes. A longer one is cut on a UTF-8 boundary.
	MaxMessageLen = 16 << 10

	// MaxHeaderMessageLen is the longest error message written in the
	// readable choreo-error-message header, in bytes. A longer one is cut
	// on a UTF-8 boundary; the envelope has the longer text.
	MaxHeaderMessageLen = 1 << 10
)

// Redacted is the value that replaces the value of a redacted header (see
// Redact).
const Redacted = "[redacted]"

// DeadLetter is the dead-letter envelope: the value of every record of a
// dead-letter topic, Avro record choreo.dlq.DeadLetter (see Schema). It is
// a schema.Event, so a schema.Codec encodes and decodes it and a producer
// can publish it; Writer is the usual way to write one.
type DeadLetter struct {
	Original Original  `avro:"original"` // the record that failed, whole
	Error    ErrorInfo `avro:"error"`    // why it failed
	// Attempts is the number of delivery attempts made, across retry
	// tiers; at least 1.
	Attempts       int32     `avro:"attempts"`
	FirstFailure   time.Time `avro:"first_failure"`    // when handling first failed
	LastFailure    time.Time `avro:"last_failure"`     // when handling last failed
	Service        string    `avro:"service"`          // the service that failed
	Group          string    `avro:"group"`            // its consumer group
	EventID        *string   `avro:"event_id"`         // ce_id of the record, nil when absent
	EventType      *string   `avro:"event_type"`       // ce_type of the record, nil when absent
	CorrelationID  *string   `avro:"correlation_id"`   // ce_correlationid of the record, nil when absent
	DeadLetteredAt time.Time `avro:"dead_lettered_at"` // when the dead letter was made (by New; Write sets a zero one to now)
}

// AvroSchema returns the envelope schema; it makes DeadLetter a
// schema.Event.
func (DeadLetter) AvroSchema() *schema.Schema { return envelopeSchema }

// Original is a Kafka record as it was consumed, and where it was read
// from. Key, Value and header values keep the difference between nil (no
// key, a tombstone, a null header) and empty.
//
// A record too large for the dead-letter topic is kept in part: Value
// holds the first bytes of the value (ValueTruncated), header values are
// cut, the largest first (HeadersTruncated). ValueSize and ValueSHA256
// always describe the whole value, so the original can be recognized.
type Original struct {
	Topic     string    `avro:"topic"`
	Partition int32     `avro:"partition"`
	Offset    int64     `avro:"offset"`
	Timestamp time.Time `avro:"timestamp"` // millisecond precision
	Key       []byte    `avro:"key"`
	Value     []byte    `avro:"value"`   // the value, or its first bytes when ValueTruncated
	Headers   []Header  `avro:"headers"` // in order; keys may repeat

	// ValueSize is the length of the whole value in bytes; nil for a
	// tombstone, and in envelopes written before the field existed.
	ValueSize *int64 `avro:"value_size"`
	// ValueSHA256 is the SHA-256 of the whole value; nil when ValueSize
	// is.
	ValueSHA256 []byte `avro:"value_sha256"`
	// ValueTruncated says that Value holds only the first bytes of the
	// value: the record was too large to be dead-lettered whole.
	ValueTruncated bool `avro:"value_truncated"`
	// HeadersTruncated says that header values were cut, or headers left
	// out, for the same reason.
	HeadersTruncated bool `avro:"headers_truncated"`
}

// Truncated reports whether o holds less than the record it describes:
// its value or headers were cut to fit the dead-letter topic. Replaying
// it would publish the cut record: don't.
func (o *Original) Truncated() bool { return o.ValueTruncated || o.HeadersTruncated }

// describeValue sets ValueSize and ValueSHA256 from Value when they are
// unset and Value is whole.
func (o *Original) describeValue() {
	if o.Value == nil || o.ValueSize != nil || o.ValueTruncated {
		return
	}
	n := int64(len(o.Value))
	sum := sha256.Sum256(o.Value)
	o.ValueSize, o.ValueSHA256 = &n, sum[:]
}

// Header is one record header.
type Header struct {
	Key   string `avro:"key"`
	Value []byte `avro:"value"`
}

// ErrorInfo is the error a record was dead-lettered for.
type ErrorInfo struct {
	// Kind is a choreo.ErrorKind. Readers keep kinds they do not know
	// (written by a newer version); KnownKind tells them apart.
	Kind choreo.ErrorKind `avro:"kind"`
	// Message is the error text, at most MaxMessageLen bytes.
	Message string `avro:"message"`
	// Type is the Go type of the error as fmt's %T prints it: that of the
	// first error in the chain that is not a plain wrapper (see New).
	Type string `avro:"type"`
}

// KnownKind reports whether e.Kind is one of the kinds this version of
// choreo defines.
func (e ErrorInfo) KnownKind() bool {
	switch e.Kind {
	case choreo.KindRetryable, choreo.KindRetriesExhausted, choreo.KindPermanent,
		choreo.KindEmptyValue, choreo.KindBadMagicByte, choreo.KindUnknownSchema,
		choreo.KindTruncated, choreo.KindTrailingBytes, choreo.KindSchemaMismatch,
		choreo.KindIncompatibleSchema, choreo.KindMissingHeader, choreo.KindUnknownType,
		choreo.KindPanic, choreo.KindTimeout, choreo.KindTooLarge:
		return true
	}
	return false
}

// Failure is what the consumer runtime knows about a record it gives up
// on, the input of New besides the record.
type Failure struct {
	// Err is the last error. Its text becomes the message, its type the
	// error type, and its kind (choreo.KindOf) the kind unless Kind is
	// set.
	Err error
	// Kind overrides the kind of Err, for example with
	// choreo.KindRetriesExhausted when the retries ran out.
	Kind choreo.ErrorKind
	// Attempts is the number of delivery attempts made; less than 1
	// counts as 1.
	Attempts int
	// FirstFailure and LastFailure are when handling first and last
	// failed. A zero LastFailure is the time of New; a zero FirstFailure
	// is LastFailure.
	FirstFailure, LastFailure time.Time
	// Service and Group name the failing service and its consumer group.
	Service, Group string
}

// New returns the dead letter of the record failed, which failed as f
// says. It never fails and never panics: the consumer runtime calls it on
// its way to committing past a poison record.
//
// The envelope shares failed's key, value and header value slices: do
// not modify them while the dead letter is in use. Its fields are filled
// as follows:
//
//   - Original: failed's topic, partition, offset, timestamp, key, value
//     and headers, as they are; header keys that are not UTF-8 have the
//     bad bytes replaced by U+FFFD (Avro strings must be UTF-8). The
//     value's size and SHA-256 (ValueSize, ValueSHA256), for a value that
//     is not nil. New cuts nothing: the Writer cuts what does not fit its
//     limits.
//   - EventID, EventType, CorrelationID: the last ce_id, ce_type and
//     ce_correlationid headers of failed with a non-empty value, nil when
//     there are none.
//   - Error.Kind: f.Kind, else choreo.KindOf(f.Err), else (for a nil
//     f.Err) choreo.KindPermanent.
//   - Error.Message: f.Err.Error(), made UTF-8 and cut at MaxMessageLen
//     bytes on a UTF-8 boundary; empty for a nil f.Err.
//   - Error.Type: fmt's %T of the first error in f.Err's chain that is
//     not a plain wrapper, so that it names the cause rather than the
//     wrapping: *choreo.Error (its kind is recorded already),
//     fmt.Errorf's %w wrappers and errors.Join are skipped, and the
//     chain is followed through single Unwrap methods only. When every
//     error reached is such a wrapper, the type of the innermost one. For
//     example
//     choreo.Permanent(fmt.Errorf("parse: %w", &json.SyntaxError{}))
//     gives "*json.SyntaxError", errors.New("x") "*errors.errorString".
//   - Attempts, FirstFailure, LastFailure, Service, Group: from f (see
//     Failure for the defaults); DeadLetteredAt: now.
func New(failed *kgo.Record, f Failure) DeadLetter {
	now := time.Now()
	dl := DeadLetter{
		Service:        validUTF8(f.Service),
		Group:          validUTF8(f.Group),
		Attempts:       clampAttempts(f.Attempts),
		FirstFailure:   f.FirstFailure,
		LastFailure:    f.LastFailure,
		DeadLetteredAt: now,
	}
	if dl.LastFailure.IsZero() {
		dl.LastFailure = now
	}
	if dl.FirstFailure.IsZero() {
		dl.FirstFailure = dl.LastFailure
	}
	if failed != nil {
		dl.Original = Original{
			Topic:     failed.Topic,
			Partition: failed.Partition,
			Offset:    failed.Offset,
			Timestamp: failed.Timestamp,
			Key:       failed.Key,
			Value:     failed.Value,
			Headers:   make([]Header, len(failed.Headers)),
		}
		for i, h := range failed.Headers {
			dl.Original.Headers[i] = Header{Key: validUTF8(h.Key), Value: h.Value}
		}
		dl.Original.describeValue()
		dl.EventID = lastHeader(failed.Headers, choreo.HeaderID)
		dl.EventType = lastHeader(failed.Headers, choreo.HeaderType)
		dl.CorrelationID = lastHeader(failed.Headers, choreo.HeaderCorrelationID)
	}
	dl.Error.Kind = f.Kind
	if dl.Error.Kind == "" {
		dl.Error.Kind = choreo.KindOf(f.Err)
	}
	if dl.Error.Kind == "" {
		dl.Error.Kind = choreo.KindPermanent
	}
	if f.Err != nil {
		dl.Error.Message = cut(validUTF8(errorText(f.Err)), MaxMessageLen)
		dl.Error.Type = errorType(f.Err)
	}
	return dl
}

// clampAttempts fits n into the envelope's int, at least 1.
func clampAttempts(n int) int32 {
	switch {
	case n < 1:
		return 1
	case n > math.MaxInt32:
		return math.MaxInt32
	}
	return int32(n)
}

// lastHeader returns the value of the last header named key with a
// non-empty value, made UTF-8, or nil.
func lastHeader(hs []kgo.RecordHeader, key string) *string {
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].Key == key && len(hs[i].Value) > 0 {
			s := validUTF8(string(hs[i].Value))
			return &s
		}
	}
	return nil
}

// errorText returns err.Error(), or a description of the panic of a
// broken Error method (a nil pointer receiver, say).
func errorText(err error) (s string) {
	defer func() {
		if p := recover(); p != nil {
			s = fmt.Sprintf("%T: Error method panicked: %v", err, p)
		}
	}()
	return err.Error()
}

// errorType returns %T of the first error in err's chain that is not a
// plain wrapper, or of the innermost error reached when they all are.
func errorType(err error) string {
	last := err
	for e, depth := err, 0; e != nil && depth < 64; depth++ {
		if !plainWrapper(e) {
			return fmt.Sprintf("%T", e)
		}
		last = e
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return fmt.Sprintf("%T", last)
}

// plainWrapper reports whether e only adds context (or a kind) to the
// errors it wraps.
func plainWrapper(e error) bool {
	if _, ok := e.(*choreo.Error); ok {
		return true
	}
	switch fmt.Sprintf("%T", e) {
	case "*fmt.wrapError", "*fmt.wrapErrors", "*errors.joinError":
		return true
	}
	return false
}

// validUTF8 replaces each run of bytes that are not UTF-8 by U+FFFD.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// cut returns the longest prefix of s of at most n bytes that ends on a
// UTF-8 boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// sanitized returns a copy of dl whose strings are all UTF-8, so that it
// encodes whatever its maker put in it, and whose header slice is its own.
func (dl DeadLetter) sanitized() DeadLetter {
	dl.Original.Topic = validUTF8(dl.Original.Topic)
	hs := make([]Header, len(dl.Original.Headers))
	for i, h := range dl.Original.Headers {
		hs[i] = Header{Key: validUTF8(h.Key), Value: h.Value}
	}
	dl.Original.Headers = hs
	dl.Error.Kind = choreo.ErrorKind(validUTF8(string(dl.Error.Kind)))
	dl.Error.Message = cut(validUTF8(dl.Error.Message), MaxMessageLen)
	dl.Error.Type = validUTF8(dl.Error.Type)
	dl.Service = validUTF8(dl.Service)
	dl.Group = validUTF8(dl.Group)
	for _, p := range []**string{&dl.EventID, &dl.EventType, &dl.CorrelationID} {
		if *p != nil {
			s := validUTF8(**p)
			*p = &s
		}
	}
	return dl
}

// errNilRecord is returned for a nil record.
var errNilRecord = errors.New("nil record")
