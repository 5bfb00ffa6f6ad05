package schema

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hamba/avro/v2"
)

// Versions of one record, shop.Order, as a subject would see them evolve. All
// share the full name on purpose: that is what real evolution looks like,
// and what hamba/avro's name-keyed caches get wrong.
const (
	orderV1 = `{"type":"record","name":"Order","namespace":"shop","fields":[
		{"name":"id","type":"string"}]}`
	orderQtyDefault = `{"type":"record","name":"Order","namespace":"shop","fields":[
		{"name":"id","type":"string"},
		{"name":"qty","type":"int","default":0}]}`
	orderQtyNoDefault = `{"type":"record","name":"Order","namespace":"shop","fields":[
		{"name":"id","type":"string"},
		{"name":"qty","type":"int"}]}`
	orderQtyLong = `{"type":"record","name":"Order","namespace":"shop","fields":[
		{"name":"id","type":"string"},
		{"name":"qty","type":"long"}]}`
	orderRenamedWithAlias = `{"type":"record","name":"Order","namespace":"shop","fields":[
		{"name":"orderId","type":"string","aliases":["id"]}]}`

	statusAB = `{"type":"record","name":"Order","namespace":"shop","fields":[
		{"name":"status","type":{"type":"enum","name":"Status","symbols":["A","B"]}}]}`
	statusABC = `{"type":"record","name":"Order","namespace":"shop","fields":[
		{"name":"status","type":{"type":"enum","name":"Status","symbols":["A","B","C"]}}]}`
	statusABDefault = `{"type":"record","name":"Order","namespace":"shop","fields":[
		{"name":"status","type":{"type":"enum","name":"Status","symbols":["A","B"],"default":"A"}}]}`
)

func TestParseCompatibility(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    Compatibility
		wantErr bool
	}{
		{in: "NONE", want: CompatNone},
		{in: "backward", want: CompatBackward},
		{in: "Backward_Transitive", want: CompatBackwardTransitive},
		{in: "FORWARD", want: CompatForward},
		{in: " forward_transitive\n", want: CompatForwardTransitive},
		{in: "full", want: CompatFull},
		{in: "FULL_TRANSITIVE", want: CompatFullTransitive},
		{in: "", wantErr: true},
		{in: "BACKWARDS", wantErr: true},
		{in: "FULL TRANSITIVE", wantErr: true},
	} {
		got, err := ParseCompatibility(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseCompatibility(%q) = %q, nil; want an error", tt.in, got)
				continue
			}
			if !errors.Is(err, ErrUnknownCompatibility) {
				t.Errorf("ParseCompatibility(%q) error %v does not wrap ErrUnknownCompatibility", tt.in, err)
			}
			if !strings.Contains(err.Error(), "FULL_TRANSITIVE") {
				t.Errorf("ParseCompatibility(%q) error %q does not list the valid levels", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseCompatibility(%q) = %q, %v; want %q, nil", tt.in, got, err, tt.want)
		}
		if !got.Valid() {
			t.Errorf("%q.Valid() = false; want true", got)
		}
	}
	if Compatibility("backward").Valid() {
		t.Error(`Compatibility("backward").Valid() = true; want false (levels are upper case)`)
	}
}

// reason is the expected (existing index, direction) of one Incompatibility.
type reason struct {
	index int
	dir   Compatibility
}

func TestCheckCompatibility(t *testing.T) {
	for _, tt := range []struct {
		name      string
		level     Compatibility
		candidate string
		existing  []string
		want      []reason // nil: compatible
	}{
		// Adding a field.
		{"add field with default/backward", CompatBackward, orderQtyDefault, []string{orderV1}, nil},
		{"add field with default/forward", CompatForward, orderQtyDefault, []string{orderV1}, nil},
		{"add field with default/full", CompatFull, orderQtyDefault, []string{orderV1}, nil},
		{"add field without default/backward", CompatBackward, orderQtyNoDefault, []string{orderV1},
			[]reason{{0, CompatBackward}}},
		{"add field without default/forward", CompatForward, orderQtyNoDefault, []string{orderV1}, nil},
		{"add field without default/full", CompatFull, orderQtyNoDefault, []string{orderV1},
			[]reason{{0, CompatBackward}}},

		// Removing a field: fine for new readers; old readers need a default.
		{"remove field with default/backward", CompatBackward, orderV1, []string{orderQtyDefault}, nil},
		{"remove field with default/forward", CompatForward, orderV1, []string{orderQtyDefault}, nil},
		{"remove field without default/backward", CompatBackward, orderV1, []string{orderQtyNoDefault}, nil},
		{"remove field without default/forward", CompatForward, orderV1, []string{orderQtyNoDefault},
			[]reason{{0, CompatForward}}},
		{"remove field without default/full", CompatFull, orderV1, []string{orderQtyNoDefault},
			[]reason{{0, CompatForward}}},

		// Renaming with an alias: the new reader finds the old field.
		{"rename with alias/backward", CompatBackward, orderRenamedWithAlias, []string{orderV1}, nil},

		// Type promotion int -> long: a long reader reads int data, not
		// the other way round.
		{"int to long/backward", CompatBackward, orderQtyLong, []string{orderQtyNoDefault}, nil},
		{"int to long/forward", CompatForward, orderQtyLong, []string{orderQtyNoDefault},
			[]reason{{0, CompatForward}}},
		{"long to int/backward", CompatBackward, orderQtyNoDefault, []string{orderQtyLong},
			[]reason{{0, CompatBackward}}},
		{"long to int/forward", CompatForward, orderQtyNoDefault, []string{orderQtyLong}, nil},

		// Enum symbols.
		{"add symbol/backward", CompatBackward, statusABC, []string{statusAB}, nil},
		{"add symbol/forward", CompatForward, statusABC, []string{statusAB},
			[]reason{{0, CompatForward}}},
		{"add symbol/forward, old reader has enum default", CompatForward, statusABC, []string{statusABDefault}, nil},
		{"remove symbol/backward", CompatBackward, statusAB, []string{statusABC},
			[]reason{{0, CompatBackward}}},
		{"remove symbol/forward", CompatForward, statusAB, []string{statusABC}, nil},
		{"remove symbol/full", CompatFull, statusAB, []string{statusABC},
			[]reason{{0, CompatBackward}}},

		// Transitive against non-transitive: v3 reads v2 (qty present) but
		// not v1 (qty missing, and v3 has no default for it).
		{"three versions/backward", CompatBackward, orderQtyNoDefault,
			[]string{orderV1, orderQtyDefault}, nil},
		{"three versions/backward transitive", CompatBackwardTransitive, orderQtyNoDefault,
			[]string{orderV1, orderQtyDefault}, []reason{{0, CompatBackward}}},
		{"three versions/full transitive", CompatFullTransitive, orderQtyNoDefault,
			[]string{orderV1, orderQtyDefault}, []reason{{0, CompatBackward}}},
		// Forward transitive: v1 (no qty) and v2 (qty with default) both
		// read data without qty; v0 requires qty.
		{"three versions/forward", CompatForward, orderV1,
			[]string{orderQtyNoDefault, orderQtyDefault}, nil},
		{"three versions/forward transitive", CompatForwardTransitive, orderV1,
			[]string{orderQtyNoDefault, orderQtyDefault}, []reason{{0, CompatForward}}},

		// Every reason is reported, not only the first.
		{"every reason", CompatFullTransitive, orderQtyLong,
			[]string{orderV1, orderQtyNoDefault, orderQtyDefault},
			[]reason{{0, CompatBackward}, {1, CompatForward}, {2, CompatForward}}},

		// NONE accepts anything, and an empty history accepts anything.
		{"none", CompatNone, statusAB, []string{orderQtyNoDefault, statusABC}, nil},
		{"no existing schemas", CompatFullTransitive, orderQtyNoDefault, nil, nil},

		// Unrelated types.
		{"string to record/backward", CompatBackward, orderV1, []string{`"string"`},
			[]reason{{0, CompatBackward}}},
		{"string to bytes/backward", CompatBackward, `"bytes"`, []string{`"string"`}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckCompatibility(tt.level, tt.candidate, tt.existing)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("CheckCompatibility: got %v; want nil", err)
				}
				return
			}
			var ie *IncompatibleError
			if !errors.As(err, &ie) {
				t.Fatalf("CheckCompatibility: got %v (%T); want *IncompatibleError", err, err)
			}
			if !errors.Is(err, ErrIncompatibleSchema) {
				t.Errorf("%v does not wrap ErrIncompatibleSchema", err)
			}
			if len(ie.Reasons) != len(tt.want) {
				t.Fatalf("got reasons %q; want %v", ie.Reasons, tt.want)
			}
			for i, r := range ie.Reasons {
				w := tt.want[i]
				pos := fmt.Sprintf("existing schema #%d of %d", w.index+1, len(tt.existing))
				if !strings.HasPrefix(r, string(w.dir)+": ") || !strings.Contains(r, pos) {
					t.Errorf("reason %d is %q; want %s about %s", i, r, w.dir, pos)
				}
				if !strings.Contains(err.Error(), r) {
					t.Errorf("Error() %q does not contain reason %q", err, r)
				}
			}
		})
	}
}

func TestCheckCompatibilityErrorText(t *testing.T) {
	err := CheckCompatibility(CompatBackward, orderQtyNoDefault, []string{orderV1})
	want := "schema shop.Order is incompatible: " +
		"BACKWARD: the new schema cannot read data written with existing schema #1 of 1: " +
		"reader field qty is missing in writer schema and has no default"
	if err == nil || err.Error() != want {
		t.Errorf("got %v;\nwant %s", err, want)
	}
}

func TestCheckCompatibilityInvalid(t *testing.T) {
	for _, tt := range []struct {
		name      string
		level     Compatibility
		candidate string
		existing  []string
		wantIndex int
	}{
		{"candidate not JSON", CompatBackward, `{"type":`, []string{orderV1}, -1},
		{"candidate bare type name", CompatBackward, `string`, []string{orderV1}, -1},
		{"candidate empty", CompatBackward, "  ", []string{orderV1}, -1},
		{"candidate record without fields", CompatBackward, `{"type":"record","name":"R"}`, nil, -1},
		{"candidate unknown type", CompatBackward, `{"type":"record","name":"R","fields":[{"name":"a","type":"Nope"}]}`, nil, -1},
		{"candidate bad default", CompatBackward, `{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":"x"}]}`, nil, -1},
		{"candidate checked even for NONE", CompatNone, `{"type":"nope"}`, nil, -1},
		{"latest existing", CompatBackward, orderV1, []string{orderV1, `{]`}, 1},
		{"older existing, transitive", CompatForwardTransitive, orderV1, []string{`{]`, orderV1}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckCompatibility(tt.level, tt.candidate, tt.existing)
			var ie *InvalidSchemaError
			if !errors.As(err, &ie) {
				t.Fatalf("got %v (%T); want *InvalidSchemaError", err, err)
			}
			if ie.Index != tt.wantIndex {
				t.Errorf("got Index %d; want %d", ie.Index, tt.wantIndex)
			}
			if ie.Err == nil || errors.Unwrap(err) != ie.Err {
				t.Errorf("InvalidSchemaError does not wrap the parse error: %v", err)
			}
		})
	}

	// An older invalid schema is not looked at by a non-transitive level.
	if err := CheckCompatibility(CompatBackward, orderV1, []string{`{]`, orderV1}); err != nil {
		t.Errorf("non-transitive check parsed an older schema: %v", err)
	}

	err := CheckCompatibility(Compatibility("SIDEWAYS"), orderV1, nil)
	if !errors.Is(err, ErrUnknownCompatibility) {
		t.Errorf("unknown level: got %v; want an error wrapping ErrUnknownCompatibility", err)
	}
}

// TestCheckCompatibilitySameNameVersions guards against hamba/avro's two
// name- and fingerprint-keyed caches: every version of a subject has the
// same full name, and v2-with-default and v2-without-default have the same
// canonical form.
func TestCheckCompatibilitySameNameVersions(t *testing.T) {
	// Both orders: whichever is checked first must not decide the other.
	for range 2 {
		if err := CheckCompatibility(CompatBackward, orderQtyDefault, []string{orderV1}); err != nil {
			t.Errorf("v2 with default after v1: got %v; want nil", err)
		}
		if err := CheckCompatibility(CompatBackward, orderQtyNoDefault, []string{orderV1}); err == nil {
			t.Error("v2 without default after v1: got nil; want an incompatibility")
		}
	}

	// The process-wide cache knows shop.Order once anyone parsed it with
	// avro.Parse; a schema that only names it must still be invalid here.
	if _, err := avro.Parse(orderQtyNoDefault); err != nil {
		t.Fatal(err)
	}
	if _, err := avro.Parse(`"shop.Order"`); err != nil {
		t.Logf("hamba/avro no longer resolves names from its global cache: %v", err)
	}
	err := CheckCompatibility(CompatBackward, `"shop.Order"`, []string{orderV1})
	var ie *InvalidSchemaError
	if !errors.As(err, &ie) || ie.Index != -1 {
		t.Errorf(`candidate "shop.Order" (a name it does not define): got %v; want *InvalidSchemaError`, err)
	}
	err = CheckCompatibility(CompatBackward, orderV1, []string{`{"type":"record","name":"X","namespace":"shop","fields":[{"name":"o","type":"Order"}]}`})
	if !errors.As(err, &ie) || ie.Index != 0 {
		t.Errorf("existing schema naming an undefined type: got %v; want *InvalidSchemaError", err)
	}
}

// TestHambaSharedCompatibilityHazard documents why compatCanRead makes a new
// avro.SchemaCompatibility per comparison. If hamba/avro (or a fork) stops
// memoising by canonical fingerprint, this test only logs.
func TestHambaSharedCompatibilityHazard(t *testing.T) {
	parse := func(s string) avro.Schema {
		t.Helper()
		p, err := compatParse(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	v1, withDef, noDef := parse(orderV1), parse(orderQtyDefault), parse(orderQtyNoDefault)
	shared := avro.NewSchemaCompatibility()
	_ = shared.Compatible(withDef, v1)
	if shared.Compatible(noDef, v1) == nil {
		t.Log("hazard present: a shared avro.SchemaCompatibility calls v2-without-default compatible after checking v2-with-default")
	} else {
		t.Log("hazard absent in this hamba/avro version")
	}
	if _, ok := compatCanRead(noDef, v1); ok {
		t.Error("compatCanRead(v2 without default, v1) = ok; want incompatible")
	}
}

func TestNormalizedForm(t *testing.T) {
	norm := func(s string) string {
		t.Helper()
		n, err := NormalizedForm(s)
		if err != nil {
			t.Fatalf("NormalizedForm(%s): %v", s, err)
		}
		return n
	}
	reordered := `{ "fields": [ {"type": "string", "name": "id"} ],
		"namespace": "shop", "name": "Order", "type": "record" }`
	if a, b := norm(orderV1), norm(reordered); a != b {
		t.Errorf("white space and key order changed the normalized form:\n%s\n%s", a, b)
	}
	if a, b := norm(orderQtyDefault), norm(orderQtyNoDefault); a == b {
		t.Errorf("a default did not change the normalized form: %s", a)
	}
	if a, b := norm(statusAB), norm(statusABDefault); a == b {
		t.Errorf("an enum default did not change the normalized form: %s", a)
	}
	if got := norm(`"string"`); got != `"string"` {
		t.Errorf(`NormalizedForm("string") = %s; want "string"`, got)
	}
	_, err := NormalizedForm(`{"type":"record","name":"R","fields":[{"name":"a","type":"Missing"}]}`)
	var ie *InvalidSchemaError
	if !errors.As(err, &ie) || ie.Index != -1 {
		t.Errorf("invalid schema: got %v; want *InvalidSchemaError with Index -1", err)
	}
}
