// Package registry is an embedded schema registry: an [http.Handler] that
// speaks the part of the Confluent Schema Registry REST API that
// choreo, franz-go's pkg/sr client and the usual serializers use, for Avro
// schemas.
//
// It is what `choreo dev` serves next to the embedded broker, so that
// separate service processes share one registry, and what tests use when
// they need a registry that really checks compatibility (franz-go's srfake
// answers every compatibility check with "compatible").
//
//	srv, err := registry.New(registry.WithFile("registry.json"))
//	if err != nil { … }
//	http.ListenAndServe("127.0.0.1:8081", srv)
//
// # What it serves
//
//	GET    /                                        {}
//	GET    /schemas/types                           ["AVRO"]
//	GET    /schemas                                 every subject version (subjectPrefix, deleted, latestOnly)
//	GET    /schemas/ids/{id}                        the schema (fetchMaxId)
//	GET    /schemas/ids/{id}/schema                 the schema text alone
//	GET    /schemas/ids/{id}/subjects               subjects using it (deleted)
//	GET    /schemas/ids/{id}/versions               subject versions using it (deleted)
//	GET    /subjects                                subjects (subjectPrefix, deleted, deletedOnly)
//	POST   /subjects/{subject}                      look a schema up under a subject (deleted)
//	DELETE /subjects/{subject}                      delete a subject (permanent)
//	GET    /subjects/{subject}/versions             version numbers (deleted, deletedOnly)
//	POST   /subjects/{subject}/versions             register a schema
//	GET    /subjects/{subject}/versions/{v}         one version; v is a number, -1 or "latest" (deleted)
//	GET    /subjects/{subject}/versions/{v}/schema  its schema text alone
//	GET    /subjects/{subject}/versions/{v}/referencedby  always [] (references are not supported)
//	DELETE /subjects/{subject}/versions/{v}         delete a version (permanent)
//	POST   /compatibility/subjects/{subject}/versions      check against the subject, as registering would (verbose)
//	POST   /compatibility/subjects/{subject}/versions/{v}  check against one version (verbose)
//	GET, PUT, DELETE /config                        global compatibility level
//	GET, PUT, DELETE /config/{subject}              subject compatibility level (defaultToGlobal)
//	GET, PUT /mode, GET, PUT, DELETE /mode/{subject}   always READWRITE
//	GET    /contexts                                ["."]
//
// Responses have the content type application/vnd.schemaregistry.v1+json.
// Errors have Confluent's shape, {"error_code": 40401, "message": "…"}, and
// codes: 40401 subject not found, 40402 version not found, 40403 schema not
// found, 40404/40405 subject (not) soft-deleted, 40406/40407 version (not)
// soft-deleted, 40408 no subject-level compatibility, 409 incompatible
// schema (HTTP 409), 42201 invalid schema or schema type, 42202 invalid
// version, 42203 invalid compatibility level, 42204 invalid mode, 42205
// operation not permitted, 42208 invalid subject, 42209 request too large
// (all HTTP 422), 400 malformed JSON body (HTTP 400), 422 a body of the
// wrong shape (HTTP 422), 404 and 405 for unknown paths and methods, and
// 50001 for a failure to save the state (HTTP 500).
//
// # Semantics
//
// Registering checks the candidate with [schema.CheckCompatibility] against
// the subject's live (not soft-deleted) versions, at the subject's level if
// one is set, else the global level (BACKWARD unless [WithCompatibility] or
// PUT /config says otherwise). An incompatible schema is refused with HTTP
// 409. Registering a schema that is already a live version of the subject
// returns that version; a schema already registered under another subject
// gets the same global id, as in Confluent. Two texts are the same schema
// when they parse to the same Avro schema, defaults, docs, aliases and
// properties included; white space and key order do not matter.
//
// Soft deletion hides versions but keeps their numbers, which are never
// reused; a permanent delete (permanent=true) must follow a soft one.
//
// # Differences from Confluent
//
//   - Only AVRO schemas. Other schema types are refused with 42201 (what
//     Confluent answers for a type it has no provider for).
//   - No schema references, metadata or rule sets: a request that carries
//     any is refused with 42201 rather than silently dropping them. Every
//     schema text must define the named types it uses.
//   - No contexts other than the default one, and the mode is always
//     READWRITE: there is no IMPORT mode, so a registration may name an id
//     or version only if it is the one the schema gets anyway (else 42205).
//   - Schema ids are never forgotten: GET /schemas/ids/{id} keeps answering
//     after every version that used the id was permanently deleted, so that
//     records written with it stay decodable.
//   - An incompatible registration answers error_code 409, as Confluent
//     did before 7.x and as franz-go's sr maps it, not the newer 40901.
//   - The normalize parameter is accepted and has no effect: schemas are
//     always compared in normalized form.
//   - Lenient spellings: request members match case-insensitively (Go's
//     encoding/json: "Schema" works as "schema"), and so do the attribute
//     names inside an Avro schema that hamba/avro reads ("Name" for
//     "name"). Confluent rejects both.
//
// # Persistence
//
// Without [WithFile] the state lives in memory. With it, the state
// (schemas, subjects, versions, compatibility levels) is loaded by [New]
// and written back after every change, as indented JSON, to a temporary
// file that is then renamed over the old one, so a crash leaves either the
// old or the new state. A change whose save fails is not applied, and the
// request fails with 50001. One Server at a time may use a file.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"

	"github.com/choreokit/choreo/schema"
)

// ContentType is the media type of every response body, and the one that
// Confluent clients send.
const ContentType = "application/vnd.schemaregistry.v1+json"

// MaxRequestBytes bounds a request body. A larger body is refused with
// error code 42209 (schema too large).
const MaxRequestBytes = 8 << 20

// Server is an embedded schema registry. It implements [http.Handler]; all
// its methods are safe for concurrent use. Create one with [New].
type Server struct {
	defCompat schema.Compatibility
	file      string
	log       *slog.Logger
	mux       *http.ServeMux

	mu sync.RWMutex
	st *state // replaced, never mutated, under mu
}

// Option configures a [Server].
type Option func(*Server)

// WithCompatibility sets the global compatibility level that applies until
// PUT /config changes it, and again after DELETE /config. The default is
// [schema.CompatBackward], as in Confluent. [New] fails on an unknown
// level.
func WithCompatibility(level schema.Compatibility) Option {
	return func(s *Server) { s.defCompat = level }
}

// WithFile makes the registry persistent: [New] loads its state from the
// JSON file at path (creating the file if it does not exist, so that a bad
// path fails at once), and every change is saved there before it is
// acknowledged. The directory must exist.
func WithFile(path string) Option {
	return func(s *Server) { s.file = path }
}

// WithLogger sets where the server logs failures it answers with a 5xx
// status (a state file that cannot be written, a recovered panic). The
// default is [slog.Default].
func WithLogger(l *slog.Logger) Option {
	return func(s *Server) { s.log = l }
}

// New returns a registry configured by opts. It fails when an option is
// invalid or, with [WithFile], when the state file cannot be read, parsed
// or created.
func New(opts ...Option) (*Server, error) {
	s := &Server{defCompat: schema.CompatBackward, log: slog.Default(), st: newState()}
	for _, o := range opts {
		o(s)
	}
	c, err := schema.ParseCompatibility(string(s.defCompat))
	if err != nil {
		return nil, fmt.Errorf("registry: default compatibility: %w", err)
	}
	s.defCompat = c
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.file != "" {
		st, exists, err := loadState(s.file)
		if err != nil {
			return nil, err
		}
		if !exists {
			if err := saveState(s.file, st); err != nil {
				return nil, err
			}
		}
		s.st = st
	}
	s.routes()
	return s, nil
}

// ServeHTTP answers one registry API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rw := &recordingWriter{ResponseWriter: w}
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		if p == http.ErrAbortHandler {
			panic(p)
		}
		s.log.Error("schema registry: panic serving request", "method", r.Method, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
		if !rw.wrote {
			writeError(rw, errInternal(fmt.Errorf("internal error: %v", p)))
		}
	}()
	s.mux.ServeHTTP(rw, r)
}

// recordingWriter remembers whether the response was started, so that a
// recovered panic is answered only if nothing was sent yet.
type recordingWriter struct {
	http.ResponseWriter
	wrote bool
}

// WriteHeader notes that a response was started.
func (w *recordingWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

// Write notes that a response was started.
func (w *recordingWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// snapshot returns the current state for reading. The state it returns is
// never mutated.
func (s *Server) snapshot() *state {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st
}

// update applies fn to a copy of the state and, if fn reports a change and
// the copy could be saved, makes the copy current. Updates are serialized.
func (s *Server) update(fn func(st *state) (changed bool, e *apiError)) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.st.clone()
	changed, e := fn(next)
	if e != nil || !changed {
		return e
	}
	if s.file != "" {
		if err := saveState(s.file, next); err != nil {
			s.log.Error("schema registry: cannot save state; change not applied", "file", s.file, "error", err)
			return errInternal(err)
		}
	}
	s.st = next
	return nil
}

// level returns the compatibility level that applies to subject name.
func (s *Server) level(st *state, name string) schema.Compatibility {
	if sub := st.subjects[name]; sub != nil && sub.compat != "" {
		return sub.compat
	}
	return s.global(st)
}

// global returns the global compatibility level.
func (s *Server) global(st *state) schema.Compatibility {
	if st.compat != "" {
		return st.compat
	}
	return s.defCompat
}

// apiError is an error response in Confluent's shape.
type apiError struct {
	status  int    // HTTP status
	Code    int    `json:"error_code"`
	Message string `json:"message"`
}

// Error returns the code and message.
func (e *apiError) Error() string { return fmt.Sprintf("%d: %s", e.Code, e.Message) }

func newAPIError(status, code int, format string, args ...any) *apiError {
	return &apiError{status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Confluent's error codes, as used here.
const (
	codeSubjectNotFound          = 40401
	codeVersionNotFound          = 40402
	codeSchemaNotFound           = 40403
	codeSubjectSoftDeleted       = 40404
	codeSubjectNotSoftDeleted    = 40405
	codeVersionSoftDeleted       = 40406
	codeVersionNotSoftDeleted    = 40407
	codeSubjectCompatNotSet      = 40408
	codeIncompatible             = 409
	codeInvalidSchema            = 42201
	codeInvalidVersion           = 42202
	codeInvalidCompatibility     = 42203
	codeInvalidMode              = 42204
	codeOperationNotPermitted    = 42205
	codeInvalidSubject           = 42208
	codeSchemaTooLarge           = 42209
	codeStoreError               = 50001
	codeMalformedJSON            = 400
	codeUnprocessable            = 422
	codeNotFound                 = 404
	codeMethodNotAllowed         = 405
	statusUnprocessable          = http.StatusUnprocessableEntity
	messageInvalidVersionFormat  = "The specified version '%s' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
	messageInvalidCompatibility  = "Invalid compatibility level %q. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive"
	messageSubjectNotFoundFormat = "Subject '%s' not found."
)

func errSubjectNotFound(name string) *apiError {
	return newAPIError(http.StatusNotFound, codeSubjectNotFound, messageSubjectNotFoundFormat, name)
}

func errVersionNotFound(v string) *apiError {
	return newAPIError(http.StatusNotFound, codeVersionNotFound, "Version %s not found.", v)
}

func errSchemaNotFound(format string, args ...any) *apiError {
	return newAPIError(http.StatusNotFound, codeSchemaNotFound, format, args...)
}

func errInvalidSchema(format string, args ...any) *apiError {
	return newAPIError(statusUnprocessable, codeInvalidSchema, format, args...)
}

func errInternal(err error) *apiError {
	return newAPIError(http.StatusInternalServerError, codeStoreError, "Error in the backend data store: %v", err)
}

// writeJSON sends v as the response body with the registry content type.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own response types are marshalled; this does not happen.
		b, _ = json.Marshal(errInternal(err))
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, e)
}

// errorsAs is errors.As with the target made for it.
func errorsAs[T error](err error) (T, bool) {
	var t T
	ok := errors.As(err, &t)
	return t, ok
}
