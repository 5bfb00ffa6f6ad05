// Package choreo is the shared vocabulary of the choreo toolkit: the event
// metadata every record carries, the header names of the wire contract, the
// kinds of failure the runtime tells apart, and the Permanent marker a
// handler uses to say "retrying will not help".
//
// The packages that do the work live below this one:
//
//   - schema: Avro schemas, registry access, strict encode and decode
//   - producer: publishing events with metadata and trace context
//   - consumer: the service runtime (groups, routing, commits, retries)
//   - idempotency: the processed-event store
//   - dlq: the dead-letter envelope, writer, reader and replay
//   - tracing: OpenTelemetry setup and propagation through record headers
//   - kafkatest: a broker for tests (embedded or real)
//
// This package imports none of them, so every one of them can use it.
package choreo

import (
	"context"
	crand "crypto/rand"
	"crypto/sha1"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// SpecVersion is the CloudEvents specification version written in the
// ce_specversion header.
const SpecVersion = "1.0"

// ContentTypeAvro is the content-type header value of an event whose value
// is Avro binary in the Confluent wire format (magic byte, schema id, body).
const ContentTypeAvro = "application/avro"

// Header names of the wire contract. The ce_ headers follow the CloudEvents
// Kafka protocol binding in binary mode; values are UTF-8 text.
const (
	HeaderSpecVersion   = "ce_specversion"   // CloudEvents version, always SpecVersion
	HeaderID            = "ce_id"            // event id (UUIDv7, or derived: see NextID): the idempotency key
	HeaderType          = "ce_type"          // Avro full name of the value schema
	HeaderSource        = "ce_source"        // the producing service
	HeaderTime          = "ce_time"          // RFC 3339 time the event was created
	HeaderCorrelationID = "ce_correlationid" // business transaction the event belongs to
	HeaderCausationID   = "ce_causationid"   // id of the event whose handling produced this one
	HeaderContentType   = "content-type"     // media type of the value

	// W3C trace context and baggage, written by the OpenTelemetry propagator.
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
	HeaderBaggage     = "baggage"
)

// Toolkit header names. Numbers are decimal text, as Kafka Connect writes
// its error headers, so that kcat and friends show them readably.
const (
	HeaderAttempt           = "choreo-attempt"            // delivery attempts so far, across retry tiers
	HeaderNotBefore         = "choreo-not-before"         // RFC 3339 time before which a retry record must not be handled
	HeaderFirstFailure      = "choreo-first-failure"      // RFC 3339 time handling first failed, across retry tiers
	HeaderOriginalTopic     = "choreo-original-topic"     // topic the record was first consumed from
	HeaderOriginalPartition = "choreo-original-partition" // its partition
	HeaderOriginalOffset    = "choreo-original-offset"    // its offset
	HeaderErrorKind         = "choreo-error-kind"         // an ErrorKind
	HeaderErrorMessage      = "choreo-error-message"      // the error text, cut at 1 KiB
	HeaderReplayedFrom      = "choreo-replayed-from"      // "topic/partition/offset" of the dead letter a replay came from
	HeaderRedriveCount      = "choreo-redrive-count"      // redrives of the original so far, the loop guard of choreo dlq redrive
)

// Metadata is what the wire contract says about one event, apart from its
// key and value. The producer fills it in; the consumer reads it back.
type Metadata struct {
	ID            string    // ce_id; unique per event, the idempotency key
	Type          string    // ce_type; the Avro full name of the value schema
	Source        string    // ce_source; the service that produced the event
	Time          time.Time // ce_time
	CorrelationID string    // ce_correlationid; shared by every event of one business transaction
	CausationID   string    // ce_causationid; ID of the event that caused this one, empty for a first event
}

type metadataKey struct{}

// WithMetadata returns a context that carries m as the event being handled.
// The consumer runtime calls it before a handler runs; a producer publishing
// with the returned context gives its event m's correlation id and m.ID as
// causation id.
func WithMetadata(ctx context.Context, m Metadata) context.Context {
	return context.WithValue(ctx, metadataKey{}, &m)
}

// MetadataFrom returns the metadata of the event being handled in ctx, and
// false when ctx carries none.
func MetadataFrom(ctx context.Context) (Metadata, bool) {
	m, ok := ctx.Value(metadataKey{}).(*Metadata)
	if !ok {
		return Metadata{}, false
	}
	return *m, true
}

// Handling is one record being handled by a consumer runtime: where it was
// read, by which group, and, once read, its metadata. A runtime makes one
// per record with NewHandling: the context it returns answers for
// MetadataFrom, NextID and RecordFrom at the cost of one allocation, where
// WithMetadata, WithHandlerScope and a position would take six.
type Handling struct {
	ctx       handlingCtx
	hasMD     bool
	scopeOn   bool
	md        Metadata
	scope     handlerScope
	position  Position
	hasRecord bool
}

// Position is where a record was read: its topic, partition and offset.
type Position struct {
	Topic     string
	Partition int32
	Offset    int64
}

// handlingCtx is the context of a Handling: its parent, answering for the
// Handling's values.
type handlingCtx struct {
	context.Context
	h *Handling
}

type positionKey struct{}

// Value returns the Handling's metadata, handler scope or position for
// their keys, and asks the parent for any other.
func (c *handlingCtx) Value(key any) any {
	switch key.(type) {
	case metadataKey:
		if c.h.hasMD {
			return &c.h.md
		}
	case handlerScopeKey:
		if c.h.scopeOn {
			return &c.h.scope
		}
	case positionKey:
		if c.h.hasRecord {
			return &c.h.position
		}
	}
	return c.Context.Value(key)
}

// NewHandling returns a Handling of the record at pos, read by group, and
// its context, a child of parent that carries it: RecordFrom answers pos.
// Metadata and the handler scope are set later, with SetMetadata and
// StartScope, once the record's headers have been read.
func NewHandling(parent context.Context, group string, pos Position) (*Handling, context.Context) {
	h := new(Handling)
	return h, h.Init(parent, group, pos)
}

// Init is NewHandling for a Handling the caller allocated (a field of its
// own per-record struct, say): it resets h and returns its context.
func (h *Handling) Init(parent context.Context, group string, pos Position) context.Context {
	*h = Handling{position: pos, hasRecord: true}
	h.scope.group = group
	h.ctx = handlingCtx{Context: parent, h: h}
	return &h.ctx
}

// SetMetadata makes the Handling's context answer MetadataFrom with m. Call
// it before the context is shared with other goroutines.
func (h *Handling) SetMetadata(m Metadata) {
	h.md, h.hasMD = m, true
	h.scope.parentID = m.ID
}

// StartScope starts a handler invocation's scope (see WithHandlerScope):
// NextID with the Handling's context, or one derived from it, counts this
// invocation's publishes from 0. Without an event id there is no scope.
// Call it before each invocation, while no other goroutine uses the
// context.
func (h *Handling) StartScope() {
	h.scopeOn = h.hasMD && h.md.ID != ""
	h.scope.next.Store(0)
}

// RecordFrom returns the position of the record being handled in ctx, and
// false when ctx carries none (see NewHandling).
func RecordFrom(ctx context.Context) (Position, bool) {
	p, ok := ctx.Value(positionKey{}).(*Position)
	if !ok {
		return Position{}, false
	}
	return *p, true
}

// NewID returns a new event id: a UUIDv7 (RFC 9562) in its canonical text
// form, so ids sort by creation time. The 74 random bits come from a
// ChaCha8 generator seeded from the system's random source, one per
// goroutine at a time: no system call per id.
func NewID() string {
	g := idSources.Get().(*rand.ChaCha8)
	var b [16]byte
	_, _ = g.Read(b[6:]) // ChaCha8.Read never fails
	idSources.Put(g)
	ms := uint64(time.Now().UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	b[6] = b[6]&0x0f | 0x70 // version 7
	b[8] = b[8]&0x3f | 0x80 // variant 10
	return formatUUID(&b)
}

// formatUUID returns the canonical text form of a UUID: lowercase
// hexadecimal in groups of 8-4-4-4-12.
func formatUUID(b *[16]byte) string {
	const hex = "0123456789abcdef"
	var out [36]byte
	j := 0
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hex[c>>4], hex[c&0x0f]
		j += 2
	}
	return string(out[:])
}

// DerivedIDNamespace is the UUID namespace of DerivedID, in canonical text
// form. It is itself the UUIDv5 of the URL
// "https://github.com/choreokit/choreo#derived-event-id" in the URL
// namespace of RFC 9562, so other languages can compute it too.
const DerivedIDNamespace = "86b57d32-9677-50ff-aa3f-2ec24ffd3671"

// derivedIDNamespace is DerivedIDNamespace as bytes.
var derivedIDNamespace = [16]byte{0x86, 0xb5, 0x7d, 0x32, 0x96, 0x77, 0x50, 0xff, 0xaa, 0x3f, 0x2e, 0xc2, 0x4f, 0xfd, 0x36, 0x71}

// DerivedID returns the id of the n-th event (counting from 0) that a
// handler of consumer group group publishes while handling the event with
// id parentID, when that event is of type eventType (the Avro full name).
// The same arguments always give the same id, and changing any one of them
// gives another, so a handler that is retried, or an event that is
// redelivered, publishes its events again under the same ids, and the
// stores downstream recognise the copies as duplicates.
//
// The id is a name-based UUID, version 5 (RFC 9562: SHA-1 over a
// namespace and a name, cut to 128 bits with the version and variant bits
// set), in canonical lowercase text form. The namespace is
// DerivedIDNamespace. The name is, as UTF-8 bytes, the three strings each
// as a netstring (decimal byte length, ':', the bytes, ',') followed by n in
// decimal:
//
//	36:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b,15:payment-service,28:choreo.test.PaymentRequested,0
//
// The lengths make the encoding unambiguous whatever the strings contain.
// Any UUIDv5 implementation reproduces the id from these two inputs; SHA-1
// serves here as a well-spread hash, not for security. Unlike a UUIDv7, a
// derived id does not sort by time.
func DerivedID(parentID, group, eventType string, n int) string {
	buf := make([]byte, 0, 16+len(parentID)+len(group)+len(eventType)+3*22+20) // 22: a length, ':' and ','
	buf = append(buf, derivedIDNamespace[:]...)
	for _, s := range [...]string{parentID, group, eventType} {
		buf = strconv.AppendInt(buf, int64(len(s)), 10)
		buf = append(buf, ':')
		buf = append(buf, s...)
		buf = append(buf, ',')
	}
	buf = strconv.AppendInt(buf, int64(n), 10)
	sum := sha1.Sum(buf)
	var b [16]byte
	copy(b[:], sum[:16])
	b[6] = b[6]&0x0f | 0x50 // version 5
	b[8] = b[8]&0x3f | 0x80 // variant 10
	return formatUUID(&b)
}

// handlerScope is one handler invocation, as the ids of the events it
// publishes see it.
type handlerScope struct {
	group    string
	parentID string
	next     atomic.Int64 // position of the next publish
}

type handlerScopeKey struct{}

// WithHandlerScope returns a context for one invocation of a handler of
// consumer group group, handling the event whose metadata ctx carries (see
// WithMetadata). Events published with the returned context, or a context
// derived from it, get deterministic ids: NextID returns DerivedID of the
// handled event's id, group, the event type and the publish's position
// among this invocation's publishes (0, 1, 2 …). The consumer runtime calls
// it for every handler invocation, so a retry, being a new invocation,
// counts from 0 again and publishes under the same ids.
//
// Positions are taken in the order of the NextID calls (one per event
// published). A handler that publishes from several goroutines at once gets
// deterministic ids only if it publishes in a deterministic order.
//
// Without metadata in ctx (or with an empty id) there is no event to derive
// from, and WithHandlerScope returns ctx unchanged.
func WithHandlerScope(ctx context.Context, group string) context.Context {
	m, ok := MetadataFrom(ctx)
	if !ok || m.ID == "" {
		return ctx
	}
	return context.WithValue(ctx, handlerScopeKey{}, &handlerScope{group: group, parentID: m.ID})
}

// NextID returns the id of the next event of type eventType (the Avro full
// name) published with ctx. Inside a handler scope (see WithHandlerScope)
// it is DerivedID of the handled event's id, the group, eventType and the
// next position of the scope, which it takes; elsewhere it is NewID(), a
// UUIDv7. The producer calls it once for every event it builds.
func NextID(ctx context.Context, eventType string) string {
	s, ok := ctx.Value(handlerScopeKey{}).(*handlerScope)
	if !ok {
		return NewID()
	}
	return DerivedID(s.parentID, s.group, eventType, int(s.next.Add(1)-1))
}

var idSources = sync.Pool{New: func() any {
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		panic("choreo: no system randomness for event ids: " + err.Error())
	}
	return rand.NewChaCha8(seed)
}}

// ErrorKind names why an event could not be handled. It is written in the
// choreo-error-kind header and the dead-letter envelope, so its values are
// part of the wire contract: never rename one.
type ErrorKind string

// The error kinds. All but KindRetryable are permanent: retrying the same
// bytes cannot succeed.
const (
	KindRetryable          ErrorKind = "retryable"           // a handler error that may pass on retry
	KindRetriesExhausted   ErrorKind = "retries_exhausted"   // a retryable error that kept failing
	KindPermanent          ErrorKind = "permanent"           // the handler returned Permanent(err)
	KindEmptyValue         ErrorKind = "empty_value"         // the record has no value
	KindBadMagicByte       ErrorKind = "bad_magic_byte"      // the value does not start with the wire-format magic byte 0
	KindUnknownSchema      ErrorKind = "unknown_schema_id"   // the registry does not know the value's schema id
	KindTruncated          ErrorKind = "truncated"           // the value ends before the Avro record does
	KindTrailingBytes      ErrorKind = "trailing_bytes"      // bytes follow a complete Avro record
	KindSchemaMismatch     ErrorKind = "schema_mismatch"     // the data does not match its schema, or is of another type
	KindIncompatibleSchema ErrorKind = "incompatible_schema" // the writer schema cannot be read with the reader schema
	KindMissingHeader      ErrorKind = "missing_header"      // a required header (ce_id, ce_type …) is absent or empty
	KindUnknownType        ErrorKind = "unknown_type"        // no handler is registered for the event type
	KindPanic              ErrorKind = "panic"               // the handler panicked
	KindTimeout            ErrorKind = "timeout"             // the handler ran past its deadline
	KindTooLarge           ErrorKind = "too_large"           // the value is over the configured maximum size, or the record too large for its retry topic
)

// Permanent reports whether events failing with this kind must not be retried.
func (k ErrorKind) Permanent() bool { return k != KindRetryable && k != "" }

// Error is an error with a kind. Packages of the toolkit return it (or wrap
// it) wherever the kind decides what happens to the event.
type Error struct {
	Kind ErrorKind
	Err  error
}

// Error returns the kind and the underlying message.
func (e *Error) Error() string {
	if e.Err == nil {
		return string(e.Kind)
	}
	return string(e.Kind) + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of the given kind with a formatted message; %w
// wraps as in fmt.Errorf.
func Errorf(kind ErrorKind, format string, args ...any) error {
	return &Error{Kind: kind, Err: fmt.Errorf(format, args...)}
}

// Permanent marks err as permanent: the consumer sends the event to the
// dead-letter topic at once instead of retrying it. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: KindPermanent, Err: err}
}

// IsPermanent reports whether retrying cannot help err: it, or an error it
// wraps, was marked with Permanent or carries a permanent ErrorKind.
func IsPermanent(err error) bool {
	return KindOf(err).Permanent()
}

// KindOf returns the kind of the first *Error in err's chain, KindRetryable
// for any other non-nil error, and "" for nil.
func KindOf(err error) ErrorKind {
	if err == nil {
		return ""
	}
	var ce *Error
	if errors.As(err, &ce) && ce.Kind != "" {
		return ce.Kind
	}
	return KindRetryable
}
