package choreo_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/choreokit/choreo"
)

func TestDerivedIDNamespaceIsTheUUIDv5OfItsURL(t *testing.T) {
	want := uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/choreokit/choreo#derived-event-id")).String()
	if choreo.DerivedIDNamespace != want {
		t.Fatalf("DerivedIDNamespace %s; want %s", choreo.DerivedIDNamespace, want)
	}
}

func TestDerivedIDIsStableUUIDv5(t *testing.T) {
	const parent, group, typ = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "payment-service", "choreo.test.PaymentRequested"
	// Computed independently (Python: uuid.uuid5(namespace, name)); a change
	// here changes the ids of every event published from a handler, which
	// breaks deduplication across an upgrade: never change it.
	const golden = "12524042-2232-5dd1-8d84-5af6bbb540ca"
	if got := choreo.DerivedID(parent, group, typ, 0); got != golden {
		t.Fatalf("DerivedID = %s; want %s", got, golden)
	}
	ns := uuid.MustParse(choreo.DerivedIDNamespace)
	cases := []struct {
		parent, group, typ string
		n                  int
	}{
		{parent, group, typ, 0},
		{parent, group, typ, 1},
		{parent, group, typ, 1000},
		{"", "", "", 0},
		{"not-a-uuid", "g:with,odd\x00chars", "a.B", 7},
	}
	for _, c := range cases {
		got := choreo.DerivedID(c.parent, c.group, c.typ, c.n)
		name := fmt.Sprintf("%d:%s,%d:%s,%d:%s,%d", len(c.parent), c.parent, len(c.group), c.group, len(c.typ), c.typ, c.n)
		if want := uuid.NewSHA1(ns, []byte(name)).String(); got != want {
			t.Errorf("DerivedID(%q, %q, %q, %d) = %s; want %s (uuid.NewSHA1)", c.parent, c.group, c.typ, c.n, got, want)
		}
		u, err := uuid.Parse(got)
		if err != nil || u.Version() != 5 || u.Variant() != uuid.RFC4122 || len(got) != 36 || got != u.String() {
			t.Errorf("%q: not a canonical lowercase UUIDv5 (%v, version %d, variant %v)", got, err, u.Version(), u.Variant())
		}
		if again := choreo.DerivedID(c.parent, c.group, c.typ, c.n); again != got {
			t.Errorf("DerivedID not stable: %s then %s", got, again)
		}
	}
}

func TestDerivedIDDiffersPerInput(t *testing.T) {
	base := choreo.DerivedID("p", "g", "t", 0)
	for name, id := range map[string]string{
		"parent":   choreo.DerivedID("q", "g", "t", 0),
		"group":    choreo.DerivedID("p", "h", "t", 0),
		"type":     choreo.DerivedID("p", "g", "u", 0),
		"position": choreo.DerivedID("p", "g", "t", 1),
		// Without the lengths these two would both be "pg" + "t".
		"boundary": choreo.DerivedID("pg", "", "t", 0),
	} {
		if id == base {
			t.Errorf("changing the %s kept the id %s", name, id)
		}
	}
	if a, b := choreo.DerivedID("pg", "", "t", 0), choreo.DerivedID("p", "g", "t", 0); a == b {
		t.Errorf("(pg, '') and (p, g) give the same id %s", a)
	}
	seen := map[string]bool{}
	for n := range 10_000 {
		id := choreo.DerivedID("p", "g", "t", n)
		if seen[id] {
			t.Fatalf("position %d repeats id %s", n, id)
		}
		seen[id] = true
	}
}

func TestNextIDInAndOutOfHandlerScope(t *testing.T) {
	// Outside a scope: UUIDv7, different every time.
	ctx := context.Background()
	a, b := choreo.NextID(ctx, "t"), choreo.NextID(ctx, "t")
	if u := uuid.MustParse(a); u.Version() != 7 || a == b {
		t.Errorf("outside a handler: %s, %s; want two different UUIDv7", a, b)
	}
	// Metadata alone (a first event continuing a transaction) is no scope.
	withMD := choreo.WithMetadata(ctx, choreo.Metadata{ID: "parent-1"})
	if u := uuid.MustParse(choreo.NextID(withMD, "t")); u.Version() != 7 {
		t.Errorf("metadata without a scope gave version %d; want 7", u.Version())
	}
	if got := choreo.WithHandlerScope(ctx, "g"); got != ctx {
		t.Errorf("WithHandlerScope without metadata changed the context")
	}

	// One invocation: positions 0, 1, 2 across types, and contexts derived
	// from the scope share its counter.
	invocation := func() []string {
		sc := choreo.WithHandlerScope(withMD, "g")
		child, cancel := context.WithCancel(sc)
		defer cancel()
		return []string{choreo.NextID(sc, "A"), choreo.NextID(child, "B"), choreo.NextID(sc, "A")}
	}
	first := invocation()
	want := []string{choreo.DerivedID("parent-1", "g", "A", 0), choreo.DerivedID("parent-1", "g", "B", 1), choreo.DerivedID("parent-1", "g", "A", 2)}
	if fmt.Sprint(first) != fmt.Sprint(want) {
		t.Fatalf("ids %v; want %v", first, want)
	}
	// A retry is a new invocation: the same ids again.
	if again := invocation(); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("retry ids %v; want %v", again, first)
	}

	// Concurrent publishes take distinct positions 0 … n-1.
	sc := choreo.WithHandlerScope(withMD, "g")
	var mu sync.Mutex
	got := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				id := choreo.NextID(sc, "A")
				mu.Lock()
				got[id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for n := range 800 {
		if !got[choreo.DerivedID("parent-1", "g", "A", n)] {
			t.Fatalf("position %d not taken by any of 800 concurrent publishes", n)
		}
	}
}
