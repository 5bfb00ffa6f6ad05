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
		usage   bool // the message is followed by the usage
	}{
		{"check before anything is registered", []string{"check", "--subject", "orders-value", v1}, 0, "is compatible", "", false, false},
		{"register v1", []string{"register", "--subject", "orders-value", v1}, 0, "with id 1", "", false, false},
		{"check compatible v2", []string{"check", "--subject", "orders-value", v2}, 0, "is compatible", "", false, false},
		{"check incompatible", []string{"check", "--subject", "orders-value", broken}, 1, "NOT compatible", "incompatible with orders-value", false, false},
		{"register incompatible", []string{"register", "--subject", "orders-value", broken}, 1, "NOT registered", "incompatible with orders-value", false, false},
		{"invalid schema file", []string{"check", "--subject", "orders-value", notAvro}, 1, "", "bad.avsc", false, false},
		{"missing file", []string{"check", "--subject", "s", filepath.Join(dir, "none.avsc")}, 1, "", "no such file", false, false},
		{"no subject", []string{"check", v1}, 2, "", "--subject is required", false, false},
		{"two files", []string{"check", "--subject", "s", v1, v2}, 2, "", "exactly one schema file", false, true},
		{"unknown subcommand", []string{"delete"}, 2, "", `unknown command "delete"`, false, false},
		{"no subcommand", nil, 2, "", "want a subcommand", false, true},
		{"registry down", []string{"check", "--registry", "http://127.0.0.1:1", "--subject", "s", v1}, 1, "", "", true, false},
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
			if tc.code != 0 {
				checkErrorOutput(t, errOut.String(), "choreo schema", tc.stderr, tc.usage)
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
