package schema

import (
	"errors"
	"fmt"

	"github.com/choreokit/choreo"
)

// Sentinel errors. Every rejection of the codec wraps one of them in a
// *choreo.Error whose Kind says what the consumer does with the event, so
// both of these work on an error returned by Decode:
//
//	errors.Is(err, schema.ErrTruncated)
//	choreo.KindOf(err) == choreo.KindTruncated
//
// All the codec kinds are permanent: retrying the same bytes cannot
// succeed. An error that is not one of them (a registry outage, a canceled
// context) has kind choreo.KindRetryable.
var (
	// ErrEmptyValue: the record value is empty (a tombstone, or a bug).
	// Kind: choreo.KindEmptyValue.
	ErrEmptyValue = errors.New("empty value")

	// ErrBadMagicByte: the value does not start with the wire-format magic
	// byte 0. Kind: choreo.KindBadMagicByte.
	ErrBadMagicByte = errors.New("bad magic byte")

	// ErrUnknownSchema: the registry answered that it does not know the
	// schema id (HTTP 404 with error code 40403). Kind:
	// choreo.KindUnknownSchema. A registry that cannot be reached, or that
	// answers with a server error, never yields this error.
	ErrUnknownSchema = errors.New("unknown schema id")

	// ErrTruncated: the value ends before the Avro data does, or before
	// the 5-byte wire-format header does. Kind: choreo.KindTruncated.
	ErrTruncated = errors.New("truncated avro data")

	// ErrTrailingBytes: bytes follow a complete Avro record. Kind:
	// choreo.KindTrailingBytes.
	ErrTrailingBytes = errors.New("trailing bytes after avro data")

	// ErrSchemaMismatch: the data does not match its schema (an invalid
	// union or enum index, a negative length, an overflowing varint, a
	// string that is not UTF-8 …), the schema is not Avro, or, when
	// encoding, the value does not match the schema. Kind:
	// choreo.KindSchemaMismatch.
	ErrSchemaMismatch = errors.New("data does not match schema")

	// ErrIncompatibleSchema: the writer schema cannot be read with the
	// reader schema, or the registry judged a schema incompatible with a
	// subject. Kind: choreo.KindIncompatibleSchema.
	ErrIncompatibleSchema = errors.New("incompatible schema")

	// ErrTooLarge: a string, bytes, array or map in the data is over the
	// codec's limits (see MaxBytesLength). Kind: choreo.KindTooLarge.
	ErrTooLarge = errors.New("avro data over limit")

	// ErrNotRegistered: Registry.Lookup found no such schema under the
	// subject. It carries no choreo kind (so it counts as retryable): a
	// schema that is not registered yet is a deployment problem, not a
	// fault of the event being handled.
	ErrNotRegistered = errors.New("schema not registered")
)

// kindError returns a *choreo.Error of the given kind whose message is the
// formatted text followed by ": " and the sentinel. It wraps the sentinel,
// and any %w operand of format.
func kindError(kind choreo.ErrorKind, sentinel error, format string, args ...any) error {
	return &choreo.Error{Kind: kind, Err: fmt.Errorf(format+": %w", append(args, sentinel)...)}
}

// IncompatibleError is the error of a compatibility check that failed: the
// registry (or the reader schema of a decode) rejected a schema, for the
// reasons listed. It unwraps to ErrIncompatibleSchema; the error returned
// wraps it in a *choreo.Error of kind choreo.KindIncompatibleSchema, so
//
//	var ie *schema.IncompatibleError
//	if errors.As(err, &ie) { fmt.Println(ie.Reasons) }
type IncompatibleError struct {
	Subject string   // the subject checked, empty for a reader/writer pair
	Schema  string   // full name of the schema that was checked
	Reasons []string // why, as the registry or the resolver said it
}

// Error lists the reasons.
func (e *IncompatibleError) Error() string {
	msg := "schema " + e.Schema
	if e.Subject != "" {
		msg += " is incompatible with subject " + e.Subject
	} else {
		msg += " is incompatible"
	}
	for i, r := range e.Reasons {
		if i == 0 {
			msg += ": "
		} else {
			msg += "; "
		}
		msg += r
	}
	return msg
}

// Unwrap returns ErrIncompatibleSchema.
func (e *IncompatibleError) Unwrap() error { return ErrIncompatibleSchema }
