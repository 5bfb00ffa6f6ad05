package schema

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/choreokit/choreo"
	"github.com/twmb/franz-go/pkg/sr"
)

// Registry is a client of a Confluent-compatible schema registry:
// Confluent Schema Registry, Karapace, Redpanda, Apicurio (ccompat API) and
// choreo's embedded registry (package schema/registry). It speaks HTTP
// through franz-go's pkg/sr and caches what cannot change:
//
//   - schema ids by subject and schema (Register, Lookup), and
//   - schemas by id (SchemaByID), forever: a registry never reuses an id.
//
// A Registry is a SchemaSource for NewCodec. It is safe for concurrent
// use.
//
// # Errors
//
// The errors tell an outage from an answer, because the consumer
// dead-letters events on permanent errors only:
//
//   - SchemaByID of an id the registry says it does not know (HTTP 404
//     with Confluent error code 40403) fails with ErrUnknownSchema, kind
//     choreo.KindUnknownSchema: the event is poison.
//   - A registry that cannot be reached, times out, answers 5xx, 401/403,
//     or a 404 without error code 40403 (a wrong URL path, a proxy) fails
//     with a plain error, kind choreo.KindRetryable: an outage or a
//     misconfiguration must never dead-letter good events.
//   - Register of a schema the subject's compatibility level rejects
//     (HTTP 409) and CheckCompatible of an incompatible schema fail with an
//     *IncompatibleError, kind choreo.KindIncompatibleSchema.
//   - Lookup of a schema that is not registered fails with
//     ErrNotRegistered, without a kind.
//
// The *sr.ResponseError of a registry answer stays in the chain, for
// errors.As.
type Registry struct {
	cl      *sr.Client
	timeout time.Duration

	mu     sync.RWMutex
	byPtr  map[ptrKey]int  // (subject, *Schema) → id
	byText map[textKey]int // (subject, schema text) → id

	byID     atomic.Pointer[map[int]*Schema] // copy on write
	idMu     sync.Mutex                      // guards byID writes, inflight and unknown
	inflight map[int]*fetch
	unknown  map[int]unknownID
}

// unknownID remembers for a while that the registry does not know an id.
type unknownID struct {
	err   error
	until time.Time
}

// unknownTTL is how long an unknown id is answered from memory: long
// enough that a burst of poison records does not become a burst of
// registry requests, short enough that an id registered meanwhile (a
// lagging replica) is found soon.
const unknownTTL = 2 * time.Second

type ptrKey struct {
	subject string
	s       *Schema
}

type textKey struct {
	subject, text string
}

// fetch is a SchemaByID request in flight, shared by every caller that
// asks for the same id meanwhile.
type fetch struct {
	done chan struct{}
	s    *Schema
	err  error
}

// maxPtrKeys bounds the cache by *Schema, in case a program parses its
// schema anew for every event; the cache by text still serves it then.
const maxPtrKeys = 4096

// NewRegistry returns a client of the registry at urls (tried in order on
// connection errors). A URL without a scheme gets http://. No URL, or an
// empty one (an unset SCHEMA_REGISTRY_URL read with os.Getenv), is an
// error: a client without a registry would fail only at the first event.
func NewRegistry(urls []string, opts ...RegistryOption) (*Registry, error) {
	if len(urls) == 0 {
		return nil, errors.New("schema: new registry: no URL")
	}
	trimmed := make([]string, len(urls))
	for i, u := range urls {
		trimmed[i] = strings.TrimSpace(u)
		if trimmed[i] == "" {
			if len(urls) == 1 {
				return nil, errors.New("schema: new registry: empty URL")
			}
			return nil, fmt.Errorf("schema: new registry: URL %d of %d is empty", i+1, len(urls))
		}
	}
	urls = trimmed
	o := registryOptions{timeout: DefaultRegistryTimeout, userAgent: "choreo"}
	for _, opt := range opts {
		opt(&o)
	}
	var hc *http.Client
	if o.client != nil {
		c := *o.client // sr modifies the client it is given when TLS is set
		hc = &c
	} else {
		hc = &http.Client{}
	}
	if o.timeout > 0 {
		hc.Timeout = o.timeout
	}
	// Responses are read whole (sr reads every body with io.ReadAll):
	// bound them before they are read, so a registry that answers with
	// endless bytes makes an error, not an allocation. TLS is set here,
	// under the bound, rather than by sr (which would replace the
	// transport).
	base := hc.Transport
	if o.tls != nil {
		tr, ok := base.(*http.Transport)
		switch {
		case base == nil:
			tr = http.DefaultTransport.(*http.Transport).Clone()
		case !ok:
			return nil, errors.New("schema: new registry: TLS with an HTTP client whose transport is not an *http.Transport")
		default:
			tr = tr.Clone()
		}
		tr.TLSClientConfig = o.tls
		base = tr
	}
	if base == nil {
		base = http.DefaultTransport
	}
	hc.Transport = limitedTransport{rt: base, max: MaxResponseBytes}
	srOpts := []sr.ClientOpt{
		sr.URLs(append([]string(nil), urls...)...), // sr rewrites the slice in place
		sr.HTTPClient(hc),
		sr.UserAgent(o.userAgent),
	}
	if o.basicAuth != nil {
		srOpts = append(srOpts, sr.BasicAuth(o.basicAuth[0], o.basicAuth[1]))
	}
	if o.bearer != "" {
		srOpts = append(srOpts, sr.BearerToken(o.bearer))
	}
	cl, err := sr.NewClient(srOpts...)
	if err != nil {
		return nil, fmt.Errorf("schema: new registry: %w", err)
	}
	r := &Registry{
		cl:       cl,
		timeout:  o.timeout,
		byPtr:    map[ptrKey]int{},
		byText:   map[textKey]int{},
		inflight: map[int]*fetch{},
		unknown:  map[int]unknownID{},
	}
	m := map[int]*Schema{}
	r.byID.Store(&m)
	return r, nil
}

// Client returns the underlying franz-go client, for registry operations
// this type does not wrap (listing subjects, setting compatibility …).
func (r *Registry) Client() *sr.Client { return r.cl }

// cachedID returns the id of s under subject, if known.
func (r *Registry) cachedID(subject string, s *Schema) (int, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if id, ok := r.byPtr[ptrKey{subject, s}]; ok {
		return id, true
	}
	id, ok := r.byText[textKey{subject, s.text}]
	return id, ok
}

// remember caches id both ways.
func (r *Registry) remember(subject string, s *Schema, id int) {
	r.mu.Lock()
	if len(r.byPtr) < maxPtrKeys {
		r.byPtr[ptrKey{subject, s}] = id
	}
	r.byText[textKey{subject, s.text}] = id
	r.mu.Unlock()
	r.storeByID(id, s)
}

func (r *Registry) storeByID(id int, s *Schema) {
	r.idMu.Lock()
	defer r.idMu.Unlock()
	old := *r.byID.Load()
	if _, ok := old[id]; ok {
		return
	}
	m := make(map[int]*Schema, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[id] = s
	r.byID.Store(&m)
}

// Register registers s under subject (the registry returns the existing id
// if it is registered already) and returns its id. The id is cached: after
// the first call for a subject and schema, Register makes no request.
//
// A schema the subject's compatibility level rejects fails with an
// *IncompatibleError (kind choreo.KindIncompatibleSchema); one the registry
// finds invalid (HTTP 422) with an error of kind choreo.KindPermanent.
func (r *Registry) Register(ctx context.Context, subject string, s *Schema) (id int, err error) {
	if id, ok := r.cachedID(subject, s); ok {
		return id, nil
	}
	id, err = r.cl.RegisterSchema(ctx, subject, sr.Schema{Schema: s.text, Type: sr.TypeAvro}, -1, -1)
	if err != nil {
		var re *sr.ResponseError
		if errors.As(err, &re) && (re.StatusCode == http.StatusConflict || re.ErrorCode == sr.ErrIncompatibleSchema.Code) {
			return 0, &choreo.Error{Kind: choreo.KindIncompatibleSchema, Err: fmt.Errorf("schema: register %s under %q: %w",
				s.fullName, subject, &IncompatibleError{Subject: subject, Schema: s.fullName, Reasons: []string{re.Error()}})}
		}
		if errors.As(err, &re) && re.StatusCode == http.StatusUnprocessableEntity {
			// The registry rejects the schema itself: retrying cannot help.
			return 0, choreo.Permanent(fmt.Errorf("schema: register %s under %q: %w", s.fullName, subject, err))
		}
		return 0, fmt.Errorf("schema: register %s under %q: %w", s.fullName, subject, err)
	}
	r.remember(subject, s, id)
	return id, nil
}

// Lookup returns the id of s under subject without registering it: the
// production mode, where schemas are registered by a pipeline and a
// service must not add versions. A schema that is not registered under
// subject fails with ErrNotRegistered. Found ids are cached.
func (r *Registry) Lookup(ctx context.Context, subject string, s *Schema) (id int, err error) {
	if id, ok := r.cachedID(subject, s); ok {
		return id, nil
	}
	ss, err := r.cl.LookupSchema(ctx, subject, sr.Schema{Schema: s.text, Type: sr.TypeAvro})
	if err != nil {
		var re *sr.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound &&
			(re.ErrorCode == sr.ErrSubjectNotFound.Code || re.ErrorCode == sr.ErrSchemaNotFound.Code) {
			return 0, fmt.Errorf("schema: lookup %s under %q: %w: %w", s.fullName, subject, ErrNotRegistered, err)
		}
		return 0, fmt.Errorf("schema: lookup %s under %q: %w", s.fullName, subject, err)
	}
	r.remember(subject, s, ss.ID)
	return ss.ID, nil
}

// SchemaByID returns the schema with the given id. Schemas are cached
// forever (ids are immutable); concurrent calls for an id that is not
// cached share one request. A caller whose ctx ends stops waiting, but the
// request goes on, within the registry timeout, for the others.
//
// An id the registry does not know fails with ErrUnknownSchema (kind
// choreo.KindUnknownSchema); a schema that is not Avro, or that does not
// parse, with ErrSchemaMismatch (kind choreo.KindSchemaMismatch); an
// unreachable or failing registry with a plain, retryable error. Failures
// are not cached, except that an unknown id is answered from memory for
// two seconds, so that a burst of poison records does not become a burst
// of requests.
func (r *Registry) SchemaByID(ctx context.Context, id int) (*Schema, error) {
	if s := (*r.byID.Load())[id]; s != nil {
		return s, nil
	}
	r.idMu.Lock()
	if s := (*r.byID.Load())[id]; s != nil {
		r.idMu.Unlock()
		return s, nil
	}
	if u, ok := r.unknown[id]; ok {
		if time.Now().Before(u.until) {
			r.idMu.Unlock()
			return nil, u.err
		}
		delete(r.unknown, id)
	}
	f := r.inflight[id]
	if f == nil {
		f = &fetch{done: make(chan struct{})}
		r.inflight[id] = f
		go r.fetch(context.WithoutCancel(ctx), id, f)
	}
	r.idMu.Unlock()
	select {
	case <-f.done:
		return f.s, f.err
	case <-ctx.Done():
		return nil, fmt.Errorf("schema: get schema id %d: %w", id, context.Cause(ctx))
	}
}

func (r *Registry) fetch(ctx context.Context, id int, f *fetch) {
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	f.s, f.err = r.get(ctx, id)
	r.idMu.Lock()
	delete(r.inflight, id)
	if errors.Is(f.err, ErrUnknownSchema) {
		r.unknown[id] = unknownID{err: f.err, until: time.Now().Add(unknownTTL)}
	}
	r.idMu.Unlock()
	if f.err == nil {
		r.storeByID(id, f.s)
	}
	close(f.done)
}

func (r *Registry) get(ctx context.Context, id int) (*Schema, error) {
	got, err := r.cl.SchemaByID(ctx, id)
	if err != nil {
		var re *sr.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound && re.ErrorCode == sr.ErrSchemaNotFound.Code {
			return nil, kindError(choreo.KindUnknownSchema, ErrUnknownSchema, "schema: get schema id %d: %w", id, err)
		}
		return nil, fmt.Errorf("schema: get schema id %d: registry unavailable: %w", id, err)
	}
	if got.Type != sr.TypeAvro {
		return nil, kindError(choreo.KindSchemaMismatch, ErrSchemaMismatch, "schema: schema id %d is a %s schema, not Avro", id, got.Type)
	}
	if len(got.References) > 0 {
		return nil, kindError(choreo.KindSchemaMismatch, ErrSchemaMismatch, "schema: schema id %d has references, which choreo does not support", id)
	}
	s, err := Parse(got.Schema)
	if err != nil {
		return nil, kindError(choreo.KindSchemaMismatch, ErrSchemaMismatch, "schema: schema id %d: %w", id, err)
	}
	return s, nil
}

// CheckCompatible asks the registry whether s may be registered under
// subject, by the subject's compatibility level, against all its versions
// (falling back to the latest version on registries without that
// endpoint). It returns nil if so, or if the subject does not exist yet,
// and otherwise an *IncompatibleError listing the registry's reasons
// (kind choreo.KindIncompatibleSchema).
func (r *Registry) CheckCompatible(ctx context.Context, subject string, s *Schema) error {
	ctx = sr.WithParams(ctx, sr.Verbose)
	schema := sr.Schema{Schema: s.text, Type: sr.TypeAvro}
	res, err := r.cl.CheckCompatibility(ctx, subject, -2, schema)
	var re *sr.ResponseError
	if err != nil && errors.As(err, &re) && (re.StatusCode == http.StatusMethodNotAllowed ||
		re.StatusCode == http.StatusNotFound && re.ErrorCode != sr.ErrSubjectNotFound.Code) {
		res, err = r.cl.CheckCompatibility(ctx, subject, -1, schema)
	}
	if err != nil {
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound &&
			(re.ErrorCode == sr.ErrSubjectNotFound.Code || re.ErrorCode == sr.ErrVersionNotFound.Code) {
			return nil // nothing registered to be incompatible with
		}
		return fmt.Errorf("schema: check %s against %q: %w", s.fullName, subject, err)
	}
	if res.Is {
		return nil
	}
	reasons := res.Messages
	if len(reasons) == 0 {
		reasons = []string{"the registry gave no reason"}
	}
	return &choreo.Error{Kind: choreo.KindIncompatibleSchema, Err: fmt.Errorf("schema: check: %w",
		&IncompatibleError{Subject: subject, Schema: s.fullName, Reasons: reasons})}
}

// MaxResponseBytes bounds the body of a registry response. Schemas are
// far smaller; the embedded registry refuses requests over 8 MiB.
const MaxResponseBytes = 16 << 20

// limitedTransport makes a response body over max an error, before more
// than max bytes of it are read.
type limitedTransport struct {
	rt  http.RoundTripper
	max int64
}

// RoundTrip implements http.RoundTripper.
func (t limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.max {
		resp.Body.Close()
		return nil, fmt.Errorf("schema: registry response of %d bytes is over the limit of %d", resp.ContentLength, t.max)
	}
	resp.Body = &limitedBody{rc: resp.Body, left: t.max}
	return resp, nil
}

// limitedBody reads at most left bytes, and fails after.
type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the limit from a longer one.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, fmt.Errorf("schema: registry response over the limit of %d bytes", MaxResponseBytes)
		}
		if err == nil {
			err = io.EOF
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
