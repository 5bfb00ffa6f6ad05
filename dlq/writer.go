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
// kgo.DisableIdempotentWrite). Its kgo.ProducerBatchMaxBytes must admit
// the largest envelope (see the package documentation).
type Writer struct {
	cl      *kgo.Client
	reg     *schema.Registry
	codec   *schema.Codec
	subject schema.SubjectStrategy
	lookup  bool
	redact  []string

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
	}
	for _, n := range cfg.redact {
		if n != "" {
			w.redact = append(w.redact, n)
		}
	}
	if reg != nil {
		w.codec = schema.NewCodec(reg, schema.MaxBytesLength(cfg.maxLen))
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
// written.
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

	id, err := w.schemaID(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op(), err)
	}
	value, err := w.codec.Encode(id, envelopeSchema, &dl)
	if err != nil {
		return nil, fmt.Errorf("%s: encode: %w", op(), err)
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
// envelope, so that tools and traces see them on the dead letter.
var copiedHeaders = []string{
	choreo.HeaderID,
	choreo.HeaderType,
	choreo.HeaderCorrelationID,
	choreo.HeaderTraceParent,
	choreo.HeaderTraceState,
}

// readableHeaders returns the headers of the dead-letter record.
func readableHeaders(dl *DeadLetter) []kgo.RecordHeader {
	hs := make([]kgo.RecordHeader, 0, 7+len(copiedHeaders))
	add := func(k, v string) { hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	add(choreo.HeaderOriginalTopic, dl.Original.Topic)
	add(choreo.HeaderOriginalPartition, strconv.FormatInt(int64(dl.Original.Partition), 10))
	add(choreo.HeaderOriginalOffset, strconv.FormatInt(dl.Original.Offset, 10))
	add(choreo.HeaderErrorKind, string(dl.Error.Kind))
	add(choreo.HeaderErrorMessage, cut(dl.Error.Message, MaxHeaderMessageLen))
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

// coords returns "topic/partition/offset" of o.
func coords(o Original) string {
	return o.Topic + "/" + strconv.FormatInt(int64(o.Partition), 10) + "/" + strconv.FormatInt(o.Offset, 10)
}
