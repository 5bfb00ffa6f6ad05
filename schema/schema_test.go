package schema_test

import (
	"context"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/choreokit/choreo/schema"
)

func TestParse(t *testing.T) {
	s := mustParse(t, orderPlacedV1)
	if got, want := s.FullName(), "com.acme.orders.OrderPlaced"; got != want {
		t.Errorf("FullName = %q; want %q", got, want)
	}
	if s.Text() != orderPlacedV1 || s.String() != orderPlacedV1 {
		t.Errorf("Text/String do not return the parsed text")
	}
	if !strings.HasPrefix(s.Canonical(), `{"name":"com.acme.orders.OrderPlaced","type":"record","fields":[`) {
		t.Errorf("Canonical = %s", s.Canonical())
	}
	// Formatting and defaults are not part of the canonical form.
	again := mustParse(t, strings.ReplaceAll(orderPlacedV1, "\n", " "))
	if !s.Equal(again) || s.Fingerprint() != again.Fingerprint() {
		t.Errorf("the same schema, reformatted, is not Equal")
	}
	if s.Equal(mustParse(t, orderPlacedV2)) {
		t.Errorf("v1 Equal v2")
	}
	if got := mustParse(t, `"string"`).FullName(); got != "string" {
		t.Errorf("FullName of a primitive = %q; want string", got)
	}
	for _, bad := range []string{``, `{`, `{"type":"record","name":"X"}`, `{"type":"record","name":"X","fields":[{"name":"a","type":"Nope"}]}`} {
		if _, err := schema.Parse(bad); err == nil || !strings.HasPrefix(err.Error(), "schema: parse: ") {
			t.Errorf("Parse(%q) = %v; want a schema: parse error", bad, err)
		}
	}
}

// hamba/avro's avro.Parse caches named types process-wide by full name:
// the second version of a record would come back with the first one's
// named types. schema.Parse gives each schema its own cache.
func TestParseVersionsOfOneNameStayApart(t *testing.T) {
	const v1 = `{"type":"record","name":"Shipment","namespace":"com.acme","fields":[
		{"name":"id","type":"string"},
		{"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","SENT"]}}]}`
	const v2 = `{"type":"record","name":"Shipment","namespace":"com.acme","fields":[
		{"name":"id","type":"string"},
		{"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","SENT","LOST"]}},
		{"name":"carrier","type":"string","default":"dhl"}]}`
	s1, s2 := mustParse(t, v1), mustParse(t, v2)
	s1again := mustParse(t, v1)
	if s1.Equal(s2) || !s1.Equal(s1again) {
		t.Fatalf("v1 and v2 parse to the same schema")
	}
	if strings.Contains(s1.Canonical(), "carrier") || strings.Contains(s1.Canonical(), "LOST") {
		t.Errorf("v1 has v2's fields: %s", s1.Canonical())
	}
	if !strings.Contains(s2.Canonical(), "carrier") || !strings.Contains(s2.Canonical(), "LOST") {
		t.Errorf("v2 lacks its own fields: %s", s2.Canonical())
	}
	// Each encodes and decodes its own fields.
	ctx := context.Background()
	codec := schema.NewCodec(schema.StaticSource{1: s1, 2: s2})
	d2, err := codec.Encode(2, s2, map[string]any{"id": "s", "status": "LOST", "carrier": "ups"})
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := codec.DecodeGeneric(ctx, d2)
	if err != nil {
		t.Fatal(err)
	}
	if m := v.(map[string]any); m["status"] != "LOST" || m["carrier"] != "ups" {
		t.Errorf("v2 decoded to %v", m)
	}
	if _, err := codec.Encode(1, s1, map[string]any{"id": "s", "status": "LOST"}); err == nil {
		t.Errorf("v1 accepted v2's enum symbol")
	}
}

func TestParseFile(t *testing.T) {
	fsys := fstest.MapFS{
		"events/order_placed.avsc": {Data: []byte(orderPlacedV1)},
		"events/broken.avsc":       {Data: []byte(`{"type":`)},
	}
	s, err := schema.ParseFile(fsys, "events/order_placed.avsc")
	if err != nil {
		t.Fatal(err)
	}
	if s.FullName() != "com.acme.orders.OrderPlaced" {
		t.Errorf("FullName = %q", s.FullName())
	}
	if _, err := schema.ParseFile(fsys, "events/missing.avsc"); err == nil {
		t.Errorf("missing file: no error")
	}
	if _, err := schema.ParseFile(fsys, "events/broken.avsc"); err == nil || !strings.Contains(err.Error(), "broken.avsc") {
		t.Errorf("broken file: %v; want an error naming the file", err)
	}
}

func TestMustParsePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Errorf("MustParse of a bad schema did not panic")
		}
	}()
	schema.MustParse(`{`)
}

func TestSubjectStrategies(t *testing.T) {
	s := mustParse(t, orderPlacedV1)
	for _, tt := range []struct {
		strategy schema.SubjectStrategy
		want     string
	}{
		{schema.TopicNameStrategy, "orders-value"},
		{schema.RecordNameStrategy, "com.acme.orders.OrderPlaced"},
		{schema.TopicRecordNameStrategy, "orders-com.acme.orders.OrderPlaced"},
	} {
		if got := tt.strategy("orders", s); got != tt.want {
			t.Errorf("strategy = %q; want %q", got, tt.want)
		}
	}
}
