package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/choreokit/choreo/schema/registry"
)

func TestSchemaCheckAndRegister(t *testing.T) {
	reg, err := registry.New()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	t.Setenv(envRegistryURL, srv.URL)

	dir := t.TempDir()
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v1 := file("v1.avsc", schemaV1)
	v2 := file("v2.avsc", schemaV2OK)
	broken := file("break.avsc", schemaV2Break)
	notAvro := file("bad.avsc", `{"type":"record","name":"X","fields":[{"name":"a","type":"nope"}]}`)

	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		stdout  string
		stderr  string
		regFlag bool
	}{
		{"check before anything is registered", []string{"check", "--subject", "orders-value", v1}, 0, "is compatible", "", false},
		{"register v1", []string{"register", "--subject", "orders-value", v1}, 0, "with id 1", "", false},
		{"check compatible v2", []string{"check", "--subject", "orders-value", v2}, 0, "is compatible", "", false},
		{"check incompatible", []string{"check", "--subject", "orders-value", broken}, 1, "NOT compatible", "incompatible with orders-value", false},
		{"register incompatible", []string{"register", "--subject", "orders-value", broken}, 1, "NOT registered", "incompatible with orders-value", false},
		{"invalid schema file", []string{"check", "--subject", "orders-value", notAvro}, 1, "", "bad.avsc", false},
		{"missing file", []string{"check", "--subject", "s", filepath.Join(dir, "none.avsc")}, 1, "", "no such file", false},
		{"no subject", []string{"check", v1}, 2, "", "--subject is required", false},
		{"two files", []string{"check", "--subject", "s", v1, v2}, 2, "", "exactly one schema file", false},
		{"unknown subcommand", []string{"delete"}, 2, "", `unknown subcommand "delete"`, false},
		{"no subcommand", nil, 2, "", "want a subcommand", false},
		{"registry down", []string{"check", "--registry", "http://127.0.0.1:1", "--subject", "s", v1}, 1, "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), append([]string{"schema"}, tc.args...), &out, &errOut)
			if code != tc.code {
				t.Fatalf("status %d; want %d (stdout %q, stderr %q)", code, tc.code, out.String(), errOut.String())
			}
			if !strings.Contains(out.String(), tc.stdout) {
				t.Errorf("stdout %q; want it to contain %q", out.String(), tc.stdout)
			}
			if !strings.Contains(errOut.String(), tc.stderr) {
				t.Errorf("stderr %q; want it to contain %q", errOut.String(), tc.stderr)
			}
			if tc.code != 0 && strings.Count(strings.TrimSpace(errOut.String()), "\n") != 0 {
				t.Errorf("stderr has more than one line: %q", errOut.String())
			}
		})
	}

	t.Setenv(envRegistryURL, "")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"schema", "check", "--subject", "s", v1}, &out, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "no schema registry") {
		t.Errorf("without a registry: status %d, stderr %q; want 2 and a hint", code, errOut.String())
	}
}
