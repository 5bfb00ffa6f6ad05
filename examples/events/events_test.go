package events_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/choreokit/choreo/examples/events"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/schema/registry"
)

// avsc is the part of a schema file the tests look at.
type avsc struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Doc       string `json:"doc"`
	Fields    []struct {
		Name    string          `json:"name"`
		Doc     string          `json:"doc"`
		Default json.RawMessage `json:"default"`
	} `json:"fields"`
}

func parseAvsc(t *testing.T, text string) avsc {
	t.Helper()
	var a avsc
	if err := json.Unmarshal([]byte(text), &a); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	return a
}

// v1 returns the text of version 1 of ev's schema, from testdata/v1.
func v1(t *testing.T, ev schema.Event) string {
	t.Helper()
	name := ev.AvroSchema().FullName()
	files, err := filepath.Glob("testdata/v1/*.avsc")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s, err := schema.Parse(string(b))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if s.FullName() == name {
			return string(b)
		}
	}
	t.Fatalf("no version 1 of %s in testdata/v1", name)
	return ""
}

func TestSchemasAreNamespacedAndDocumented(t *testing.T) {
	seen := map[string]bool{}
	for _, ev := range events.All() {
		s := ev.AvroSchema()
		a := parseAvsc(t, s.Text())
		goName := reflect.TypeOf(ev).Name()
		if a.Name != goName {
			t.Errorf("%T: schema name %q; want the Go type's name %q", ev, a.Name, goName)
		}
		if !strings.HasPrefix(a.Namespace, "shop.") {
			t.Errorf("%s: namespace %q; want shop.<aggregate>", s.FullName(), a.Namespace)
		}
		if a.Doc == "" {
			t.Errorf("%s: no doc", s.FullName())
		}
		for _, f := range a.Fields {
			if f.Doc == "" {
				t.Errorf("%s: field %s has no doc", s.FullName(), f.Name)
			}
		}
		if seen[s.FullName()] {
			t.Errorf("%s listed twice by All", s.FullName())
		}
		seen[s.FullName()] = true
	}
	if len(seen) != 7 {
		t.Errorf("All returns %d event types; want 7", len(seen))
	}
}

// Every schema is version 1 plus one field with a default: FULL_TRANSITIVE
// compatible, so producers and consumers upgrade in any order. Without the
// default the same change is refused, so the check has teeth.
func TestVersion2IsCompatibleWithVersion1(t *testing.T) {
	for _, ev := range events.All() {
		s := ev.AvroSchema()
		t.Run(s.FullName(), func(t *testing.T) {
			old := v1(t, ev)
			added := newFields(parseAvsc(t, s.Text()), parseAvsc(t, old))
			if len(added) != 1 {
				t.Fatalf("v2 adds fields %v to v1; want exactly one", added)
			}
			if err := schema.CheckCompatibility(schema.CompatFullTransitive, s.Text(), []string{old}); err != nil {
				t.Errorf("v2 after v1: %v; want compatible", err)
			}
			noDefault := withoutDefault(t, s.Text(), added[0])
			if err := schema.CheckCompatibility(schema.CompatBackward, noDefault, []string{old}); err == nil {
				t.Errorf("v2 without the default of %s passed the BACKWARD check; want refused", added[0])
			}
		})
	}
}

// newFields returns the fields of v2 that v1 does not have.
func newFields(v2, v1 avsc) []string {
	had := map[string]bool{}
	for _, f := range v1.Fields {
		had[f.Name] = true
	}
	var out []string
	for _, f := range v2.Fields {
		if !had[f.Name] {
			if f.Default == nil {
				return append(out, f.Name+" (no default)")
			}
			out = append(out, f.Name)
		}
	}
	return out
}

// withoutDefault returns the schema text with field's default removed.
func withoutDefault(t *testing.T, text, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(text), &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range m["fields"].([]any) {
		if f := f.(map[string]any); f["name"] == field {
			delete(f, "default")
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// orderPlacedV1 is how a service built before v2 declared OrderPlaced.
type orderPlacedV1 struct {
	OrderID     string `avro:"order_id"`
	Customer    string `avro:"customer"`
	AmountCents int64  `avro:"amount_cents"`
}

// Through a registry that checks compatibility (the embedded one, as
// `choreo dev` serves it): v2 registers after v1 under the subject the
// services use, an event written with v1 reads as v2 with the default, and
// one written with v2 reads as v1.
func TestEvolutionThroughRegistry(t *testing.T) {
	ctx := context.Background()
	rs, err := registry.New()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rs)
	defer srv.Close()
	reg, err := schema.NewRegistry([]string{srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	codec := schema.NewCodec(reg)

	s1, err := schema.Parse(v1(t, events.OrderPlaced{}))
	if err != nil {
		t.Fatal(err)
	}
	s2 := events.OrderPlaced{}.AvroSchema()
	subject := schema.TopicRecordNameStrategy(events.TopicOrders, s2)
	if subject != "orders-shop.orders.OrderPlaced" {
		t.Errorf("subject %q; want orders-shop.orders.OrderPlaced", subject)
	}
	id1, err := reg.Register(ctx, subject, s1)
	if err != nil {
		t.Fatalf("register v1: %v", err)
	}
	id2, err := reg.Register(ctx, subject, s2)
	if err != nil {
		t.Fatalf("register v2 after v1: %v", err)
	}
	if id1 == id2 {
		t.Fatalf("v1 and v2 got the same id %d", id1)
	}

	old, err := codec.Encode(id1, s1, orderPlacedV1{OrderID: "o-1", Customer: "ada@example.com", AmountCents: 1999})
	if err != nil {
		t.Fatal(err)
	}
	var got events.OrderPlaced
	if _, err := codec.Decode(ctx, old, s2, &got); err != nil {
		t.Fatalf("v1 event read with v2: %v", err)
	}
	want := events.OrderPlaced{OrderID: "o-1", Customer: "ada@example.com", AmountCents: 1999, Currency: "EUR"}
	if got != want {
		t.Errorf("v1 event read with v2: %+v; want %+v", got, want)
	}

	cur, err := codec.Encode(id2, s2, events.OrderPlaced{OrderID: "o-2", Customer: "bob@example.com", AmountCents: 500, Currency: "CHF"})
	if err != nil {
		t.Fatal(err)
	}
	var back orderPlacedV1
	if _, err := codec.Decode(ctx, cur, s1, &back); err != nil {
		t.Fatalf("v2 event read with v1: %v", err)
	}
	if back != (orderPlacedV1{OrderID: "o-2", Customer: "bob@example.com", AmountCents: 500}) {
		t.Errorf("v2 event read with v1: %+v", back)
	}
}
