package schema_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/schema"
)

// countingServer serves h and counts requests by "METHOD path".
type countingServer struct {
	*httptest.Server
	mu     sync.Mutex
	counts map[string]int
}

func newCountingServer(t *testing.T, h http.Handler) *countingServer {
	cs := &countingServer{counts: map[string]int{}}
	cs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.mu.Lock()
		cs.counts[r.Method+" "+r.URL.Path]++
		cs.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(cs.Close)
	return cs
}

func (cs *countingServer) count(key string) int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.counts[key]
}

// proxyTo forwards requests to the registry at url.
func proxyTo(url string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, url+r.URL.RequestURI(), r.Body)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			w.Write(buf[:n])
			if err != nil {
				return
			}
		}
	})
}

func TestRegistryRoundTrip(t *testing.T) {
	ctx := context.Background()
	cs := newCountingServer(t, proxyTo(newTestRegistryURL(t)))
	producerReg, err := schema.NewRegistry([]string{cs.URL})
	if err != nil {
		t.Fatal(err)
	}
	v1 := mustParse(t, orderPlacedV1)
	subject := schema.TopicNameStrategy("orders", v1)

	id, err := producerReg.Register(ctx, subject, v1)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	for range 3 {
		again, err := producerReg.Register(ctx, subject, v1)
		if err != nil || again != id {
			t.Fatalf("Register again = %d, %v; want %d", again, err, id)
		}
	}
	// An equal schema parsed separately is cached by its text.
	if again, err := producerReg.Register(ctx, subject, mustParse(t, orderPlacedV1)); err != nil || again != id {
		t.Fatalf("Register of a copy = %d, %v; want %d", again, err, id)
	}
	if n := cs.count("POST /subjects/" + subject + "/versions"); n != 1 {
		t.Errorf("%d register requests; want 1 (cached)", n)
	}
	if got, err := producerReg.Lookup(ctx, subject, v1); err != nil || got != id {
		t.Errorf("Lookup = %d, %v; want %d", got, err, id)
	}
	// Ids are cached both ways: the producer knows its own schema by id.
	if s, err := producerReg.SchemaByID(ctx, id); err != nil || s != v1 {
		t.Errorf("SchemaByID on the producer = %v, %v; want its own schema", s, err)
	}

	producer := schema.NewCodec(producerReg)
	data, err := producer.Encode(id, v1, sampleOrder())
	if err != nil {
		t.Fatal(err)
	}

	// A consumer with a registry client of its own fetches the writer
	// schema once.
	consumerReg, err := schema.NewRegistry([]string{cs.URL})
	if err != nil {
		t.Fatal(err)
	}
	consumer := schema.NewCodec(consumerReg)
	reader := mustParse(t, orderPlacedV1)
	for range 5 {
		var got orderPlaced
		wid, err := consumer.Decode(ctx, data, reader, &got)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if wid != id || got.OrderID != "ord-7f3a9c" || !got.PlacedAt.Equal(sampleOrder().PlacedAt) {
			t.Fatalf("Decode = %d, %+v", wid, got)
		}
	}
	if n := cs.count("GET /schemas/ids/" + strconv.Itoa(id)); n != 1 {
		t.Errorf("%d schema-by-id requests; want 1 (cached)", n)
	}
}

func TestLookupNotRegistered(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t)
	v1, v2 := mustParse(t, orderPlacedV1), mustParse(t, orderPlacedV2)
	_, err := reg.Lookup(ctx, "orders-value", v1)
	if !errors.Is(err, schema.ErrNotRegistered) {
		t.Fatalf("Lookup in a missing subject: %v; want ErrNotRegistered", err)
	}
	if _, err := reg.Register(ctx, "orders-value", v1); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Lookup(ctx, "orders-value", v2); !errors.Is(err, schema.ErrNotRegistered) {
		t.Fatalf("Lookup of an unregistered version: %v; want ErrNotRegistered", err)
	}
}

func TestSchemaByIDUnknown(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t)
	_, err := reg.SchemaByID(ctx, 4242)
	wantKind(t, err, choreo.KindUnknownSchema, schema.ErrUnknownSchema)

	codec := schema.NewCodec(reg)
	var v map[string]any
	_, err = codec.Decode(ctx, wire(4242, []byte{0}), nil, &v)
	wantKind(t, err, choreo.KindUnknownSchema, schema.ErrUnknownSchema)
}

// An outage must never look like an unknown schema: the consumer would
// dead-letter good events.
func TestRegistryOutageIsRetryable(t *testing.T) {
	ctx := context.Background()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	handlers := map[string]string{
		"503":                 "",
		"500 with 50001 code": `{"error_code":50001,"message":"Error in backend datastore"}`,
		"404 without code":    "404 page not found",
		"401":                 `{"error_code":40101,"message":"unauthorized"}`,
	}
	status := map[string]int{"503": 503, "500 with 50001 code": 500, "404 without code": 404, "401": 401}
	urls := map[string]string{"closed": closedURL}
	for name, body := range handlers {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(status[name])
			w.Write([]byte(body))
		}))
		t.Cleanup(srv.Close)
		urls[name] = srv.URL
	}
	for name, url := range urls {
		t.Run(name, func(t *testing.T) {
			reg, err := schema.NewRegistry([]string{url}, schema.Timeout(2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			_, err = reg.SchemaByID(ctx, 1)
			if err == nil {
				t.Fatal("SchemaByID succeeded")
			}
			if k := choreo.KindOf(err); k != choreo.KindRetryable || errors.Is(err, schema.ErrUnknownSchema) {
				t.Fatalf("KindOf(%v) = %s; want retryable, not unknown schema", err, k)
			}
			var v map[string]any
			_, err = schema.NewCodec(reg).Decode(ctx, wire(1, []byte{0}), nil, &v)
			if k := choreo.KindOf(err); k != choreo.KindRetryable {
				t.Fatalf("Decode during outage: KindOf(%v) = %s; want retryable", err, k)
			}
		})
	}
}

// The registry recovers: a failure is not cached.
func TestRegistryRecoversAfterOutage(t *testing.T) {
	ctx := context.Background()
	upstream := newTestRegistryURL(t)
	var down atomic.Bool
	down.Store(true)
	proxy := proxyTo(upstream)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	admin, _ := schema.NewRegistry([]string{upstream})
	s := mustParse(t, orderPlacedV1)
	id, err := admin.Register(ctx, "orders-value", s)
	if err != nil {
		t.Fatal(err)
	}
	reg, _ := schema.NewRegistry([]string{srv.URL})
	if _, err := reg.SchemaByID(ctx, id); choreo.KindOf(err) != choreo.KindRetryable {
		t.Fatalf("while down: %v; want a retryable error", err)
	}
	down.Store(false)
	if got, err := reg.SchemaByID(ctx, id); err != nil || !got.Equal(s) {
		t.Fatalf("after recovery: %v, %v", got, err)
	}
}

func TestRegistryAuth(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
		w.Write([]byte(`{"schema":"\"string\""}`))
	}))
	t.Cleanup(srv.Close)

	reg, err := schema.NewRegistry([]string{srv.URL}, schema.BasicAuth("svc-orders", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.SchemaByID(ctx, 1); err != nil {
		t.Fatal(err)
	}
	reg, _ = schema.NewRegistry([]string{srv.URL}, schema.BearerToken("tok-123"), schema.UserAgent("test-agent"))
	if _, err := reg.SchemaByID(ctx, 1); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"Basic " + base64.StdEncoding.EncodeToString([]byte("svc-orders:s3cret")),
		"Bearer tok-123",
	}
	mu.Lock()
	defer mu.Unlock()
	if len(auth) != 2 || auth[0] != want[0] || auth[1] != want[1] {
		t.Errorf("Authorization headers %q; want %q", auth, want)
	}
}

// Concurrent look-ups of one id share one request, and a waiter whose
// context ends stops waiting.
func TestSchemaByIDSingleFlight(t *testing.T) {
	var requests atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		<-release
		w.Write([]byte(`{"schema":"\"long\""}`))
	}))
	t.Cleanup(srv.Close)
	reg, _ := schema.NewRegistry([]string{srv.URL})

	ctx, cancel := context.WithCancel(context.Background())
	canceled := make(chan error)
	go func() {
		_, err := reg.SchemaByID(ctx, 9)
		canceled <- err
	}()
	var wg sync.WaitGroup
	results := make(chan *schema.Schema, 32)
	for range 32 {
		wg.Go(func() {
			s, err := reg.SchemaByID(context.Background(), 9)
			if err != nil {
				t.Error(err)
			}
			results <- s
		})
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-canceled; !errors.Is(err, context.Canceled) || choreo.KindOf(err) != choreo.KindRetryable {
		t.Errorf("canceled waiter: %v; want context.Canceled, retryable", err)
	}
	close(release)
	wg.Wait()
	close(results)
	var first *schema.Schema
	for s := range results {
		if first == nil {
			first = s
		}
		if s != first {
			t.Fatalf("waiters got different *Schema values")
		}
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests; want 1", n)
	}
}

func TestCheckCompatible(t *testing.T) {
	ctx := context.Background()
	var verbose atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("verbose") == "true" {
			verbose.Store(true)
		}
		switch {
		case strings.Contains(r.URL.Path, "/subjects/new-value/"):
			w.WriteHeader(404)
			w.Write([]byte(`{"error_code":40401,"message":"Subject 'new-value' not found."}`))
		case strings.Contains(r.URL.Path, "/subjects/ok-value/"):
			w.Write([]byte(`{"is_compatible":true}`))
		default:
			w.Write([]byte(`{"is_compatible":false,"messages":["READER_FIELD_MISSING_DEFAULT_VALUE: coupon"]}`))
		}
	}))
	t.Cleanup(srv.Close)
	reg, _ := schema.NewRegistry([]string{srv.URL})
	s := mustParse(t, orderPlacedNoDefault)

	if err := reg.CheckCompatible(ctx, "new-value", s); err != nil {
		t.Errorf("new subject: %v; want nil", err)
	}
	if err := reg.CheckCompatible(ctx, "ok-value", s); err != nil {
		t.Errorf("compatible: %v; want nil", err)
	}
	err := reg.CheckCompatible(ctx, "orders-value", s)
	wantKind(t, err, choreo.KindIncompatibleSchema, schema.ErrIncompatibleSchema)
	var ie *schema.IncompatibleError
	if !errors.As(err, &ie) || ie.Subject != "orders-value" || len(ie.Reasons) != 1 || !strings.Contains(err.Error(), "coupon") {
		t.Errorf("error %v; want an *IncompatibleError with the registry's reason", err)
	}
	if !verbose.Load() {
		t.Errorf("the check did not ask for verbose reasons")
	}
}

func TestRegisterIncompatible(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"error_code":409,"message":"Schema being registered is incompatible with an earlier schema"}`))
	}))
	t.Cleanup(srv.Close)
	reg, _ := schema.NewRegistry([]string{srv.URL})
	_, err := reg.Register(ctx, "orders-value", mustParse(t, orderPlacedV1))
	wantKind(t, err, choreo.KindIncompatibleSchema, schema.ErrIncompatibleSchema)
}

func TestNewRegistryNeedsURL(t *testing.T) {
	for _, tc := range []struct {
		name string
		urls []string
		want string
	}{
		{"nil", nil, "no URL"},
		{"empty", []string{}, "no URL"},
		{"unset variable", []string{""}, "empty URL"},
		{"blank", []string{"  "}, "empty URL"},
		{"one of two empty", []string{"http://127.0.0.1:8081", ""}, "URL 2 of 2 is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg, err := schema.NewRegistry(tc.urls)
			if err == nil {
				t.Fatalf("NewRegistry(%q) = %v, nil; want an error", tc.urls, reg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewRegistry(%q): %v; want it to say %q", tc.urls, err, tc.want)
			}
		})
	}
	if _, err := schema.NewRegistry([]string{" http://127.0.0.1:8081 "}); err != nil {
		t.Errorf("NewRegistry with spaces around the URL: %v; want nil", err)
	}
}

// Against a registry that really checks: the embedded one, BACKWARD.
func TestCompatibilityWithEmbeddedRegistry(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t)
	v1, v2, bad := mustParse(t, orderPlacedV1), mustParse(t, orderPlacedV2), mustParse(t, orderPlacedNoDefault)
	if err := reg.CheckCompatible(ctx, "orders-value", bad); err != nil {
		t.Errorf("check against a new subject: %v; want nil", err)
	}
	id1, err := reg.Register(ctx, "orders-value", v1)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.CheckCompatible(ctx, "orders-value", v2); err != nil {
		t.Errorf("v2 (a defaulted field more): %v; want compatible", err)
	}
	err = reg.CheckCompatible(ctx, "orders-value", bad)
	wantKind(t, err, choreo.KindIncompatibleSchema, schema.ErrIncompatibleSchema)
	var ie *schema.IncompatibleError
	if !errors.As(err, &ie) || len(ie.Reasons) == 0 {
		t.Errorf("error %v; want an *IncompatibleError with reasons", err)
	}
	_, err = reg.Register(ctx, "orders-value", bad)
	wantKind(t, err, choreo.KindIncompatibleSchema, schema.ErrIncompatibleSchema)
	id2, err := reg.Register(ctx, "orders-value", v2)
	if err != nil || id2 == id1 {
		t.Fatalf("Register v2 = %d, %v; want a new id", id2, err)
	}
}

func TestRegisterInvalidIsPermanent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnprocessableEntity)
		w.Write([]byte(`{"error_code":42201,"message":"Invalid schema"}`))
	}))
	t.Cleanup(srv.Close)
	reg, _ := schema.NewRegistry([]string{srv.URL})
	_, err := reg.Register(context.Background(), "orders-value", mustParse(t, orderPlacedV1))
	if !choreo.IsPermanent(err) {
		t.Errorf("Register of a schema the registry calls invalid: %v; want a permanent error", err)
	}
}

// A burst of records with an unknown id does not become a burst of
// registry requests.
func TestUnknownIDRemembered(t *testing.T) {
	ctx := context.Background()
	cs := newCountingServer(t, proxyTo(newTestRegistryURL(t)))
	reg, _ := schema.NewRegistry([]string{cs.URL})
	for range 20 {
		_, err := reg.SchemaByID(ctx, 777)
		wantKind(t, err, choreo.KindUnknownSchema, schema.ErrUnknownSchema)
	}
	if n := cs.count("GET /schemas/ids/777"); n != 1 {
		t.Errorf("%d requests for an unknown id; want 1", n)
	}
}
