// Package producer publishes typed events to Kafka with the full metadata of
// choreo's wire contract.
//
// Every record it writes has the entity id as key, the event as Avro in the
// Confluent wire format as value, and these headers: ce_specversion, ce_id
// (the idempotency key; see Event ids), ce_type (the Avro full name),
// ce_source (the service), ce_time, ce_correlationid, ce_causationid and
// content-type, plus the W3C trace context through the OpenTelemetry
// propagator.
//
// # Event ids
//
// Outside a handler, every event gets a new UUIDv7, so ids sort by time.
//
// Inside a handler (publishing with the handler's context), the id is
// derived instead: choreo.DerivedID of the handled event's id, the
// consumer group, the new event's type and its position among the events
// this handler invocation has published so far (0, 1, 2 …), a UUIDv5. A
// handler that publishes and then fails, or whose event is redelivered
// after a crash, runs again as a new invocation that counts from 0 again:
// it publishes the same events under the same ids (with a new ce_time),
// and the services downstream skip the copies as duplicates. A chain of
// services is exactly once in its effects as long as every link
// deduplicates by ce_id.
//
// The position is taken when an event is built (Publish, PublishAsync or
// Record), in the order of those calls. A handler that publishes from
// several goroutines at once gets deterministic ids only if it publishes
// in a deterministic order; one that publishes different events on
// different attempts (say, depending on the time) gets ids that do not
// match across attempts, and downstream sees both.
//
// # Correlation
//
// A producer publishing inside a handler (with the handler's context) gives
// the new event the handled event's correlation id, and the handled event's
// id as causation id. Outside a handler, a new correlation id is started:
// the event's own id. To continue a transaction that began elsewhere (an
// HTTP request id, say), put it in the context with choreo.WithMetadata.
//
// # Schemas
//
// In development mode (the default) schemas are registered on first use. In
// production mode (Production) nothing is registered: a schema must already
// be in the registry under its subject, and Require checks that at start-up,
// so a service with a missing or incompatible schema fails before it
// consumes anything.
//
// # Delivery
//
// Writes are idempotent with acks=all: a record is acknowledged once every
// in-sync replica has it, and retries do not duplicate it. Publish waits for
// the acknowledgement; PublishAsync returns at once and calls back. Close
// flushes what is buffered.
//
// # Transactional outbox
//
// A handler that writes to PostgreSQL through pgstore can publish in the
// same transaction: with the Outbox option, a publish made with the
// handler's context is written to an outbox table in the transaction that
// also holds the handler's writes and the event's idempotency mark, and a
// relay (pgstore.Outbox.Relay) sends it to Kafka after the commit. Either
// the writes, the mark and the events all happen, or none does. Outside a
// transaction the producer publishes directly, as without the option.
package producer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/tracing"
)

// ErrClosed is returned by publishes after Close.
var ErrClosed = errors.New("producer is closed")

// Producer publishes events. It is safe for concurrent use.
type Producer struct {
	cl       *kgo.Client
	conn     connection.Config // how cl connects, to explain failures (LastError)
	ownsCl   bool
	reg      *schema.Registry
	codec    *schema.Codec
	source   string
	register bool
	subject  schema.SubjectStrategy
	prop     propagation.TextMapPropagator
	metrics  *tracing.Metrics
	outbox   OutboxWriter
	now      func() time.Time

	ids  sync.Map // idKey → int: schema id per topic and schema
	warm sync.Map // topic → struct{}: topics the client has partitions of (see publish)

	mu     sync.RWMutex
	closed bool
}

type idKey struct {
	topic  string
	schema *schema.Schema
}

type config struct {
	source     string
	production bool
	subject    schema.SubjectStrategy
	prop       propagation.TextMapPropagator
	metrics    *tracing.Metrics
	kgoOpts    []kgo.Opt
	client     *kgo.Client
	required   []requirement
	codecOpts  []schema.CodecOption
	outbox     OutboxWriter
}

type requirement struct {
	topic  string
	events []schema.Event
}

// Option configures a Producer.
type Option func(*config)

// Source sets the ce_source header: the name of the producing service.
// The default is the program's file name.
func Source(name string) Option { return func(c *config) { c.source = name } }

// Production turns off auto-registration: every schema must already be
// registered under its subject. Combine with Require to fail at start-up.
func Production() Option { return func(c *config) { c.production = true } }

// Require makes New check that the schemas of these events can be used on
// topic: registered (in production mode) or registrable (in development
// mode), and compatible with the subject's history. New fails otherwise.
func Require(topic string, events ...schema.Event) Option {
	return func(c *config) { c.required = append(c.required, requirement{topic, events}) }
}

// Subjects sets how subjects are named; the default is
// schema.TopicNameStrategy (<topic>-value).
func Subjects(s schema.SubjectStrategy) Option { return func(c *config) { c.subject = s } }

// Propagator sets the propagator that writes trace context into headers;
// the default is otel.GetTextMapPropagator() at publish time.
func Propagator(p propagation.TextMapPropagator) Option { return func(c *config) { c.prop = p } }

// Metrics sets where the producer records choreo.producer.publishes and
// choreo.producer.publish.duration; the default is tracing.NewMetrics with
// the global meter provider at the time New is called (so call
// tracing.Setup first).
func Metrics(m *tracing.Metrics) Option { return func(c *config) { c.metrics = m } }

// ClientOptions adds franz-go options to the producer's client (linger,
// batch size, compression …). Options that would weaken delivery (acks,
// idempotence) are the caller's responsibility.
func ClientOptions(opts ...kgo.Opt) Option {
	return func(c *config) { c.kgoOpts = append(c.kgoOpts, opts...) }
}

// Client makes the producer publish through an existing client instead of
// creating one; Close then leaves the client open. The connection.Config
// given to New is ignored.
func Client(cl *kgo.Client) Option { return func(c *config) { c.client = cl } }

// CodecOptions passes options to the producer's codec.
func CodecOptions(opts ...schema.CodecOption) Option {
	return func(c *config) { c.codecOpts = append(c.codecOpts, opts...) }
}

// OutboxWriter keeps records to be published later by a relay, in the same
// transaction as the handler's other writes. pgstore.Outbox is one: it
// writes to a table in the transaction of the pgstore.Store handling the
// event.
type OutboxWriter interface {
	// Enqueue stores rec, fully built (topic, key, value and every
	// header), for a relay to publish once the transaction that ctx
	// carries commits, and reports queued true. When ctx carries no such
	// transaction it stores nothing and reports false: the producer then
	// publishes rec directly. A non-nil error means rec was not stored and
	// the publish fails.
	Enqueue(ctx context.Context, rec *kgo.Record) (queued bool, err error)
}

// Outbox makes the producer offer every record to o before producing it:
// a record that o queues (inside a handler's database transaction) is not
// produced now but by o's relay after the transaction commits; any other
// record is produced at once. The publish succeeds once the record is in
// the outbox; its Published has Queued set and no partition or offset.
//
// With an outbox, a handler's publishes commit or roll back with its
// database writes and its idempotency mark: an event published by a
// handler that then fails is never sent, and one published by a handler
// that succeeded is sent even if the process dies right after the commit.
// The relay may send a record more than once (a crash between the
// broker's acknowledgement and the row's deletion); the copies share the
// record's ce_id, which, inside a handler, is derived from the handled
// event (see Event ids), so a retried handler queues the same id again.
func Outbox(o OutboxWriter) Option { return func(c *config) { c.outbox = o } }

// New returns a producer connected as conn says, using reg for schemas. It
// checks the schemas named by Require before returning.
func New(ctx context.Context, conn connection.Config, reg *schema.Registry, opts ...Option) (*Producer, error) {
	if reg == nil {
		return nil, errors.New("producer: a schema registry is required")
	}
	cfg := config{subject: schema.TopicNameStrategy}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.source == "" {
		cfg.source = filepath.Base(os.Args[0])
	}
	if cfg.metrics == nil {
		m, err := tracing.NewMetrics(nil)
		if err != nil {
			return nil, fmt.Errorf("producer: %w", err)
		}
		cfg.metrics = m
	}
	p := &Producer{
		reg:      reg,
		codec:    schema.NewCodec(reg, cfg.codecOpts...),
		source:   cfg.source,
		register: !cfg.production,
		subject:  cfg.subject,
		prop:     cfg.prop,
		metrics:  cfg.metrics,
		outbox:   cfg.outbox,
		now:      time.Now,
		cl:       cfg.client,
		conn:     conn,
	}
	if p.cl == nil {
		copts, err := conn.ClientOptions()
		if err != nil {
			return nil, fmt.Errorf("producer: %w", err)
		}
		copts = append(copts, kgo.RequiredAcks(kgo.AllISRAcks()))
		cl, err := kgo.NewClient(append(copts, cfg.kgoOpts...)...)
		if err != nil {
			return nil, fmt.Errorf("producer: new client: %w", err)
		}
		p.cl, p.ownsCl = cl, true
	}
	for _, r := range cfg.required {
		for _, ev := range r.events {
			if err := p.check(ctx, r.topic, ev); err != nil {
				p.closeClient()
				return nil, err
			}
		}
	}
	return p, nil
}

// check makes sure ev's schema can be used on topic.
func (p *Producer) check(ctx context.Context, topic string, ev schema.Event) error {
	s := ev.AvroSchema()
	subject := p.subject(topic, s)
	if !p.register {
		if _, err := p.schemaID(ctx, topic, s); err != nil {
			return err
		}
		return nil
	}
	if err := p.reg.CheckCompatible(ctx, subject, s); err != nil {
		return fmt.Errorf("producer: schema %s for topic %s: %w", s.FullName(), topic, err)
	}
	return nil
}

// schemaID returns the registry id of s under topic's subject, registering
// it in development mode.
func (p *Producer) schemaID(ctx context.Context, topic string, s *schema.Schema) (int, error) {
	k := idKey{topic, s} // the subject is a function of both
	if id, ok := p.ids.Load(k); ok {
		return id.(int), nil
	}
	subject := p.subject(topic, s)
	var id int
	var err error
	if p.register {
		id, err = p.reg.Register(ctx, subject, s)
	} else {
		id, err = p.reg.Lookup(ctx, subject, s)
	}
	if err != nil {
		return 0, fmt.Errorf("producer: schema %s under subject %s: %w", s.FullName(), subject, err)
	}
	p.ids.Store(k, id)
	return id, nil
}

// Published says where an event landed.
type Published struct {
	Topic     string
	Partition int32 // -1 when Queued
	Offset    int64 // -1 when Queued
	Key       string
	Metadata  choreo.Metadata
	Queued    bool // written to the outbox (see Outbox), to be sent after its transaction commits
}

// Record builds the record for ev without sending it: encoded value, key
// and every header of the wire contract. It fails, sending nothing, when ev
// does not match its schema; the error names the field.
func (p *Producer) Record(ctx context.Context, topic, key string, ev schema.Event) (*kgo.Record, choreo.Metadata, error) {
	rec, md, err := p.record(ctx, topic, key, ev)
	if err != nil {
		return nil, md, err
	}
	p.propagator().Inject(ctx, tracing.HeaderCarrier{Record: rec})
	return rec, md, nil
}

// record is Record without the trace context.
func (p *Producer) record(ctx context.Context, topic, key string, ev schema.Event) (*kgo.Record, choreo.Metadata, error) {
	if ev == nil {
		return nil, choreo.Metadata{}, errors.New("producer: nil event")
	}
	if topic == "" {
		return nil, choreo.Metadata{}, errors.New("producer: empty topic")
	}
	s := ev.AvroSchema()
	if s == nil {
		return nil, choreo.Metadata{}, fmt.Errorf("producer: %T.AvroSchema() returned nil", ev)
	}
	id, err := p.schemaID(ctx, topic, s)
	if err != nil {
		return nil, choreo.Metadata{}, err
	}
	value, err := p.codec.Encode(id, s, ev)
	if err != nil {
		return nil, choreo.Metadata{}, fmt.Errorf("producer: encode %s for topic %s: %w", s.FullName(), topic, err)
	}

	md := choreo.Metadata{
		ID:     choreo.NextID(ctx, s.FullName()), // derived inside a handler, UUIDv7 outside
		Type:   s.FullName(),
		Source: p.source,
		Time:   p.now().UTC(),
	}
	if parent, ok := choreo.MetadataFrom(ctx); ok {
		md.CorrelationID = parent.CorrelationID
		md.CausationID = parent.ID
	}
	if md.CorrelationID == "" {
		md.CorrelationID = md.ID
	}

	// The record, its headers and the bytes of the key and the header
	// values share one allocation.
	box := new(recordBox)
	rec := &box.rec
	rec.Topic, rec.Value = topic, value
	rec.Headers = box.hdrs[:0]
	vals := [...]struct{ k, v string }{
		{choreo.HeaderSpecVersion, choreo.SpecVersion},
		{choreo.HeaderID, md.ID},
		{choreo.HeaderType, md.Type},
		{choreo.HeaderSource, md.Source},
		{choreo.HeaderTime, ""}, // appended from md.Time below
		{choreo.HeaderCorrelationID, md.CorrelationID},
		{choreo.HeaderCausationID, md.CausationID},
		{choreo.HeaderContentType, choreo.ContentTypeAvro},
	}
	size := len(key) + len(time.RFC3339Nano) + 5
	for _, kv := range vals {
		size += len(kv.v)
	}
	buf := box.buf[:0]
	if size > len(box.buf) {
		buf = make([]byte, 0, size)
	}
	if key != "" {
		buf = append(buf, key...)
		rec.Key = buf[:len(buf):len(buf)]
	}
	for _, kv := range vals {
		start := len(buf)
		if kv.k == choreo.HeaderTime {
			buf = md.Time.AppendFormat(buf, time.RFC3339Nano)
		} else {
			buf = append(buf, kv.v...)
		}
		if len(buf) == start {
			continue // no causation for a first event
		}
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: kv.k, Value: buf[start:len(buf):len(buf)]})
	}
	return rec, md, nil
}

// recordBox is a record with room for its headers (the contract's eight
// and the trace context's three) and for the bytes of its key and header
// values, so that building a record takes one allocation.
type recordBox struct {
	rec  kgo.Record
	hdrs [11]kgo.RecordHeader
	buf  [320]byte
}

func (p *Producer) propagator() propagation.TextMapPropagator {
	if p.prop != nil {
		return p.prop
	}
	return otel.GetTextMapPropagator()
}

// Publish sends ev to topic under key and waits until the broker has
// acknowledged it. The record is sent at once, without waiting out the
// client's linger (franz-go's ProduceSync): a handler that publishes its
// next event pays one round trip, not the linger on top.
func (p *Producer) Publish(ctx context.Context, topic, key string, ev schema.Event) (Published, error) {
	var pub Published
	var err error
	p.publish(ctx, topic, key, ev, true, func(r Published, e error) { pub, err = r, e })
	return pub, err
}

// PublishAsync sends ev to topic under key and returns at once; fn, if not
// nil, is called once the broker acknowledged the record or it failed. fn
// runs on the client's callback goroutine: keep it short. The record waits
// up to the client's linger (kgo.ProducerLinger) to be batched with
// others.
//
// Each record sent gets a "send <topic>" span (tracing.StartSend), ended
// when the broker answers; the record's traceparent is that span's
// context. Every publish, failed or not, is counted in the producer
// metrics.
//
// With an Outbox that queues the record, fn is called before
// PublishAsync returns, and the send span ends once the record is in the
// outbox: the relay that sends it later makes no span of its own, so the
// consumer's process span is still the child of this send span.
func (p *Producer) PublishAsync(ctx context.Context, topic, key string, ev schema.Event, fn func(Published, error)) {
	if fn == nil {
		fn = func(Published, error) {}
	}
	p.publish(ctx, topic, key, ev, false, fn)
}

// publish is Publish (sync) and PublishAsync: fn is called once with the
// outcome, before publish returns when sync.
func (p *Producer) publish(ctx context.Context, topic, key string, ev schema.Event, sync bool, fn func(Published, error)) {
	start := time.Now()
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		p.metrics.Published(ctx, topic, time.Since(start), ErrClosed)
		fn(Published{Topic: topic, Key: key}, ErrClosed)
		return
	}
	rec, md, err := p.record(ctx, topic, key, ev)
	if err != nil {
		p.metrics.Published(ctx, topic, time.Since(start), err)
		fn(Published{Topic: topic, Key: key}, err)
		return
	}
	sctx, span := tracing.StartSend(ctx, rec)
	p.propagator().Inject(sctx, tracing.HeaderCarrier{Record: rec})
	if p.outbox != nil {
		queued, err := p.outbox.Enqueue(ctx, rec)
		if err != nil {
			err = fmt.Errorf("producer: publish %s to %s: writing to the outbox: %w", md.Type, topic, err)
		}
		if queued || err != nil {
			tracing.EndSend(span, nil, err)
			p.metrics.Published(ctx, topic, time.Since(start), err)
			fn(Published{Topic: topic, Partition: -1, Offset: -1, Key: key, Metadata: md, Queued: err == nil}, err)
			return
		}
	}
	done := func(r *kgo.Record, err error) {
		pub := Published{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: key, Metadata: md}
		if err != nil {
			switch {
			case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
				// A deadline says nothing of why: a broker that refuses
				// the credentials or whose certificate is not trusted
				// makes the client retry until it passes.
				if cerr := p.conn.LastError(p.cl); cerr != nil {
					err = fmt.Errorf("%w; last connection attempt: %w", err, cerr)
				}
			case connection.Permanent(err):
				err = p.conn.Explain(err) // refused credentials: say which setting
			}
			err = fmt.Errorf("producer: publish %s to %s: %w", md.Type, r.Topic, err)
		}
		tracing.EndSend(span, r, err)
		p.metrics.Published(ctx, topic, time.Since(start), err)
		fn(pub, err)
	}
	if sync {
		// ProduceSync stops the linger only for partitions the client
		// knows: the first record to a topic would wait it out. Flushing
		// meanwhile turns lingering off until that record is sent.
		if _, warm := p.warm.Load(topic); !warm {
			fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
			go func() { _ = p.cl.Flush(fctx) }()
			defer stop()
		}
		res := p.cl.ProduceSync(sctx, rec)
		if res[0].Err == nil {
			p.warm.Store(topic, struct{}{})
		}
		done(res[0].Record, res[0].Err)
		return
	}
	p.cl.Produce(sctx, rec, done)
}

// Flush waits until every buffered record is acknowledged or failed, or ctx
// ends.
func (p *Producer) Flush(ctx context.Context) error {
	if err := p.cl.Flush(ctx); err != nil {
		return fmt.Errorf("producer: flush: %w", err)
	}
	return nil
}

// Close stops new publishes, flushes what is buffered (until ctx ends) and
// closes the client if the producer created it. Records still buffered when
// ctx ends fail with an error in their callbacks.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.Flush(ctx)
	p.closeClient()
	return err
}

func (p *Producer) closeClient() {
	if p.ownsCl {
		p.cl.Close()
	}
}
