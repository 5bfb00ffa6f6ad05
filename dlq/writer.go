package dlq

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/schema"
)

// WriterOption configures a Writer.
type WriterOption func(*writerConfig)

type writerConfig struct {
	redact     []string
	subject    schema.SubjectStrategy
	maxLen     int
	maxRecord  int
	production bool
}

// Redact names headers whose values must not be stored: the value of
// every header with one of these names (compared without regard to case,
// as HTTP does) is replaced by Redacted, in the envelope's original
// headers and in the headers copied beside it. Redacting ce_id, ce_type
// or ce_correlationid redacts the matching envelope field too. Replay
// cannot restore a redacted value.
//
//	dlq.NewWriter(cl, reg, dlq.Redact("authorization", "x-api-key"))
func Redact(headerNames ...string) WriterOption {
	return func(c *writerConfig) { c.redact = append(c.redact, headerNames...) }
}

// Subjects sets the subject the envelope schema is registered under for a
// topic; the default is schema.TopicNameStrategy ("<topic>-value").
func Subjects(s schema.SubjectStrategy) WriterOption {
	return func(c *writerConfig) {
		if s != nil {
			c.subject = s
		}
	}
}

// MaxBytesLength sets the largest original value, key or header value (in
// bytes) the writer's codec accepts; the default is
// schema.DefaultMaxBytesLength (16 MiB). The broker has a limit of its own
// (see the package documentation).
func MaxBytesLength(n int) WriterOption {
	return func(c *writerConfig) { c.maxLen = n }
}

// MaxRecordBytes bounds the dead-letter records the writer produces to n
// bytes: the envelope, the key and the headers, counted as a record batch
// of that one record takes on the wire uncompressed (what franz-go
// compares with kgo.ProducerBatchMaxBytes; a broker compares the batch,
// compressed or not, with the topic's max.message.bytes). Give it the
// smaller of the two.
//
// A dead letter that would be larger is cut to fit, so that it can always
// be written: first the header values beyond half of n (the largest value
// first), then the original value (its first bytes are kept), then the
// other header values, then headers from the end. The envelope says what
// was cut (Original.ValueTruncated, Original.HeadersTruncated) and keeps
// the size and SHA-256 of the whole value. The key is never cut: a key
// too large for n fails Write.
//
// Without it, the only limit is the codec's (MaxBytesLength): a value or
// header value over it is cut to it, in the same way.
func MaxRecordBytes(n int) WriterOption {
	return func(c *writerConfig) { c.maxRecord = n }
}

// Production makes the writer look the envelope schema up under its
// subject instead of registering it: for registries where services may
// not add schemas. Write then fails with schema.ErrNotRegistered until the
// schema is registered.
func Production() WriterOption {
	return func(c *writerConfig) { c.production = true }
}

// Writer writes dead letters: the envelope as Avro in the Confluent wire
// format, the original key, and readable headers. It is safe for
// concurrent use.
//
// The client is the caller's, and decides the delivery guarantees: it must
// produce with acks=all and idempotent writes, which are franz-go's
// defaults (do not use kgo.RequiredAcks with fewer acks, nor
// kgo.DisableIdempotentWrite). Its kgo.ProducerBatchMaxBytes, and the
// topic's max.message.bytes, must admit the largest dead letter: give the
// smaller of them to MaxRecordBytes and the writer cuts what does not fit
// (see the package documentation).
type Writer struct {
	cl      *kgo.Client
	reg     *schema.Registry
	codec   *schema.Codec
	subject schema.SubjectStrategy
	lookup  bool
	redact  []string
	maxLen  int // longest value or header value the codec takes
	maxRec  int // MaxRecordBytes; 0: none

	ids sync.Map // subject → schema id
}

// NewWriter returns a writer producing through cl, with the envelope
// schema registered in (or, with Production, looked up in) reg.
func NewWriter(cl *kgo.Client, reg *schema.Registry, opts ...WriterOption) *Writer {
	cfg := writerConfig{subject: schema.TopicNameStrategy, maxLen: schema.DefaultMaxBytesLength}
	for _, o := range opts {
		o(&cfg)
	}
	w := &Writer{
		cl:      cl,
		reg:     reg,
		subject: cfg.subject,
		lookup:  cfg.production,
		maxLen:  cfg.maxLen,
		maxRec:  cfg.maxRecord,
	}
	if w.maxLen <= 0 {
		w.maxLen = schema.DefaultMaxBytesLength
	}
	for _, n := range cfg.redact {
		if n != "" {
			w.redact = append(w.redact, n)
		}
	}
	if reg != nil {
		w.codec = schema.NewCodec(reg, schema.MaxBytesLength(w.maxLen))
	}
	return w
}

// Write writes dl to the dead-letter topic and returns once the broker
// has acknowledged it.
//
// It registers the envelope schema under the topic's subject (once per
// subject, then cached), encodes dl, checks the encoded value against the
// schema as a reader would (strictly: a value that does not decode is
// never published), and produces it synchronously with dl's original key
// and the headers listed in the package documentation. A zero
// DeadLetteredAt is set to now. Strings that are not UTF-8 have their bad
// bytes replaced by U+FFFD, so that any dead letter New made can be
// written. An original too large for the writer's limits is cut to fit
// (see MaxRecordBytes); an unset Original.ValueSize and ValueSHA256 are
// computed from a whole value.
//
// Every failure is returned, wrapped with the topic and the original
// record's coordinates: a registry outage, a refused or unacknowledged
// produce, a done ctx. The caller must not commit past the original
// record then, and may retry; a retry after a lost acknowledgement can
// write a second, identical dead letter.
func (w *Writer) Write(ctx context.Context, topic string, dl DeadLetter) error {
	rec, err := w.Record(ctx, topic, dl)
	if err != nil {
		return err
	}
	if w.cl == nil {
		return fmt.Errorf("dlq: write %s to %s: no client", coords(dl.Original), topic)
	}
	if err := w.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("dlq: write %s to %s: %w", coords(dl.Original), topic, err)
	}
	return nil
}

// Record returns the record Write would produce for dl, without producing
// it: for callers that produce asynchronously and track acknowledgements
// themselves. See Write.
func (w *Writer) Record(ctx context.Context, topic string, dl DeadLetter) (*kgo.Record, error) {
	op := func() string { return fmt.Sprintf("dlq: write %s to %s", coords(dl.Original), topic) }
	if err := checkTopic(topic); err != nil {
		return nil, fmt.Errorf("%s: %w", op(), err)
	}
	if w.reg == nil {
		return nil, fmt.Errorf("%s: no schema registry", op())
	}
	dl = dl.sanitized()
	if dl.DeadLetteredAt.IsZero() {
		dl.DeadLetteredAt = time.Now()
	}
	w.applyRedaction(&dl)
	dl.Original.describeValue()
	w.capLengths(&dl.Original)

	id, err := w.schemaID(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op(), err)
	}
	value, err := w.encodeToFit(id, &dl)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op(), err)
	}
	// Check the bytes as a reader will see them: with the writer schema
	// the registry has under id, strictly.
	_, s, err := w.codec.Validate(ctx, value)
	if err != nil {
		return nil, fmt.Errorf("%s: validate encoded envelope: %w", op(), err)
	}
	if !s.Equal(envelopeSchema) {
		return nil, fmt.Errorf("%s: schema id %d is %s in the registry, not the envelope schema", op(), id, s.FullName())
	}

	rec := &kgo.Record{
		Topic:     topic,
		Key:       dl.Original.Key,
		Value:     value,
		Timestamp: dl.DeadLetteredAt,
		Headers:   readableHeaders(&dl),
	}
	return rec, nil
}

// Check makes sure that the envelope schema can be used for topic, as the
// first Write would: it registers the schema under the topic's subject,
// or, with Production, looks it up there. A service calls it at start-up
// to fail then, rather than at its first dead letter. With Production, a
// schema that is not registered fails with an error that names the
// subject and wraps schema.ErrNotRegistered.
func (w *Writer) Check(ctx context.Context, topic string) error {
	if err := checkTopic(topic); err != nil {
		return fmt.Errorf("dlq: check %s: %w", topic, err)
	}
	if w.reg == nil {
		return fmt.Errorf("dlq: check %s: no schema registry", topic)
	}
	if _, err := w.schemaID(ctx, topic); err != nil {
		return fmt.Errorf("dlq: check %s: %w", topic, err)
	}
	return nil
}

// Sizes, in bytes, of a record batch holding one record, uncompressed:
// the batch header as franz-go counts it (with the 4-byte length of the
// batch), and the record's own fields with every varint at its largest.
const (
	batchOverhead  = 65
	recordOverhead = 5 + 1 + 10 + 5 + 5 + 5 + 5 // length, attributes, timestamp and offset deltas, key, value and header-count lengths
	headerOverhead = 5 + 5                      // key and value lengths
)

// recordBytes is the size of a batch of one record with this key, value
// and headers; it errs on the large side.
func recordBytes(key, value []byte, hs []kgo.RecordHeader) int {
	n := batchOverhead + recordOverhead + len(key) + len(value)
	for _, h := range hs {
		n += headerOverhead + len(h.Key) + len(h.Value)
	}
	return n
}

// capLengths cuts a value or header value over the codec's limit to it.
func (w *Writer) capLengths(o *Original) {
	if len(o.Value) > w.maxLen {
		o.Value, o.ValueTruncated = o.Value[:w.maxLen], true
	}
	for i, h := range o.Headers {
		if len(h.Value) > w.maxLen {
			o.Headers[i].Value, o.HeadersTruncated = h.Value[:w.maxLen], true
		}
	}
}

// encodeToFit encodes dl, cutting its original until the dead-letter
// record fits the writer's MaxRecordBytes.
func (w *Writer) encodeToFit(id int, dl *DeadLetter) ([]byte, error) {
	for {
		value, err := w.codec.Encode(id, envelopeSchema, dl)
		if err != nil {
			return nil, fmt.Errorf("encode: %w", err)
		}
		if w.maxRec <= 0 {
			return value, nil
		}
		size := recordBytes(dl.Original.Key, value, readableHeaders(dl))
		over := size - w.maxRec
		if over <= 0 {
			return value, nil
		}
		// Cutting removes at least over bytes from the record (lengths
		// only shrink), so the next round fits, unless nothing is left
		// to cut.
		if !shrink(&dl.Original, over, w.maxRec/2) {
			return nil, choreo.Errorf(choreo.KindTooLarge, "dead letter of %d bytes does not fit the limit of %d even with the original value and headers cut (key of %d bytes, error message of %d)",
				size, w.maxRec, len(dl.Original.Key), len(dl.Error.Message))
		}
	}
}

// shrink cuts at least over bytes from o's header values and value, in
// the order MaxRecordBytes documents (headers beyond headerShare bytes
// first), and reports whether there was that much to cut.
func shrink(o *Original, over, headerShare int) bool {
	if hb := headerBytes(o.Headers); hb > headerShare {
		over -= cutHeaders(o, min(over, hb-headerShare))
	}
	if over > 0 && len(o.Value) > 0 {
		n := min(over, len(o.Value))
		o.Value, o.ValueTruncated = o.Value[:len(o.Value)-n], true
		over -= n
	}
	if over > 0 {
		over -= cutHeaders(o, over)
	}
	return over <= 0
}

// headerBytes is the length of the keys and values of hs.
func headerBytes(hs []Header) int {
	n := 0
	for _, h := range hs {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// cutHeaders removes need bytes from o's headers: from the values, the
// largest first, then, once every value is empty, whole headers from the
// end. It returns the bytes removed, less than need only when no header
// is left.
func cutHeaders(o *Original, need int) int {
	removed := 0
	for removed < need {
		big := -1
		for i, h := range o.Headers {
			if len(h.Value) > 0 && (big < 0 || len(h.Value) > len(o.Headers[big].Value)) {
				big = i
			}
		}
		if big < 0 {
			break
		}
		v := o.Headers[big].Value
		n := min(need-removed, len(v))
		o.Headers[big].Value = v[:len(v)-n]
		removed += n
	}
	for removed < need && len(o.Headers) > 0 {
		last := o.Headers[len(o.Headers)-1]
		o.Headers = o.Headers[:len(o.Headers)-1]
		removed += len(last.Key) + len(last.Value)
	}
	if removed > 0 {
		o.HeadersTruncated = true
	}
	return removed
}

// schemaID returns the id of the envelope schema under topic's subject.
func (w *Writer) schemaID(ctx context.Context, topic string) (int, error) {
	subject := w.subject(topic, envelopeSchema)
	if id, ok := w.ids.Load(subject); ok {
		return id.(int), nil
	}
	var id int
	var err error
	if w.lookup {
		id, err = w.reg.Lookup(ctx, subject, envelopeSchema)
	} else {
		id, err = w.reg.Register(ctx, subject, envelopeSchema)
	}
	if err != nil {
		return 0, fmt.Errorf("envelope schema under subject %s: %w", subject, err)
	}
	w.ids.Store(subject, id)
	return id, nil
}

// redacted reports whether headers named key are redacted.
func (w *Writer) redacted(key string) bool {
	for _, n := range w.redact {
		if strings.EqualFold(n, key) {
			return true
		}
	}
	return false
}

// applyRedaction redacts dl's headers, which are dl's own (see sanitized).
func (w *Writer) applyRedaction(dl *DeadLetter) {
	if len(w.redact) == 0 {
		return
	}
	for i := range dl.Original.Headers {
		if w.redacted(dl.Original.Headers[i].Key) {
			dl.Original.Headers[i].Value = []byte(Redacted)
		}
	}
	for _, f := range []struct {
		header string
		field  **string
	}{
		{choreo.HeaderID, &dl.EventID},
		{choreo.HeaderType, &dl.EventType},
		{choreo.HeaderCorrelationID, &dl.CorrelationID},
	} {
		if *f.field != nil && w.redacted(f.header) {
			s := Redacted
			*f.field = &s
		}
	}
}

// copiedHeaders are the headers of the original record written beside the
// envelope, so that tools and traces see them on the dead letter: the
// event's identity, its trace, and the redrive lineage of a redriven
// record that failed again.
var copiedHeaders = []string{
	choreo.HeaderID,
	choreo.HeaderType,
	choreo.HeaderCorrelationID,
	choreo.HeaderTraceParent,
	choreo.HeaderTraceState,
	choreo.HeaderRedriveCount,
	choreo.HeaderReplayedFrom,
}

// readableHeaders returns the headers of the dead-letter record.
func readableHeaders(dl *DeadLetter) []kgo.RecordHeader {
	hs := make([]kgo.RecordHeader, 0, 7+len(copiedHeaders))
	add := func(k, v string) { hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	add(choreo.HeaderOriginalTopic, dl.Original.Topic)
	add(choreo.HeaderOriginalPartition, strconv.FormatInt(int64(dl.Original.Partition), 10))
	add(choreo.HeaderOriginalOffset, strconv.FormatInt(dl.Original.Offset, 10))
	add(choreo.HeaderErrorKind, string(dl.Error.Kind))
	add(choreo.HeaderErrorMessage, HeaderMessage(dl.Error.Message))
	add(choreo.HeaderAttempt, strconv.FormatInt(int64(dl.Attempts), 10))
	add(choreo.HeaderContentType, choreo.ContentTypeAvro)
	for _, name := range copiedHeaders {
		for i := len(dl.Original.Headers) - 1; i >= 0; i-- {
			if h := dl.Original.Headers[i]; h.Key == name && h.Value != nil {
				hs = append(hs, kgo.RecordHeader{Key: name, Value: h.Value})
				break
			}
		}
	}
	return hs
}

// HeaderMessage returns an error message as the choreo-error-message
// header carries it, on dead letters and on retry-topic forwards alike:
// valid UTF-8, on one line, cut at MaxHeaderMessageLen bytes.
func HeaderMessage(msg string) string {
	return cut(singleLine(strings.ToValidUTF8(msg, "\uFFFD")), MaxHeaderMessageLen)
}

// singleLine replaces line breaks and tabs by spaces, so that a tool
// printing a record's headers on one line (kcat's %h) prints one line.
func singleLine(s string) string {
	if !strings.ContainsAny(s, "\r\n\t") {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '\r', '\n', '\t':
			return ' '
		}
		return r
	}, s)
}

// coords returns "topic/partition/offset" of o.
func coords(o Original) string {
	return o.Topic + "/" + strconv.FormatInt(int64(o.Partition), 10) + "/" + strconv.FormatInt(o.Offset, 10)
}
