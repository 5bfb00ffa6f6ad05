package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/choreokit/choreo/schema"
)

// Versions of one record, shop.Order, with the same full name throughout.
const (
	orderV1 = `{"type":"record","name":"Order","namespace":"shop","fields":[
		{"name":"id","type":"string"}]}`
	orderV2 = `{"type":"record","name":"Order","namespace":"shop","fields":[
		{"name":"id","type":"string"},
		{"name":"qty","type":"int","default":0}]}`
	orderV3NoDefault = `{"type":"record","name":"Order","namespace":"shop","fields":[
		{"name":"id","type":"string"},
		{"name":"qty","type":"int"}]}`
	paymentV1 = `{"type":"record","name":"Payment","namespace":"shop","fields":[
		{"name":"amount","type":"long"}]}`
)

// start serves a new registry over HTTP and returns it with a franz-go
// client pointed at it.
func start(t *testing.T, opts ...Option) (*Server, *httptest.Server, *sr.Client) {
	t.Helper()
	srv, err := New(opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	cl, err := sr.NewClient(sr.URLs(ts.URL))
	if err != nil {
		t.Fatalf("sr.NewClient: %v", err)
	}
	return srv, ts, cl
}

// response is a raw HTTP answer.
type response struct {
	status int
	ctype  string
	header http.Header
	body   []byte
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// call sends one request with an optional body and returns the answer.
func call(t *testing.T, ts *httptest.Server, method, path, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ContentType)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), header: resp.Header, body: b}
}

// wantError checks that r is an error of the registry's shape, with the
// given status and code.
func (r response) wantError(t *testing.T, status, code int) string {
	t.Helper()
	if r.status != status {
		t.Errorf("status %d; want %d (body %s)", r.status, status, r.body)
	}
	if r.ctype != ContentType {
		t.Errorf("content type %q; want %q", r.ctype, ContentType)
	}
	var e struct {
		Code    *int    `json:"error_code"`
		Message *string `json:"message"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Code == nil || e.Message == nil {
		t.Fatalf("body %s is not {error_code, message}: %v", r.body, err)
	}
	if *e.Code != code {
		t.Errorf("error_code %d; want %d (message %q)", *e.Code, code, *e.Message)
	}
	if *e.Message == "" {
		t.Error("empty error message")
	}
	return *e.Message
}

// decode checks that r is a 200 and decodes its body into v.
func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d; want 200 (body %s)", r.status, r.body)
	}
	if r.ctype != ContentType {
		t.Errorf("content type %q; want %q", r.ctype, ContentType)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// body returns a register/lookup request body for schema text.
func body(text string) string {
	b, _ := json.Marshal(map[string]string{"schema": text})
	return string(b)
}

// responseError returns err as an *sr.ResponseError, failing the test if
// it is not one.
func responseError(t *testing.T, err error) *sr.ResponseError {
	t.Helper()
	var re *sr.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("got %v (%T); want *sr.ResponseError", err, err)
	}
	return re
}

func TestFranzGoClient(t *testing.T) {
	ctx := context.Background()
	_, _, cl := start(t)

	ss, err := cl.CreateSchema(ctx, "orders-value", sr.Schema{Schema: orderV1})
	if err != nil {
		t.Fatalf("CreateSchema: %v", err)
	}
	if ss.ID != 1 || ss.Version != 1 || ss.Subject != "orders-value" {
		t.Errorf("CreateSchema = id %d version %d subject %q; want 1, 1, orders-value", ss.ID, ss.Version, ss.Subject)
	}
	ss2, err := cl.CreateSchema(ctx, "orders-value", sr.Schema{Schema: orderV2, Type: sr.TypeAvro})
	if err != nil {
		t.Fatalf("CreateSchema v2: %v", err)
	}
	if ss2.ID != 2 || ss2.Version != 2 {
		t.Errorf("CreateSchema v2 = id %d version %d; want 2, 2", ss2.ID, ss2.Version)
	}
	if _, err := cl.CreateSchema(ctx, "payments-value", sr.Schema{Schema: paymentV1}); err != nil {
		t.Fatalf("CreateSchema payments: %v", err)
	}

	got, err := cl.SchemaByID(ctx, 2)
	if err != nil {
		t.Fatalf("SchemaByID: %v", err)
	}
	if n1, n2 := normalized(t, got.Schema), normalized(t, orderV2); n1 != n2 || got.Type != sr.TypeAvro {
		t.Errorf("SchemaByID(2) = %+v; want orders v2", got)
	}
	text, err := cl.SchemaTextByID(ctx, 1)
	if err != nil || normalized(t, text) != normalized(t, orderV1) {
		t.Errorf("SchemaTextByID(1) = %q, %v; want orders v1", text, err)
	}
	if _, err := cl.SchemaByID(ctx, 99); responseError(t, err).SchemaError() != sr.ErrSchemaNotFound {
		t.Errorf("SchemaByID(99): got %v; want schema not found", err)
	}

	subjects, err := cl.Subjects(ctx)
	if err != nil || !slices.Equal(subjects, []string{"orders-value", "payments-value"}) {
		t.Errorf("Subjects = %v, %v; want [orders-value payments-value]", subjects, err)
	}
	versions, err := cl.SubjectVersions(ctx, "orders-value")
	if err != nil || !slices.Equal(versions, []int{1, 2}) {
		t.Errorf("SubjectVersions = %v, %v; want [1 2]", versions, err)
	}
	latest, err := cl.SchemaByVersion(ctx, "orders-value", -1)
	if err != nil || latest.Version != 2 || latest.ID != 2 || latest.Subject != "orders-value" {
		t.Errorf("SchemaByVersion(latest) = %+v, %v; want version 2 id 2", latest, err)
	}
	first, err := cl.SchemaByVersion(ctx, "orders-value", 1)
	if err != nil || first.ID != 1 {
		t.Errorf("SchemaByVersion(1) = %+v, %v; want id 1", first, err)
	}
	vtext, err := cl.SchemaTextByVersion(ctx, "orders-value", -1)
	if err != nil || normalized(t, vtext) != normalized(t, orderV2) {
		t.Errorf("SchemaTextByVersion(latest) = %q, %v", vtext, err)
	}
	all, err := cl.Schemas(ctx, "orders-value")
	if err != nil || len(all) != 2 {
		t.Errorf("Schemas = %+v, %v; want 2", all, err)
	}
	if _, err := cl.SchemaByVersion(ctx, "orders-value", 7); responseError(t, err).SchemaError() != sr.ErrVersionNotFound {
		t.Errorf("SchemaByVersion(7): got %v; want version not found", err)
	}
	if _, err := cl.SubjectVersions(ctx, "nope"); responseError(t, err).SchemaError() != sr.ErrSubjectNotFound {
		t.Errorf("SubjectVersions(nope): got %v; want subject not found", err)
	}

	found, err := cl.LookupSchema(ctx, "orders-value", sr.Schema{Schema: orderV1})
	if err != nil || found.ID != 1 || found.Version != 1 {
		t.Errorf("LookupSchema(v1) = %+v, %v; want id 1 version 1", found, err)
	}
	if _, err := cl.LookupSchema(ctx, "orders-value", sr.Schema{Schema: paymentV1}); responseError(t, err).SchemaError() != sr.ErrSchemaNotFound {
		t.Errorf("LookupSchema(payment): got %v; want schema not found", err)
	}

	ids, err := cl.SubjectsByID(ctx, 1)
	if err != nil || !slices.Equal(ids, []string{"orders-value"}) {
		t.Errorf("SubjectsByID(1) = %v, %v", ids, err)
	}
	svs, err := cl.SchemaVersionsByID(ctx, 2)
	if err != nil || len(svs) != 1 || svs[0] != (sr.SubjectVersion{Subject: "orders-value", Version: 2}) {
		t.Errorf("SchemaVersionsByID(2) = %v, %v", svs, err)
	}
	types, err := cl.SupportedTypes(ctx)
	if err != nil || !slices.Equal(types, []sr.SchemaType{sr.TypeAvro}) {
		t.Errorf("SupportedTypes = %v, %v", types, err)
	}
	every, err := cl.AllSchemas(ctx)
	if err != nil || len(every) != 3 {
		t.Errorf("AllSchemas = %d schemas, %v; want 3", len(every), err)
	}
	if m := cl.Mode(ctx); m[0].Err != nil || m[0].Mode != sr.ModeReadWrite {
		t.Errorf("Mode = %+v; want READWRITE", m[0])
	}
	if refs, err := cl.SchemaReferences(ctx, "orders-value", -1); err != nil || len(refs) != 0 {
		t.Errorf("SchemaReferences = %v, %v; want none", refs, err)
	}

	// A subject with a slash in its name survives path escaping.
	if ss, err := cl.CreateSchema(ctx, "team/orders", sr.Schema{Schema: orderV1}); err != nil || ss.ID != 1 {
		t.Errorf("CreateSchema(team/orders) = %+v, %v; want id 1", ss, err)
	}
}

// normalized is the identity the registry uses for a schema text.
func normalized(t *testing.T, text string) string {
	t.Helper()
	n, err := schema.NormalizedForm(text)
	if err != nil {
		t.Fatalf("NormalizedForm(%s): %v", text, err)
	}
	return n
}

func TestSameSchemaSameID(t *testing.T) {
	ctx := context.Background()
	_, ts, cl := start(t)

	id1, err := cl.RegisterSchema(ctx, "a", sr.Schema{Schema: orderV1}, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	// The same schema again, and reformatted with keys in another order.
	reformatted := `{
		"fields": [{"type": "string", "name": "id"}],
		"name": "Order", "type": "record", "namespace": "shop"
	}`
	for _, text := range []string{orderV1, reformatted} {
		var got registerResponse
		call(t, ts, "POST", "/subjects/a/versions", body(text)).decode(t, &got)
		if got.ID != id1 || got.Version != 1 {
			t.Errorf("registering %s again: id %d version %d; want id %d version 1", text, got.ID, got.Version, id1)
		}
	}
	// The same schema under another subject reuses the global id.
	if id, err := cl.RegisterSchema(ctx, "b", sr.Schema{Schema: reformatted}, -1, -1); err != nil || id != id1 {
		t.Errorf("same schema under subject b: id %d, %v; want %d", id, err, id1)
	}
	// A schema that differs only in a default is another schema.
	idDef, err := cl.RegisterSchema(ctx, "a", sr.Schema{Schema: orderV2}, -1, -1)
	if err != nil || idDef == id1 {
		t.Fatalf("v2: id %d, %v; want a new id", idDef, err)
	}
	call(t, ts, "PUT", "/config/a", `{"compatibility":"NONE"}`).decode(t, new(setConfigResponse))
	idNoDef, err := cl.RegisterSchema(ctx, "a", sr.Schema{Schema: orderV3NoDefault}, -1, -1)
	if err != nil || idNoDef == idDef {
		t.Errorf("v3 (v2 without the default): id %d, %v; want an id other than v2's %d", idNoDef, err, idDef)
	}
	if v, _ := cl.SubjectVersions(ctx, "a"); !slices.Equal(v, []int{1, 2, 3}) {
		t.Errorf("versions of a = %v; want [1 2 3]", v)
	}
	// Choosing the id it gets anyway is fine; another is not.
	if id, err := cl.RegisterSchema(ctx, "a", sr.Schema{Schema: orderV1}, id1, -1); err != nil || id != id1 {
		t.Errorf("register with its own id: %d, %v", id, err)
	}
	_, err = cl.RegisterSchema(ctx, "a", sr.Schema{Schema: paymentV1}, 42, -1)
	if re := responseError(t, err); re.ErrorCode != 42205 {
		t.Errorf("register with a chosen id: error code %d; want 42205", re.ErrorCode)
	}
}

func TestIncompatibleRegistration(t *testing.T) {
	ctx := context.Background()
	_, ts, cl := start(t)
	if _, err := cl.CreateSchema(ctx, "orders", sr.Schema{Schema: orderV1}); err != nil {
		t.Fatal(err)
	}
	_, err := cl.CreateSchema(ctx, "orders", sr.Schema{Schema: orderV3NoDefault})
	re := responseError(t, err)
	if re.StatusCode != http.StatusConflict || re.ErrorCode != 409 || re.SchemaError() != sr.ErrIncompatibleSchema {
		t.Errorf("got status %d code %d; want 409 and 409", re.StatusCode, re.ErrorCode)
	}
	for _, want := range []string{"BACKWARD", "version 1", "qty", "orders"} {
		if !strings.Contains(re.Message, want) {
			t.Errorf("message %q does not mention %q", re.Message, want)
		}
	}
	if v, _ := cl.SubjectVersions(ctx, "orders"); !slices.Equal(v, []int{1}) {
		t.Errorf("versions after a refused registration: %v; want [1]", v)
	}
	// The refused schema got no id: the next schema gets id 2.
	if ss, err := cl.CreateSchema(ctx, "orders", sr.Schema{Schema: orderV2}); err != nil || ss.ID != 2 {
		t.Errorf("v2 after a refusal: %+v, %v; want id 2", ss, err)
	}
	call(t, ts, "POST", "/subjects/orders/versions", body(orderV1)).decode(t, new(registerResponse))
}

func TestCheckCompatibility(t *testing.T) {
	ctx := context.Background()
	_, ts, cl := start(t)
	for _, text := range []string{orderV1, orderV2} {
		if _, err := cl.CreateSchema(ctx, "orders", sr.Schema{Schema: text}); err != nil {
			t.Fatal(err)
		}
	}
	// v3 (qty without default) reads v2 data but not v1 data.
	v3 := sr.Schema{Schema: orderV3NoDefault}
	for _, tt := range []struct {
		name    string
		level   sr.CompatibilityLevel
		version int // -1 latest, -2 as registering would
		want    bool
	}{
		{"backward/latest", sr.CompatBackward, -1, true},
		{"backward/all", sr.CompatBackward, -2, true},
		{"backward/version 1", sr.CompatBackward, 1, false},
		{"backward/version 2", sr.CompatBackward, 2, true},
		{"backward transitive/all", sr.CompatBackwardTransitive, -2, false},
		{"backward transitive/latest", sr.CompatBackwardTransitive, -1, true},
		{"forward/all", sr.CompatForward, -2, true},
		{"full transitive/all", sr.CompatFullTransitive, -2, false},
		{"none/version 1", sr.CompatNone, 1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if r := cl.SetCompatibility(ctx, sr.SetCompatibility{Level: tt.level}, "orders"); r[0].Err != nil {
				t.Fatal(r[0].Err)
			}
			res, err := cl.CheckCompatibility(ctx, "orders", tt.version, v3)
			if err != nil {
				t.Fatal(err)
			}
			if res.Is != tt.want || len(res.Messages) != 0 {
				t.Errorf("CheckCompatibility = %+v; want is_compatible %v and no messages", res, tt.want)
			}
			res, err = cl.CheckCompatibility(sr.WithParams(ctx, sr.Verbose), "orders", tt.version, v3)
			if err != nil {
				t.Fatal(err)
			}
			if res.Is != tt.want || !tt.want && len(res.Messages) == 0 {
				t.Errorf("verbose CheckCompatibility = %+v; want is_compatible %v with messages when false", res, tt.want)
			}
			if !tt.want && !strings.Contains(strings.Join(res.Messages, "\n"), "version 1") {
				t.Errorf("messages %q do not name version 1", res.Messages)
			}
		})
	}

	_, err := cl.CheckCompatibility(ctx, "nope", -1, v3)
	if responseError(t, err).SchemaError() != sr.ErrSubjectNotFound {
		t.Errorf("check against nope/latest: got %v; want subject not found", err)
	}
	if res, err := cl.CheckCompatibility(ctx, "nope", -2, v3); err != nil || !res.Is {
		t.Errorf("check against all versions of nope = %+v, %v; want compatible", res, err)
	}
	_, err = cl.CheckCompatibility(ctx, "orders", 9, v3)
	if responseError(t, err).SchemaError() != sr.ErrVersionNotFound {
		t.Errorf("check against version 9: got %v; want version not found", err)
	}
	call(t, ts, "POST", "/compatibility/subjects/orders/versions/zero", body(orderV1)).wantError(t, 422, 42202)
	call(t, ts, "POST", "/compatibility/subjects/orders/versions", body(`{"type":"enum"}`)).wantError(t, 422, 42201)
}

func TestConfig(t *testing.T) {
	ctx := context.Background()
	_, ts, cl := start(t)

	if r := cl.Compatibility(ctx); r[0].Err != nil || r[0].Level != sr.CompatBackward {
		t.Errorf("global = %+v; want BACKWARD", r[0])
	}
	if r := cl.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatFull}); r[0].Err != nil || r[0].Level != sr.CompatFull {
		t.Errorf("set global FULL = %+v", r[0])
	}
	if r := cl.Compatibility(ctx); r[0].Level != sr.CompatFull {
		t.Errorf("global after set = %+v; want FULL", r[0])
	}

	// No subject-level config yet: 40408, or the global one on request.
	r := cl.Compatibility(ctx, "orders")
	if re := responseError(t, r[0].Err); re.ErrorCode != 40408 {
		t.Errorf("subject config before set: %v; want 40408", r[0].Err)
	}
	if r := cl.Compatibility(sr.WithParams(ctx, sr.DefaultToGlobal), "orders"); r[0].Err != nil || r[0].Level != sr.CompatFull {
		t.Errorf("subject config defaulting to global = %+v; want FULL", r[0])
	}
	if r := cl.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatNone}, "orders"); r[0].Err != nil || r[0].Level != sr.CompatNone {
		t.Errorf("set orders NONE = %+v", r[0])
	}
	if r := cl.Compatibility(ctx, "orders"); r[0].Err != nil || r[0].Level != sr.CompatNone {
		t.Errorf("orders = %+v; want NONE", r[0])
	}

	// The subject's level overrides the global one: NONE lets an
	// incompatible schema in under orders, FULL keeps it out of payments.
	for _, subject := range []string{"orders", "payments"} {
		if _, err := cl.CreateSchema(ctx, subject, sr.Schema{Schema: orderV1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.CreateSchema(ctx, "orders", sr.Schema{Schema: orderV3NoDefault}); err != nil {
		t.Errorf("incompatible schema under NONE: %v", err)
	}
	if _, err := cl.CreateSchema(ctx, "payments", sr.Schema{Schema: orderV3NoDefault}); err == nil || responseError(t, err).StatusCode != 409 {
		t.Errorf("incompatible schema under global FULL: got %v; want 409", err)
	}

	if r := cl.ResetCompatibility(ctx, "orders"); r[0].Err != nil || r[0].Level != sr.CompatNone {
		t.Errorf("reset orders = %+v; want the old level NONE", r[0])
	}
	if r := cl.ResetCompatibility(ctx, "orders"); responseError(t, r[0].Err).ErrorCode != 40408 {
		t.Errorf("reset orders twice: %v; want 40408", r[0].Err)
	}
	if r := cl.ResetCompatibility(ctx); r[0].Err != nil || r[0].Level != sr.CompatFull {
		t.Errorf("reset global = %+v; want the old level FULL", r[0])
	}
	if r := cl.Compatibility(ctx); r[0].Level != sr.CompatBackward {
		t.Errorf("global after reset = %+v; want BACKWARD", r[0])
	}

	// Raw requests: either member name, any case; bad levels are 42203.
	call(t, ts, "PUT", "/config", `{"compatibilityLevel":"forward_transitive"}`).decode(t, new(setConfigResponse))
	var cfg configResponse
	call(t, ts, "GET", "/config", "").decode(t, &cfg)
	if cfg.Level != schema.CompatForwardTransitive {
		t.Errorf("GET /config = %+v; want FORWARD_TRANSITIVE", cfg)
	}
	call(t, ts, "PUT", "/config", `{"compatibility":"SIDEWAYS"}`).wantError(t, 422, 42203)
	call(t, ts, "PUT", "/config/orders", `{}`).wantError(t, 422, 42203)
	call(t, ts, "PUT", "/config/orders", `{"compatibility":7}`).wantError(t, 422, 422)
	call(t, ts, "DELETE", "/config/nope", "").wantError(t, 404, 40401)
}

func TestDefaultCompatibilityOption(t *testing.T) {
	ctx := context.Background()
	_, _, cl := start(t, WithCompatibility(schema.CompatNone))
	if r := cl.Compatibility(ctx); r[0].Level != sr.CompatNone {
		t.Errorf("global = %+v; want NONE", r[0])
	}
	for _, text := range []string{orderV1, orderV3NoDefault, paymentV1} {
		if _, err := cl.CreateSchema(ctx, "anything", sr.Schema{Schema: text}); err != nil {
			t.Errorf("register under NONE: %v", err)
		}
	}
	if _, err := New(WithCompatibility("SIDEWAYS")); !errors.Is(err, schema.ErrUnknownCompatibility) {
		t.Errorf("New with an unknown level: %v; want ErrUnknownCompatibility", err)
	}
	if srv, err := New(WithCompatibility("full")); err != nil || srv.defCompat != schema.CompatFull {
		t.Errorf("New with a lower-case level: %v", err)
	}
}

func TestInvalidSchemas(t *testing.T) {
	_, ts, _ := start(t)
	for _, tt := range []struct {
		name, body string
	}{
		{"schema not JSON", body(`{"type":"record",`)},
		{"bare type name", body(`string`)},
		{"undefined named type", body(`"shop.Order"`)},
		{"record without fields", body(`{"type":"record","name":"R"}`)},
		{"bad default", body(`{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":"x"}]}`)},
		{"empty schema", `{"schema":""}`},
		{"missing schema field", `{"schemaType":"AVRO"}`},
		{"null schema field", `{"schema":null}`},
		{"protobuf", `{"schema":"syntax = \"proto3\";","schemaType":"PROTOBUF"}`},
		{"json schema", `{"schema":"{}","schemaType":"JSON"}`},
		{"references", `{"schema":"\"string\"","references":[{"name":"x","subject":"y","version":1}]}`},
		{"rule set", `{"schema":"\"string\"","ruleSet":{"domainRules":[{"name":"r"}]}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg := call(t, ts, "POST", "/subjects/s/versions", tt.body).wantError(t, 422, 42201)
			t.Log(msg)
			call(t, ts, "POST", "/subjects/s", tt.body).wantError(t, 422, 42201)
		})
	}
	// Nothing was registered.
	var subjects []string
	call(t, ts, "GET", "/subjects", "").decode(t, &subjects)
	if len(subjects) != 0 {
		t.Errorf("subjects = %v; want none", subjects)
	}
	// The type name is not case-sensitive, and null extras are fine.
	call(t, ts, "POST", "/subjects/s/versions", `{"schema":"\"string\"","schemaType":"avro","references":[],"metadata":null,"ruleSet":{}}`).decode(t, new(registerResponse))
}

func TestBrokenRequests(t *testing.T) {
	_, ts, _ := start(t)
	for _, tt := range []struct {
		name, method, path, body string
		status, code             int
	}{
		{"not JSON", "POST", "/subjects/s/versions", `schema: yes`, 400, 400},
		{"empty body", "POST", "/subjects/s/versions", ``, 400, 400},
		{"truncated JSON", "POST", "/subjects/s/versions", `{"schema":"\"string\""`, 400, 400},
		{"two values", "POST", "/subjects/s/versions", `{"schema":"\"string\""} {}`, 400, 400},
		{"trailing garbage", "POST", "/subjects/s/versions", `{"schema":"\"string\""}]`, 400, 400},
		{"array body", "POST", "/subjects/s/versions", `[1,2]`, 422, 422},
		{"string body", "POST", "/subjects/s/versions", `"schema"`, 422, 422},
		{"schema is a number", "POST", "/subjects/s/versions", `{"schema":5}`, 422, 422},
		{"schema is an object", "POST", "/subjects/s/versions", `{"schema":{"type":"string"}}`, 422, 422},
		{"id is a string", "POST", "/subjects/s/versions", `{"schema":"\"string\"","id":"1"}`, 422, 422},
		{"version is fractional", "POST", "/subjects/s/versions", `{"schema":"\"string\"","version":1.5}`, 422, 422},
		{"huge id", "POST", "/subjects/s/versions", `{"schema":"\"string\"","id":1e300}`, 422, 422},
		{"references not a list", "POST", "/subjects/s/versions", `{"schema":"\"string\"","references":"x"}`, 422, 422},
		{"lookup not JSON", "POST", "/subjects/s", `{`, 400, 400},
		{"compat not JSON", "POST", "/compatibility/subjects/s/versions/latest", `nope`, 400, 400},
		{"config not JSON", "PUT", "/config", `{compatibility: FULL}`, 400, 400},
		{"config wrong type", "PUT", "/config", `["FULL"]`, 422, 422},
		{"mode wrong", "PUT", "/mode", `{"mode":"SOMETIMES"}`, 422, 42204},
		{"mode import", "PUT", "/mode", `{"mode":"IMPORT"}`, 422, 42204},
		{"bad version", "GET", "/subjects/s/versions/first", "", 422, 42202},
		{"version zero", "GET", "/subjects/s/versions/0", "", 422, 42202},
		{"version too big", "GET", "/subjects/s/versions/99999999999", "", 422, 42202},
		{"bad version delete", "DELETE", "/subjects/s/versions/-2", "", 422, 42202},
		{"bad schema id", "GET", "/schemas/ids/one", "", 404, 40403},
		{"unknown schema id", "GET", "/schemas/ids/7", "", 404, 40403},
		{"unknown subject", "GET", "/subjects/nope/versions/latest", "", 404, 40401},
		{"unknown path", "GET", "/nothing/here", "", 404, 404},
		{"wrong method", "PATCH", "/subjects", "", 405, 405},
		{"wrong method on subject", "PUT", "/subjects/s/versions", "{}", 405, 405},
		{"control character in subject", "POST", "/subjects/a%01b/versions", body(orderV1), 422, 42208},
		{"reserved subject", "PUT", "/config/__GLOBAL", `{"compatibility":"FULL"}`, 422, 42208},
		{"too large", "POST", "/subjects/s/versions", `{"schema":"` + strings.Repeat(" ", MaxRequestBytes) + `"}`, 422, 42209},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg := call(t, ts, tt.method, tt.path, tt.body).wantError(t, tt.status, tt.code)
			if len(msg) < 200 {
				t.Log(msg)
			}
		})
	}
}

func TestEndpoints(t *testing.T) {
	_, ts, _ := start(t)
	if r := call(t, ts, "GET", "/", ""); r.status != 200 || strings.TrimSpace(string(r.body)) != "{}" || r.ctype != ContentType {
		t.Errorf("GET / = %d %q %q; want 200 {}", r.status, r.ctype, r.body)
	}
	var mode modeResponse
	call(t, ts, "GET", "/mode", "").decode(t, &mode)
	if mode.Mode != "READWRITE" {
		t.Errorf("GET /mode = %+v", mode)
	}
	call(t, ts, "PUT", "/mode/s", `{"mode":"readwrite"}`).decode(t, &mode)
	var contexts []string
	call(t, ts, "GET", "/contexts", "").decode(t, &contexts)
	if !slices.Equal(contexts, []string{"."}) {
		t.Errorf("GET /contexts = %v", contexts)
	}
	r := call(t, ts, "PATCH", "/config", "")
	r.wantError(t, 405, 405)
	if got := r.header.Get("Allow"); got != "GET, PUT, DELETE" {
		t.Errorf("Allow for /config = %q; want GET, PUT, DELETE", got)
	}

	var reg registerResponse
	call(t, ts, "POST", "/subjects/s/versions", body(orderV1)).decode(t, &reg)
	var byID schemaByIDResponse
	call(t, ts, "GET", "/schemas/ids/1?fetchMaxId=true", "").decode(t, &byID)
	if byID.MaxID != 1 || normalized(t, byID.Schema) != normalized(t, orderV1) {
		t.Errorf("GET /schemas/ids/1 = %+v", byID)
	}
	// A schema is stored compacted but otherwise as sent.
	if want := `{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"}]}`; byID.Schema != want {
		t.Errorf("stored text %s; want %s", byID.Schema, want)
	}
	if r := call(t, ts, "GET", "/schemas/ids/1/schema", ""); r.status != 200 || string(r.body) != byID.Schema {
		t.Errorf("GET /schemas/ids/1/schema = %d %s", r.status, r.body)
	}
	if r := call(t, ts, "GET", "/subjects/s/versions/latest/schema", ""); r.status != 200 || string(r.body) != byID.Schema {
		t.Errorf("GET /subjects/s/versions/latest/schema = %d %s", r.status, r.body)
	}
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	_, ts, cl := start(t)
	for _, text := range []string{orderV1, orderV2} {
		if _, err := cl.CreateSchema(ctx, "orders", sr.Schema{Schema: text}); err != nil {
			t.Fatal(err)
		}
	}
	errCode := func(err error) int { t.Helper(); return responseError(t, err).ErrorCode }

	// Hard delete needs a soft delete first.
	if err := cl.DeleteSchema(ctx, "orders", 2, sr.HardDelete); errCode(err) != 40407 {
		t.Errorf("hard delete of a live version: %v; want 40407", err)
	}
	if err := cl.DeleteSchema(ctx, "orders", -1, sr.SoftDelete); err != nil {
		t.Fatalf("soft delete latest: %v", err)
	}
	if err := cl.DeleteSchema(ctx, "orders", 2, sr.SoftDelete); errCode(err) != 40406 {
		t.Errorf("soft delete twice: %v; want 40406", err)
	}
	if v, _ := cl.SubjectVersions(ctx, "orders"); !slices.Equal(v, []int{1}) {
		t.Errorf("live versions = %v; want [1]", v)
	}
	if v, _ := cl.SubjectVersions(sr.WithParams(ctx, sr.ShowDeleted), "orders"); !slices.Equal(v, []int{1, 2}) {
		t.Errorf("versions with deleted = %v; want [1 2]", v)
	}
	if _, err := cl.SchemaByVersion(ctx, "orders", 2); errCode(err) != 40402 {
		t.Errorf("get a soft-deleted version: %v; want 40402", err)
	}
	if ss, err := cl.SchemaByVersion(sr.WithParams(ctx, sr.ShowDeleted), "orders", 2); err != nil || ss.ID != 2 {
		t.Errorf("get a soft-deleted version with deleted=true: %+v, %v", ss, err)
	}
	// Re-registering the deleted schema makes a new version with the old id.
	if ss, err := cl.CreateSchema(ctx, "orders", sr.Schema{Schema: orderV2}); err != nil || ss.ID != 2 || ss.Version != 3 {
		t.Errorf("re-register v2 = %+v, %v; want id 2 version 3", ss, err)
	}
	if err := cl.DeleteSchema(ctx, "orders", 2, sr.HardDelete); err != nil {
		t.Errorf("hard delete of a soft-deleted version: %v", err)
	}
	if v, _ := cl.SubjectVersions(sr.WithParams(ctx, sr.ShowDeleted), "orders"); !slices.Equal(v, []int{1, 3}) {
		t.Errorf("versions after hard delete = %v; want [1 3]", v)
	}

	// Subjects.
	if _, err := cl.DeleteSubject(ctx, "orders", sr.HardDelete); errCode(err) != 40405 {
		t.Errorf("hard delete of a live subject: %v; want 40405", err)
	}
	deleted, err := cl.DeleteSubject(ctx, "orders", sr.SoftDelete)
	if err != nil || !slices.Equal(deleted, []int{1, 3}) {
		t.Errorf("soft delete subject = %v, %v; want [1 3]", deleted, err)
	}
	if _, err := cl.DeleteSubject(ctx, "orders", sr.SoftDelete); errCode(err) != 40404 {
		t.Errorf("soft delete subject twice: %v; want 40404", err)
	}
	if s, _ := cl.Subjects(ctx); len(s) != 0 {
		t.Errorf("subjects after soft delete = %v; want none", s)
	}
	if s, _ := cl.Subjects(sr.WithParams(ctx, sr.ShowDeleted)); !slices.Equal(s, []string{"orders"}) {
		t.Errorf("subjects with deleted = %v; want [orders]", s)
	}
	if s, _ := cl.Subjects(sr.WithParams(ctx, sr.DeletedOnly)); !slices.Equal(s, []string{"orders"}) {
		t.Errorf("deleted-only subjects = %v; want [orders]", s)
	}
	if subs, err := cl.SubjectsByID(ctx, 1); err != nil || len(subs) != 0 {
		t.Errorf("subjects of id 1 after delete = %v, %v; want none", subs, err)
	}
	if subs, err := cl.SubjectsByID(sr.WithParams(ctx, sr.ShowDeleted), 1); err != nil || !slices.Equal(subs, []string{"orders"}) {
		t.Errorf("subjects of id 1 with deleted = %v, %v; want [orders]", subs, err)
	}
	deleted, err = cl.DeleteSubject(ctx, "orders", sr.HardDelete)
	if err != nil || !slices.Equal(deleted, []int{1, 3}) {
		t.Errorf("hard delete subject = %v, %v; want [1 3]", deleted, err)
	}
	if _, err := cl.DeleteSubject(ctx, "orders", sr.SoftDelete); errCode(err) != 40401 {
		t.Errorf("delete a gone subject: %v; want 40401", err)
	}
	// Ids outlive their subjects, so old records stay decodable.
	if s, err := cl.SchemaByID(ctx, 1); err != nil || s.Schema == "" {
		t.Errorf("schema 1 after its subject is gone: %v", err)
	}
	// A subject registered anew starts at version 1 and reuses the id.
	if ss, err := cl.CreateSchema(ctx, "orders", sr.Schema{Schema: orderV1}); err != nil || ss.ID != 1 || ss.Version != 1 {
		t.Errorf("register after hard delete = %+v, %v; want id 1 version 1", ss, err)
	}
	call(t, ts, "DELETE", "/subjects/orders/versions/9", "").wantError(t, 404, 40402)
	call(t, ts, "DELETE", "/subjects/nope/versions/1", "").wantError(t, 404, 40401)
}

func TestPersistence(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.json")
	_, ts, cl := start(t, WithFile(path))
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("New did not create the state file: %v", err)
	}
	for _, reg := range []struct{ subject, text string }{
		{"orders", orderV1}, {"orders", orderV2}, {"payments", paymentV1}, {"copy", orderV1},
	} {
		if _, err := cl.CreateSchema(ctx, reg.subject, sr.Schema{Schema: reg.text}); err != nil {
			t.Fatal(err)
		}
	}
	cl.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatFullTransitive})
	cl.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatNone}, "payments")
	if err := cl.DeleteSchema(ctx, "copy", 1, sr.SoftDelete); err != nil {
		t.Fatal(err)
	}
	ts.Close()

	// A new server on the same file has the same state.
	_, _, cl2 := start(t, WithFile(path))
	if s, _ := cl2.Subjects(ctx); !slices.Equal(s, []string{"orders", "payments"}) {
		t.Errorf("subjects after reload = %v", s)
	}
	if s, _ := cl2.Subjects(sr.WithParams(ctx, sr.ShowDeleted)); !slices.Equal(s, []string{"copy", "orders", "payments"}) {
		t.Errorf("subjects with deleted after reload = %v", s)
	}
	if ss, err := cl2.SchemaByVersion(ctx, "orders", -1); err != nil || ss.ID != 2 || ss.Version != 2 {
		t.Errorf("orders latest after reload = %+v, %v", ss, err)
	}
	if s, err := cl2.SchemaByID(ctx, 3); err != nil || normalized(t, s.Schema) != normalized(t, paymentV1) {
		t.Errorf("schema 3 after reload = %+v, %v", s, err)
	}
	if r := cl2.Compatibility(ctx); r[0].Level != sr.CompatFullTransitive {
		t.Errorf("global level after reload = %v", r[0].Level)
	}
	if r := cl2.Compatibility(ctx, "payments"); r[0].Level != sr.CompatNone {
		t.Errorf("payments level after reload = %v", r[0].Level)
	}
	// Identity survives: the same schema keeps its id; a new one gets the
	// next id; compatibility is enforced at the reloaded level.
	if id, err := cl2.RegisterSchema(ctx, "again", sr.Schema{Schema: orderV2}, -1, -1); err != nil || id != 2 {
		t.Errorf("re-register v2 after reload: id %d, %v; want 2", id, err)
	}
	if id, err := cl2.RegisterSchema(ctx, "payments", sr.Schema{Schema: `"string"`}, -1, -1); err != nil || id != 4 {
		t.Errorf("new schema after reload: id %d, %v; want 4", id, err)
	}
	if _, err := cl2.RegisterSchema(ctx, "orders", sr.Schema{Schema: orderV3NoDefault}, -1, -1); err == nil {
		t.Error("incompatible schema accepted after reload")
	}

	// The file is the documented JSON.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f fileState
	if err := json.Unmarshal(data, &f); err != nil || f.Format != 1 || f.NextID != 5 || len(f.Schemas) != 4 {
		t.Errorf("state file: %+v, %v", f, err)
	}
	if matches, _ := filepath.Glob(path + ".*"); len(matches) != 0 {
		t.Errorf("temporary files left behind: %v", matches)
	}
}

func TestPersistenceErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ name, content string }{
		{"not JSON", "{"},
		{"unknown format", `{"format":2,"nextId":1,"schemas":[],"subjects":[]}`},
		{"invalid schema", `{"format":1,"nextId":2,"schemas":[{"id":1,"schema":"{"}],"subjects":[]}`},
		{"dangling id", `{"format":1,"nextId":1,"schemas":[],"subjects":[{"name":"s","versions":[{"version":1,"id":1}]}]}`},
		{"bad level", `{"format":1,"nextId":1,"compatibility":"SIDEWAYS","schemas":[],"subjects":[]}`},
		{"versions out of order", `{"format":1,"nextId":2,"schemas":[{"id":1,"schema":"\"int\""}],"subjects":[{"name":"s","versions":[{"version":2,"id":1},{"version":1,"id":1}]}]}`},
		{"unknown member", `{"format":1,"nextId":1,"schemas":[],"subjects":[],"extra":true}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := New(WithFile(path)); err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("New: %v; want an error naming the file", err)
			}
		})
	}
	if _, err := New(WithFile(filepath.Join(dir, "no", "such", "dir.json"))); err == nil {
		t.Error("New with a file in a missing directory: nil error")
	}

	// A change that cannot be saved is refused and not applied.
	sub := filepath.Join(dir, "gone")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	srv, ts, cl := start(t, WithFile(filepath.Join(sub, "r.json")), WithLogger(discard()))
	if err := os.RemoveAll(sub); err != nil {
		t.Fatal(err)
	}
	call(t, ts, "POST", "/subjects/s/versions", body(orderV1)).wantError(t, 500, 50001)
	if s, _ := cl.Subjects(context.Background()); len(s) != 0 {
		t.Errorf("subjects after a failed save = %v; want none", s)
	}
	if srv.snapshot().nextID != 1 {
		t.Errorf("next id after a failed save = %d; want 1", srv.snapshot().nextID)
	}
}

func TestConcurrentRegistrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.json")
	srv, _, cl := start(t, WithFile(path))

	// Every worker registers, in its own order, a schema that adds an
	// optional field of its own to Order (compatible whatever the order),
	// plus one schema that every worker registers.
	const workers, subjects = 8, 3
	fieldSchema := func(w int) string {
		return fmt.Sprintf(`{"type":"record","name":"Order","namespace":"shop","fields":[
			{"name":"id","type":"string"},{"name":"f%d","type":"int","default":%d}]}`, w, w)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*(subjects+1)*2)
	ids := make([][]int, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range subjects {
				subject := fmt.Sprintf("s%d", (i+w)%subjects)
				for _, text := range []string{orderV1, fieldSchema(w)} {
					id, err := cl.RegisterSchema(ctx, subject, sr.Schema{Schema: text}, -1, -1)
					if err != nil {
						errs <- fmt.Errorf("worker %d, %s: %w", w, subject, err)
						continue
					}
					ids[w] = append(ids[w], id)
				}
				if _, err := cl.SubjectVersions(ctx, subject); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// One id per distinct schema: orderV1 and the 8 field schemas.
	seen := map[int]bool{}
	for _, l := range ids {
		for _, id := range l {
			seen[id] = true
		}
	}
	if len(seen) != workers+1 {
		t.Errorf("%d distinct ids; want %d", len(seen), workers+1)
	}
	for i := range subjects {
		vs, err := cl.SubjectVersions(ctx, fmt.Sprintf("s%d", i))
		if err != nil {
			t.Fatal(err)
		}
		// orderV1 and each field schema are registered once per subject:
		// versions 1..9 without gaps or duplicates.
		for j, v := range vs {
			if v != j+1 {
				t.Errorf("s%d versions = %v; want 1..%d", i, vs, len(vs))
				break
			}
		}
		if len(vs) != workers+1 {
			t.Errorf("s%d has %d versions; want %d", i, len(vs), workers+1)
		}
	}
	// The file holds what the server holds.
	again, err := New(WithFile(path))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := srv.snapshot().marshal()
	b, _ := again.snapshot().marshal()
	if string(a) != string(b) {
		t.Errorf("reloaded state differs:\n%s\n%s", a, b)
	}
}
