package registry

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzRegister posts arbitrary bytes as the body of a registration under a
// subject that already has a version, so the compatibility check runs too.
// Whatever the body, the answer is a well-formed 200 or 4xx, never a 5xx
// (the server turns panics into 500s, so a panic fails here as well).
func FuzzRegister(f *testing.F) {
	for _, seed := range []string{
		body(orderV1),
		body(orderV2),
		body(orderV3NoDefault),
		`{"schema":"\"string\""}`,
		`{"schema":"{\"type\":\"array\",\"items\":{\"type\":\"map\",\"values\":[\"null\",\"shop.Order\"]}}"}`,
		`{"schema":"{\"type\":\"record\",\"name\":\"L\",\"fields\":[{\"name\":\"next\",\"type\":[\"null\",\"L\"]}]}"}`,
		`{"schema":"{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"A\"]}"}`,
		`{"schema":"{\"type\":\"fixed\",\"name\":\"F\",\"size\":-1}"}`,
		`{"schema":"{\"type\":\"bytes\",\"logicalType\":\"decimal\",\"precision\":4,\"scale\":9}"}`,
		`{"schema":"[\"null\",\"null\"]"}`,
		`{"schema":"\"string\"","schemaType":"PROTOBUF"}`,
		body(`{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[{"name":"sku","type":"string"},{"name":"n","type":"int","default":1}]}},"default":[]}]}`),
		body(`{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":["null","string"],"default":null},{"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}`),
		body(`{"type":"record","name":"Order","namespace":"shop","aliases":["Old"],"fields":[{"name":"key","aliases":["id"],"type":"string","doc":"d","order":"descending"}]}`),
		body(`{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"m","type":{"type":"map","values":{"type":"enum","name":"S","symbols":["A","B"],"default":"C"}},"default":{"x":"A"}}]}`),
		body(`{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"f","type":{"type":"fixed","name":"F","size":4},"default":"\u0000\u0000\u0000\u0000"}]}`),
		`{"schema":"\"string\"","id":2147483648,"version":-5}`,
		`{"schema":5}`,
		`[]`,
		``,
		`{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		srv, err := New(WithLogger(discard()))
		if err != nil {
			t.Fatal(err)
		}
		post := func(b []byte) *httptest.ResponseRecorder {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/subjects/fuzz/versions", bytes.NewReader(b))
			req.Header.Set("Content-Type", ContentType)
			srv.ServeHTTP(rec, req)
			return rec
		}
		if rec := post([]byte(body(orderV1))); rec.Code != http.StatusOK {
			t.Fatalf("registering the base schema: %d %s", rec.Code, rec.Body)
		}

		rec := post(data)
		if rec.Code >= 500 {
			t.Fatalf("status %d for body %q: %s", rec.Code, data, rec.Body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != ContentType {
			t.Fatalf("content type %q", ct)
		}
		switch {
		case rec.Code == http.StatusOK:
			var r, again registerResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil || r.ID < 1 || r.Version < 1 {
				t.Fatalf("200 with body %s: %v", rec.Body, err)
			}
			// Registering is idempotent.
			rec2 := post(data)
			if err := json.Unmarshal(rec2.Body.Bytes(), &again); rec2.Code != http.StatusOK || err != nil || again != r {
				t.Fatalf("registering %q again: %d %s; want %+v", data, rec2.Code, rec2.Body, r)
			}
		case rec.Code >= 400 && rec.Code < 500:
			var e struct {
				Code    int    `json:"error_code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code == 0 || e.Message == "" {
				t.Fatalf("%d with body %s: %v", rec.Code, rec.Body, err)
			}
		default:
			t.Fatalf("status %d", rec.Code)
		}
	})
}
