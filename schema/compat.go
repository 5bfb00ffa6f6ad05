package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hamba/avro/v2"
)

// Schema compatibility, as a Confluent-compatible registry judges it.
//
// Every schema text here is parsed with a name cache of its own, never with
// hamba/avro's process-wide default cache. That cache is keyed by full name
// and shared by every parse in the process, so with it a schema text that
// merely names a type it does not define (for example "com.example.Order")
// is accepted and silently resolved to whichever Order was parsed last, by
// anyone. Likewise each comparison uses a fresh avro.SchemaCompatibility:
// its memo is keyed by the Parsing Canonical Form fingerprint, which ignores
// field defaults, so a shared one answers a check between v2 (a new field
// with a default) and v1 with the result it remembered for another v2 (the
// same field without a default), or the other way round.

// Compatibility is a schema compatibility level, as configured per subject (or
// globally) in a Confluent-compatible schema registry. Its values are the
// upper-case names the registry's REST API uses.
type Compatibility string

// The compatibility levels. "The new schema" is the candidate being checked;
// "existing" schemas are the versions already registered under the subject.
const (
	// CompatNone disables compatibility checking: every schema is accepted.
	CompatNone Compatibility = "NONE"
	// CompatBackward: consumers using the new schema can read data written
	// with the latest existing schema.
	CompatBackward Compatibility = "BACKWARD"
	// CompatBackwardTransitive: consumers using the new schema can read data
	// written with every existing schema.
	CompatBackwardTransitive Compatibility = "BACKWARD_TRANSITIVE"
	// CompatForward: consumers using the latest existing schema can read data
	// written with the new schema.
	CompatForward Compatibility = "FORWARD"
	// CompatForwardTransitive: consumers using any existing schema can read
	// data written with the new schema.
	CompatForwardTransitive Compatibility = "FORWARD_TRANSITIVE"
	// CompatFull is both CompatBackward and CompatForward.
	CompatFull Compatibility = "FULL"
	// CompatFullTransitive is both CompatBackwardTransitive and
	// CompatForwardTransitive.
	CompatFullTransitive Compatibility = "FULL_TRANSITIVE"
)

// compatLevels lists the valid levels in the order they are documented.
var compatLevels = []Compatibility{
	CompatNone,
	CompatBackward,
	CompatBackwardTransitive,
	CompatForward,
	CompatForwardTransitive,
	CompatFull,
	CompatFullTransitive,
}

// ErrUnknownCompatibility is wrapped by the errors of [ParseCompatibility]
// and [CheckCompatibility] when a compatibility level is not one of the seven
// known levels.
var ErrUnknownCompatibility = errors.New("unknown compatibility level")

// ParseCompatibility returns the level named by s. Matching ignores case and
// surrounding white space, so "full_transitive" is CompatFullTransitive. An
// unknown name gives an error wrapping [ErrUnknownCompatibility] that lists
// the valid names.
func ParseCompatibility(s string) (Compatibility, error) {
	c := Compatibility(strings.ToUpper(strings.TrimSpace(s)))
	if !c.Valid() {
		return "", compatUnknownLevel(s)
	}
	return c, nil
}

// Valid reports whether c is one of the seven known levels (exactly, in upper
// case).
func (c Compatibility) Valid() bool {
	for _, l := range compatLevels {
		if c == l {
			return true
		}
	}
	return false
}

// backward reports whether the level requires the new schema to read data
// written with existing ones.
func (c Compatibility) backward() bool {
	return c == CompatBackward || c == CompatBackwardTransitive || c == CompatFull || c == CompatFullTransitive
}

// forward reports whether the level requires existing schemas to read data
// written with the new one.
func (c Compatibility) forward() bool {
	return c == CompatForward || c == CompatForwardTransitive || c == CompatFull || c == CompatFullTransitive
}

// transitive reports whether the level checks against every existing schema
// rather than only the latest.
func (c Compatibility) transitive() bool {
	return c == CompatBackwardTransitive || c == CompatForwardTransitive || c == CompatFullTransitive
}

func compatUnknownLevel(s string) error {
	names := make([]string, len(compatLevels))
	for i, l := range compatLevels {
		names[i] = string(l)
	}
	return fmt.Errorf("%w %q: want one of %s", ErrUnknownCompatibility, s, strings.Join(names, ", "))
}

// InvalidSchemaError is returned by [CheckCompatibility] when a schema text
// is not a valid Avro schema. Use errors.As to get it.
type InvalidSchemaError struct {
	// Index is -1 when the candidate schema is invalid, otherwise the
	// position in the existing slice (0 = oldest) of the invalid schema.
	Index int
	// Err is the parse error.
	Err error
}

// Error describes which schema is invalid and why.
func (e *InvalidSchemaError) Error() string {
	if e.Index < 0 {
		return fmt.Sprintf("schema: invalid candidate schema: %v", e.Err)
	}
	return fmt.Sprintf("schema: invalid existing schema #%d: %v", e.Index+1, e.Err)
}

// Unwrap returns the parse error.
func (e *InvalidSchemaError) Unwrap() error { return e.Err }

// CheckCompatibility reports whether the candidate schema text may follow
// the existing schema texts (previously registered versions, oldest first)
// under the given level, with the Confluent Schema Registry's semantics:
//
//   - CompatBackward: the candidate, as reader, can read data written with the
//     latest existing schema.
//   - CompatForward: the latest existing schema, as reader, can read data
//     written with the candidate.
//   - CompatFull: both.
//   - The transitive levels check against every existing schema instead of
//     only the latest.
//   - CompatNone: no check.
//
// It returns nil when the candidate is compatible (always when existing is
// empty). Otherwise it returns an [*IncompatibleError] (which unwraps to
// [ErrIncompatibleSchema]) whose Schema is the candidate's full name (or
// type, for an unnamed schema) and whose Reasons hold one entry per failing
// pair of existing schema and direction, in the order of existing, BACKWARD
// before FORWARD. A reason starts with its direction and names the existing
// schema by its position, oldest first, for example:
//
//	BACKWARD: the new schema cannot read data written with existing schema #1 of 2: reader field qty is missing in writer schema and has no default
//	FORWARD: existing schema #2 of 2 cannot read data written with the new schema: reader schema int not compatible with writer schema long
//
// It returns an [*InvalidSchemaError] when the candidate or a needed
// existing schema is not valid Avro (the candidate is validated even for
// CompatNone), and an error wrapping [ErrUnknownCompatibility] for an
// unknown level.
//
// Each schema is parsed on its own, with no names known from other
// schemas: a text must define every named type it uses. Every version of a
// record has the same full name, and that is fine here.
func CheckCompatibility(level Compatibility, candidate string, existing []string) error {
	if !level.Valid() {
		return compatUnknownLevel(string(level))
	}
	cand, err := compatParse(candidate)
	if err != nil {
		return &InvalidSchemaError{Index: -1, Err: err}
	}
	if level == CompatNone || len(existing) == 0 {
		return nil
	}

	first := len(existing) - 1
	if level.transitive() {
		first = 0
	}
	var reasons []string
	for i := first; i < len(existing); i++ {
		old, err := compatParse(existing[i])
		if err != nil {
			return &InvalidSchemaError{Index: i, Err: err}
		}
		if level.backward() {
			if msg, ok := compatCanRead(cand, old); !ok {
				reasons = append(reasons, fmt.Sprintf("%s: the new schema cannot read data written with existing schema #%d of %d: %s",
					CompatBackward, i+1, len(existing), msg))
			}
		}
		if level.forward() {
			if msg, ok := compatCanRead(old, cand); !ok {
				reasons = append(reasons, fmt.Sprintf("%s: existing schema #%d of %d cannot read data written with the new schema: %s",
					CompatForward, i+1, len(existing), msg))
			}
		}
	}
	if len(reasons) > 0 {
		return &IncompatibleError{Schema: compatName(cand), Reasons: reasons}
	}
	return nil
}

// compatName is the full name of a named schema, else its type ("string",
// "array", "union" …).
func compatName(s avro.Schema) string {
	if n, ok := s.(avro.NamedSchema); ok {
		return n.FullName()
	}
	return string(s.Type())
}

// NormalizedForm parses text as an Avro schema and returns it written back
// out as compact JSON: names fully qualified, keys in a fixed order, and
// everything kept that the Parsing Canonical Form ([Schema.Canonical])
// drops: defaults, aliases, docs, sort orders, logical types and other
// properties. Two texts with the same normalized form are the same schema
// whatever their white space and key order; two that differ only in a
// field default are not (their canonical forms are equal). The embedded
// registry uses it to decide whether a schema is already registered.
//
// An invalid text gives an [*InvalidSchemaError] with Index -1.
func NormalizedForm(text string) (string, error) {
	s, err := compatParse(text)
	if err != nil {
		return "", &InvalidSchemaError{Index: -1, Err: err}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return "", &InvalidSchemaError{Index: -1, Err: fmt.Errorf("avro: cannot render schema: %w", err)}
	}
	return string(b), nil
}

// compatParse parses text as an Avro schema with a cache of its own, so
// that neither earlier parses nor later ones (of other versions of the same
// named types) can change the result. A panic inside the parser is turned
// into an error.
func compatParse(text string) (s avro.Schema, err error) {
	if strings.TrimSpace(text) == "" {
		return nil, errors.New("empty schema")
	}
	// hamba/avro takes text that is not JSON as a bare type name ("string"
	// without quotes); the Avro specification and Confluent want JSON.
	if !json.Valid([]byte(text)) {
		return nil, errors.New("schema is not valid JSON")
	}
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("avro: parser failed: %v", r)
		}
	}()
	return avro.ParseWithCache(text, "", &avro.SchemaCache{})
}

// compatCanRead reports whether data written with writer can be read with
// reader, and if not, why. It uses a fresh avro.SchemaCompatibility for
// every call: that type memoises results by canonical-form fingerprint, which
// does not include defaults, so a shared instance mixes up schemas that
// differ only in defaults.
func compatCanRead(reader, writer avro.Schema) (msg string, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			msg, ok = fmt.Sprintf("compatibility check failed: %v", r), false
		}
	}()
	if err := avro.NewSchemaCompatibility().Compatible(reader, writer); err != nil {
		return err.Error(), false
	}
	return "", true
}
