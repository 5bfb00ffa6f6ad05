// Package schema is choreo's Avro layer: schemas, the schema registry
// client, and the strict codec every produced and consumed event goes
// through.
//
// # Schemas
//
// Parse, MustParse and ParseFile (embed.FS friendly) return a *Schema: its
// text, canonical form and Avro full name (FullName, the value of the
// ce_type header). Each schema is parsed with a name cache of its own, so
// v1 and v2 of one record coexist in a process.
//
// # Registry
//
// Registry is a client of any Confluent-compatible registry (Confluent,
// Karapace, Redpanda, Apicurio ccompat, and the embedded one in
// schema/registry), built on franz-go's pkg/sr:
//
//	reg, err := schema.NewRegistry([]string{"http://localhost:8081"}, schema.BasicAuth(key, secret))
//	id, err := reg.Register(ctx, schema.TopicNameStrategy("orders", s), s) // development
//	id, err := reg.Lookup(ctx, "orders-value", s)                          // production
//
// Ids are cached both ways; schemas by id forever. An id the registry does
// not know is poison (choreo.KindUnknownSchema); a registry that is down
// is not (choreo.KindRetryable): an outage never dead-letters good events.
//
// # Codec
//
// Codec writes and reads the Confluent wire format: byte 0, the 4-byte
// big-endian schema id, Avro binary.
//
//	codec := schema.NewCodec(reg)
//	value, err := codec.Encode(id, s, OrderPlaced{...})
//	writerID, err := codec.Decode(ctx, value, s, &order)
//	v, writer, err := codec.DecodeGeneric(ctx, value) // JSON-ready, for tools
//
// Decoding is strict where hamba/avro's Unmarshal is lenient: a value is
// accepted only if it is exactly one well-formed datum of its writer
// schema. Every rejection wraps a sentinel (ErrEmptyValue, ErrBadMagicByte,
// ErrUnknownSchema, ErrTruncated, ErrTrailingBytes, ErrSchemaMismatch,
// ErrIncompatibleSchema, ErrTooLarge) in a *choreo.Error of the matching
// kind, so the consumer can route it with choreo.KindOf and people can
// test it with errors.Is.
//
// The data is checked by a walker compiled from the writer schema before
// hamba/avro reads it. That makes every length claim bounded by the data
// (a 5-byte value claiming a 2 GB string is ErrTruncated, and allocates
// nothing), gives errors that name the field ("field items[2].sku: union
// index 7 out of range [0,2)"), and is cheap: see the benchmarks in
// bench_test.go.
//
// hamba/avro is imported only here: no exported API of this package
// mentions its types.
package schema
