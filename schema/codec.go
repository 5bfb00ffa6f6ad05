package schema

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/choreokit/choreo"
	"github.com/hamba/avro/v2"
	"github.com/modern-go/reflect2"
)

// DefaultMaxBytesLength is the default limit on the length of one Avro
// string or bytes value: 16 MiB, above the largest record a default Kafka
// broker accepts (1 MiB) with room for dead-letter envelopes that carry a
// whole original record.
const DefaultMaxBytesLength = 16 << 20

// SchemaSource gives the writer schema of a schema id. *Registry is one;
// StaticSource is another, for tests and tools.
//
// An implementation must return an error of kind choreo.KindUnknownSchema
// (wrapping ErrUnknownSchema) only when it knows that the id does not
// exist, and a plain error when it cannot tell (the registry is down), so
// that an outage is retried and never dead-letters good events.
type SchemaSource interface {
	SchemaByID(ctx context.Context, id int) (*Schema, error)
}

// StaticSource is a SchemaSource over a fixed set of schemas by id.
type StaticSource map[int]*Schema

// SchemaByID returns m[id], or an ErrUnknownSchema error of kind
// choreo.KindUnknownSchema.
func (m StaticSource) SchemaByID(_ context.Context, id int) (*Schema, error) {
	if s := m[id]; s != nil {
		return s, nil
	}
	return nil, kindError(choreo.KindUnknownSchema, ErrUnknownSchema, "schema: schema id %d", id)
}

// CodecOption configures a Codec.
type CodecOption func(*Codec)

// MaxBytesLength sets the longest string or bytes value the codec accepts,
// in bytes (default DefaultMaxBytesLength). A longer one fails with
// ErrTooLarge (kind choreo.KindTooLarge). Whatever the limit, a length
// claimed beyond the end of the data is rejected as truncated before
// anything is allocated.
func MaxBytesLength(n int) CodecOption {
	return func(c *Codec) {
		if n > 0 {
			c.lim.maxLen = n
		}
	}
}

// Codec encodes values to and decodes values from the Confluent wire
// format (byte 0, 4-byte big-endian schema id, Avro binary), strictly:
//
//   - Encode checks the value against the schema before any byte is
//     returned; a value that does not fit fails with ErrSchemaMismatch and
//     a message naming the field.
//   - Decode and DecodeGeneric accept a value only if it is exactly one
//     well-formed Avro datum of its writer schema: no byte missing, none
//     left over, every length, index and varint in range, every string
//     UTF-8. Each rejection is a *choreo.Error whose Kind is one of
//     KindEmptyValue, KindBadMagicByte, KindUnknownSchema, KindTruncated,
//     KindTrailingBytes, KindSchemaMismatch, KindIncompatibleSchema and
//     KindTooLarge, wrapping the matching sentinel (ErrEmptyValue …). Any
//     other error (the registry is unreachable, the context is done) has
//     kind choreo.KindRetryable.
//
// Decoding validates the bytes with the writer schema before hamba/avro
// reads them, so a few bytes can never make it allocate gigabytes (a
// 2 GB string claim in a 10-byte value is ErrTruncated) nor panic.
//
// Writer schemas are fetched from the SchemaSource once per id and kept
// for the life of the Codec, as is the resolution of each writer schema
// against each reader schema. The hot path takes no lock. A Codec is safe
// for concurrent use.
type Codec struct {
	src SchemaSource
	api avro.API
	lim limits

	writers atomic.Pointer[map[int]*writerEntry] // copy on write
	mu      sync.Mutex                           // serialises cache updates

	readerPool sync.Pool // *avro.Reader
	writerPool sync.Pool // *avro.Writer
}

// writerEntry is a writer schema by id, and its resolutions.
type writerEntry struct {
	id    int
	s     *Schema
	self  *plan                              // reading with the writer schema itself
	plans atomic.Pointer[map[[32]byte]*plan] // reader text fingerprint → plan; copy on write
}

// plan is how data of one writer schema is read with one reader schema:
// the resolved schema, and hamba's decoders for it by Go type. Looking the
// decoder up here, by type pointer, skips hamba's own cache look-up (a
// sync.Map keyed by two 32-byte fingerprints) on every decode.
type plan struct {
	resolved avro.Schema
	err      error
	decs     atomic.Pointer[map[uintptr]avro.ValDecoder] // copy on write
}

func newPlan(resolved avro.Schema, err error) *plan {
	p := &plan{resolved: resolved, err: err}
	m := map[uintptr]avro.ValDecoder{}
	p.decs.Store(&m)
	return p
}

// NewCodec returns a Codec that looks writer schemas up in src (usually a
// *Registry).
func NewCodec(src SchemaSource, opts ...CodecOption) *Codec {
	c := &Codec{src: src, lim: defaultLimits}
	for _, opt := range opts {
		opt(c)
	}
	c.api = avro.Config{
		MaxByteSliceSize: c.lim.maxLen,
		// Write array and map blocks as the Java library does: a count,
		// without the optional byte size.
		DisableBlockSizeHeader: true,
		// The walker checks array and map counts against the data first;
		// this is a second fence.
		MaxSliceAllocSize: 1 << 26,
	}.Freeze()
	c.readerPool.New = func() any { return avro.NewReader(nil, 0, avro.WithReaderConfig(c.api)) }
	c.writerPool.New = func() any { return avro.NewWriter(nil, 512, avro.WithWriterConfig(c.api)) }
	m := map[int]*writerEntry{}
	c.writers.Store(&m)
	return c
}

// Encode returns v in the wire format with schema id id, encoded with s.
// id is the id of s in the registry (see Registry.Register and
// Registry.Lookup); Encode does not check that it is.
//
// v is what hamba/avro encodes: a struct with `avro:"field"` tags (or a
// pointer to one) or a map[string]any for a record; string, []byte,
// int32/int, int64/int, float32, float64, bool for the primitives;
// time.Time for timestamps; a pointer or nil for an optional union;
// slices and maps for arrays and maps. A value that does not fit s fails
// with an error of kind choreo.KindSchemaMismatch (ErrSchemaMismatch) that
// names the field, and nothing is returned: a wrong Go type, a missing
// field without default, an unknown enum symbol, a string that is not
// UTF-8, a Go int out of an Avro int's range (which hamba/avro would
// truncate silently).
func (c *Codec) Encode(id int, s *Schema, v any) ([]byte, error) {
	w, err := c.encode(id, s, v)
	if err != nil {
		return nil, err
	}
	body := w.Buffer()
	out := make([]byte, HeaderSize+len(body))
	AppendHeader(out[:0], id)
	copy(out[HeaderSize:], body)
	c.putWriter(w)
	return out, nil
}

// AppendEncode is like Encode but appends the encoded value to dst and
// returns the extended slice; with a dst of enough capacity it does not
// allocate. On error it returns dst unchanged.
func (c *Codec) AppendEncode(dst []byte, id int, s *Schema, v any) ([]byte, error) {
	w, err := c.encode(id, s, v)
	if err != nil {
		return dst, err
	}
	dst = AppendHeader(dst, id)
	dst = append(dst, w.Buffer()...)
	c.putWriter(w)
	return dst, nil
}

// encode writes v into a pooled writer and checks the result; on success
// the caller copies the buffer out and returns the writer.
func (c *Codec) encode(id int, s *Schema, v any) (w *avro.Writer, err error) {
	if s == nil {
		return nil, choreo.Permanent(errors.New("schema: encode: nil schema"))
	}
	if id < 0 || id > math.MaxUint32 {
		return nil, choreo.Permanent(fmt.Errorf("schema: encode %s: schema id %d out of range", s.fullName, id))
	}
	w = c.writerPool.Get().(*avro.Writer)
	w.Reset(nil)
	defer func() {
		if p := recover(); p != nil {
			w = nil
			err = kindError(choreo.KindSchemaMismatch, ErrSchemaMismatch, "schema: encode %s: %T: panic: %v", s.fullName, v, p)
		}
	}()
	if v == nil {
		w.WriteVal(s.avro, v) // hamba's error for nil
	} else {
		e := c.encoder(s, v)
		if e.checkInts {
			if derr := checkInts(s.prog, reflect.ValueOf(v), 0); derr != nil {
				c.putWriter(w)
				return nil, derr.err("schema: encode " + s.fullName)
			}
		}
		e.enc.Encode(reflect2.PtrOf(v), w)
	}
	if w.Error != nil {
		err := encodeError(s, v, w.Error)
		c.putWriter(w)
		return nil, err
	}
	// hamba writes what it is given: check the result as a reader would
	// (this catches strings that are not UTF-8, and strings over the limit).
	if derr := s.prog.check(w.Buffer(), &c.lim); derr != nil {
		if derr.kind != choreo.KindTooLarge {
			derr.kind, derr.sentinel = choreo.KindSchemaMismatch, ErrSchemaMismatch
		}
		c.putWriter(w)
		return nil, derr.err("schema: encode " + s.fullName)
	}
	return w, nil
}

// encoder returns hamba's encoder of s for v's type. Looking it up on s,
// by type pointer, skips hamba's own cache look-up (a sync.Map keyed by a
// 32-byte fingerprint) on every encode.
func (c *Codec) encoder(s *Schema, v any) encoder {
	key := encKey{c, reflect2.RTypeOf(v)}
	if m := s.encs.Load(); m != nil {
		if e, ok := (*m)[key]; ok {
			return e
		}
	}
	e := encoder{
		enc:       c.api.EncoderOf(s.avro, reflect2.TypeOf(v)),
		checkInts: intRisk(s.prog, reflect.TypeOf(v)),
	}
	s.encMu.Lock()
	defer s.encMu.Unlock()
	var old map[encKey]encoder
	if m := s.encs.Load(); m != nil {
		old = *m
	}
	m := make(map[encKey]encoder, len(old)+1)
	for k, e := range old {
		m[k] = e
	}
	m[key] = e
	s.encs.Store(&m)
	return e
}

// encodeError wraps an error of hamba's encoder. hamba names a struct
// field by its Go name ("AmountCents: avro: string is unsupported for Avro
// long"); the Avro name is added, since that is what the schema says.
func encodeError(s *Schema, v any, err error) error {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && t.Kind() == reflect.Struct {
		if goName, rest, ok := strings.Cut(err.Error(), ": "); ok {
			for name, idx := range structFields(t) {
				if f := t.FieldByIndex(idx); f.Name == goName && name != goName {
					return kindError(choreo.KindSchemaMismatch, ErrSchemaMismatch, "schema: encode %s: field %s (Go field %s): %s", s.fullName, name, goName, rest)
				}
			}
		}
	}
	return kindError(choreo.KindSchemaMismatch, ErrSchemaMismatch, "schema: encode %s: %w", s.fullName, err)
}

func (c *Codec) putWriter(w *avro.Writer) {
	if cap(w.Buffer()) > 1<<20 {
		return // let an unusually large buffer go
	}
	w.Error = nil
	c.writerPool.Put(w)
}

// Decode reads a wire-format value into v (a pointer, as for
// hamba/avro's Unmarshal: to a struct with `avro` tags, a map, or an any)
// and returns the schema id it was written with.
//
// The data is read with its writer schema (by id, from the source) and
// resolved to reader, following Avro's schema-resolution rules: fields the
// reader lacks are skipped, fields the writer lacks take the reader's
// default. With a nil reader the writer schema is used as it is. A writer
// schema that cannot be resolved to reader fails with
// ErrIncompatibleSchema (kind choreo.KindIncompatibleSchema).
//
// See Codec for the rejections. The id is returned with every error past
// the header, so that it can be reported.
func (c *Codec) Decode(ctx context.Context, data []byte, reader *Schema, v any) (writerID int, err error) {
	id, body, err := ParseHeader(data)
	if err != nil {
		return 0, err
	}
	we, err := c.writer(ctx, id)
	if err != nil {
		return id, err
	}
	if derr := we.s.prog.check(body, &c.lim); derr != nil {
		return id, derr.err(decodeOp(we))
	}
	p := we.self
	if reader != nil && reader.fp != we.s.fp {
		if p = c.plan(we, reader); p.err != nil {
			return id, p.err
		}
	}
	return id, c.read(we, p, body, v)
}

func decodeOp(we *writerEntry) string {
	return fmt.Sprintf("schema: decode %s (schema id %d)", we.s.fullName, we.id)
}

// decoder returns hamba's decoder of p's schema into v's type.
func (c *Codec) decoder(we *writerEntry, p *plan, v any) (avro.ValDecoder, error) {
	rt := reflect2.RTypeOf(v)
	if dec := (*p.decs.Load())[rt]; dec != nil {
		return dec, nil
	}
	if v == nil || reflect.TypeOf(v).Kind() != reflect.Pointer {
		return nil, kindError(choreo.KindSchemaMismatch, ErrSchemaMismatch, "%s: into %T: not a pointer", decodeOp(we), v)
	}
	dec := c.api.DecoderOf(p.resolved, reflect2.TypeOf(v))
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *p.decs.Load()
	m := make(map[uintptr]avro.ValDecoder, len(old)+1)
	for k, d := range old {
		m[k] = d
	}
	m[rt] = dec
	p.decs.Store(&m)
	return dec, nil
}

// read decodes body, already validated, with hamba/avro.
func (c *Codec) read(we *writerEntry, p *plan, body []byte, v any) (err error) {
	dec, err := c.decoder(we, p, v)
	if err != nil {
		return err
	}
	ptr := reflect2.PtrOf(v)
	if ptr == nil {
		return kindError(choreo.KindSchemaMismatch, ErrSchemaMismatch, "%s: into %T: nil pointer", decodeOp(we), v)
	}
	r := c.readerPool.Get().(*avro.Reader)
	r.Reset(body)
	defer func() {
		if p := recover(); p != nil {
			err = kindError(choreo.KindSchemaMismatch, ErrSchemaMismatch, "%s: into %T: panic: %v", decodeOp(we), v, p)
		}
		r.Reset(nil)
		r.Error = nil
		c.readerPool.Put(r)
	}()
	dec.Decode(ptr, r)
	if r.Error == nil {
		// The walker has checked that the body is exactly one datum; make
		// sure hamba read all of it too (Peek sets io.EOF at the end).
		r.Peek()
		if !errors.Is(r.Error, io.EOF) {
			return kindError(choreo.KindTrailingBytes, ErrTrailingBytes, "%s: bytes left after decoding", decodeOp(we))
		}
		return nil
	}
	if errors.Is(r.Error, io.EOF) || errors.Is(r.Error, io.ErrUnexpectedEOF) {
		return kindError(choreo.KindTruncated, ErrTruncated, "%s: %w", decodeOp(we), r.Error)
	}
	return kindError(choreo.KindSchemaMismatch, ErrSchemaMismatch, "%s: into %T: %w", decodeOp(we), v, r.Error)
}

// DecodeGeneric reads a wire-format value with its writer schema, strictly
// as Decode does, and returns it as JSON-ready Go values together with the
// writer schema. The mapping, made for printing events as JSON:
//
//	record, map     map[string]any
//	array           []any
//	null            nil
//	boolean         bool
//	int, long       int32, int64
//	float, double   float32, float64; NaN and ±Inf as "NaN", "Infinity", "-Infinity"
//	string, enum    string (an enum as its symbol)
//	bytes, fixed    string, standard base64
//	union           the value of the branch written, without a wrapper
//	decimal         string, such as "-12.50"
//	date            string, "2006-01-02"
//	time-millis/-micros        string, "15:04:05.000" / "15:04:05.000000"
//	timestamp-millis/-micros   string, RFC 3339 in UTC
//	local-timestamp-*          string, RFC 3339 without a zone
//	duration        map with months, days, millis
//
// Unions lose the branch name: ["null","string"] reads as nil or a string,
// which is what a person wants to see. Every string is a copy: the result
// does not alias data.
func (c *Codec) DecodeGeneric(ctx context.Context, data []byte) (value any, s *Schema, err error) {
	id, body, err := ParseHeader(data)
	if err != nil {
		return nil, nil, err
	}
	we, err := c.writer(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	w := walker{buf: body, lim: &c.lim}
	v, derr := w.value(we.s.prog)
	if derr == nil && w.pos != len(body) {
		derr = &dataError{kind: choreo.KindTrailingBytes, sentinel: ErrTrailingBytes,
			msg: fmt.Sprintf("%d bytes follow the %d-byte %s value", len(body)-w.pos, w.pos, we.s.fullName)}
	}
	if derr != nil {
		return nil, we.s, derr.err(decodeOp(we))
	}
	return v, we.s, nil
}

// Validate checks that data is a well-formed wire-format value, exactly
// as Decode would before reading it, and returns its writer schema id and
// schema.
func (c *Codec) Validate(ctx context.Context, data []byte) (writerID int, s *Schema, err error) {
	id, body, err := ParseHeader(data)
	if err != nil {
		return 0, nil, err
	}
	we, err := c.writer(ctx, id)
	if err != nil {
		return id, nil, err
	}
	if derr := we.s.prog.check(body, &c.lim); derr != nil {
		return id, we.s, derr.err(decodeOp(we))
	}
	return id, we.s, nil
}

// writer returns the writer schema of id, from the cache or the source.
func (c *Codec) writer(ctx context.Context, id int) (*writerEntry, error) {
	if we := (*c.writers.Load())[id]; we != nil {
		return we, nil
	}
	s, err := c.src.SchemaByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("schema: schema source returned no schema for id %d", id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.writers.Load()
	if we := old[id]; we != nil {
		return we, nil
	}
	we := &writerEntry{id: id, s: s, self: newPlan(s.avro, nil)}
	plans := map[[32]byte]*plan{}
	we.plans.Store(&plans)
	m := make(map[int]*writerEntry, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[id] = we
	c.writers.Store(&m)
	return we, nil
}

// plan returns how to read we's data with reader, resolving once.
func (c *Codec) plan(we *writerEntry, reader *Schema) *plan {
	// Plans are keyed by the reader's text, not its canonical form: the
	// resolution depends on field defaults, which the canonical form lacks.
	if p := (*we.plans.Load())[reader.tfp]; p != nil {
		return p
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *we.plans.Load()
	if p := old[reader.tfp]; p != nil {
		return p
	}
	// A SchemaCompatibility of its own for each resolution: hamba's caches
	// its verdicts by canonical fingerprints, which ignore defaults (a
	// reader field with a default and one without would share a verdict),
	// and a check in progress reads as compatible to a concurrent one.
	// Resolving happens once per (writer id, reader), so this costs little.
	var p *plan
	resolved, err := avro.NewSchemaCompatibility().Resolve(reader.avro, we.s.avro)
	if err != nil {
		p = newPlan(nil, &choreo.Error{Kind: choreo.KindIncompatibleSchema, Err: fmt.Errorf("%s: into reader schema %s: %w", decodeOp(we), reader.fullName,
			&IncompatibleError{Schema: we.s.fullName, Reasons: []string{err.Error()}})})
	} else {
		p = newPlan(resolved, nil)
	}
	m := make(map[[32]byte]*plan, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[reader.tfp] = p
	we.plans.Store(&m)
	return p
}
