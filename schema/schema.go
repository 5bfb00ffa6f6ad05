package schema

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"

	"github.com/hamba/avro/v2"
)

// Schema is a parsed Avro schema. It is immutable and safe for concurrent
// use; parse each schema once (at start-up, or into a package variable
// with MustParse) and share the *Schema.
//
// Two *Schema values with the same Canonical form are the same schema to
// the codec and the registry client.
type Schema struct {
	text      string
	canonical string
	fullName  string
	fp        [32]byte // of the canonical form
	tfp       [32]byte // of the text: tells apart schemas whose defaults differ
	avro      avro.Schema
	prog      *node

	// hamba's encoders of this schema by codec and Go type, copy on write.
	encs  atomic.Pointer[map[encKey]encoder]
	encMu sync.Mutex
}

// encoder is how values of one Go type are encoded with a schema.
type encoder struct {
	enc       avro.ValEncoder
	checkInts bool // see intRisk
}

type encKey struct {
	codec *Codec
	rtype uintptr
}

// Parse parses the Avro schema in text (JSON).
//
// Each call parses with a fresh name cache, so two versions of one record
// (same full name, different fields) parse to two schemas of their own.
// hamba/avro's avro.Parse would instead resolve the second version's named
// types to the first's, from its process-wide cache.
func Parse(text string) (*Schema, error) {
	as, err := avro.ParseWithCache(text, "", &avro.SchemaCache{})
	if err != nil {
		return nil, fmt.Errorf("schema: parse: %w", err)
	}
	prog, err := compile(as)
	if err != nil {
		return nil, fmt.Errorf("schema: parse: %w", err)
	}
	s := &Schema{
		text:      text,
		canonical: as.String(),
		fp:        as.Fingerprint(),
		tfp:       sha256.Sum256([]byte(text)),
		avro:      as,
		prog:      prog,
	}
	if named, ok := as.(avro.NamedSchema); ok {
		s.fullName = named.FullName()
	} else {
		s.fullName = string(as.Type())
	}
	return s, nil
}

// MustParse is like Parse but panics on error. It is meant for package
// variables initialised from embedded schema files.
func MustParse(text string) *Schema {
	s, err := Parse(text)
	if err != nil {
		panic(err)
	}
	return s
}

// ParseFile parses the schema in the file name of fsys; an embed.FS works:
//
//	//go:embed order_placed.avsc
//	var schemas embed.FS
//	s, err := schema.ParseFile(schemas, "order_placed.avsc")
func ParseFile(fsys fs.FS, name string) (*Schema, error) {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	s, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("schema: parse %s: %w", name, err)
	}
	return s, nil
}

// Text returns the schema as it was parsed. It is what Registry.Register
// sends to the registry, so doc strings and defaults are kept.
func (s *Schema) Text() string { return s.text }

// String returns the schema's text.
func (s *Schema) String() string { return s.text }

// Canonical returns the schema's canonical form: hamba/avro's rendering of
// the Avro Parsing Canonical Form, which, unlike the specification, keeps
// logicalType attributes (so long and timestamp-millis differ). Field
// defaults, doc strings and aliases are not part of it.
func (s *Schema) Canonical() string { return s.canonical }

// FullName returns the Avro full name of a named schema (record, enum,
// fixed), such as "com.acme.orders.OrderPlaced": the value of the ce_type
// header of events of this schema. For an unnamed schema it returns the
// type name ("string", "array", "union" …).
func (s *Schema) FullName() string { return s.fullName }

// Fingerprint returns the SHA-256 of the canonical form.
func (s *Schema) Fingerprint() [32]byte { return s.fp }

// Equal reports whether s and o have the same canonical form.
func (s *Schema) Equal(o *Schema) bool {
	if s == o {
		return true
	}
	return s != nil && o != nil && s.fp == o.fp
}
