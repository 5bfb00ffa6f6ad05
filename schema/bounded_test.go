package schema

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRegistryResponseBounded: a registry that answers with more than
// MaxResponseBytes makes an error, read no further, with or without a
// Content-Length.
func TestRegistryResponseBounded(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
			if !chunked {
				w.Header().Set("Content-Length", "33554432")
			}
			chunk := bytes.Repeat([]byte(" "), 1<<20)
			for range 32 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
				if f, ok := w.(http.Flusher); ok && chunked {
					f.Flush()
				}
			}
		}))
		reg, err := NewRegistry([]string{srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		_, err = reg.SchemaByID(context.Background(), 1)
		srv.Close()
		if err == nil || !strings.Contains(err.Error(), "over the limit") {
			t.Errorf("chunked %v: SchemaByID: %v; want the response refused as over the limit", chunked, err)
		}
	}
}
