package choreo_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/choreokit/choreo"
)

func TestNewIDIsUUIDv7(t *testing.T) {
	before := time.Now().Add(-time.Millisecond)
	ids := make([]string, 0, 1000)
	for range 1000 {
		ids = append(ids, choreo.NewID())
	}
	after := time.Now().Add(time.Millisecond)
	seen := map[string]bool{}
	for _, id := range ids {
		u, err := uuid.Parse(id)
		if err != nil || u.Version() != 7 || u.Variant() != uuid.RFC4122 || len(id) != 36 {
			t.Fatalf("%q: not a canonical UUIDv7 (%v, version %d, variant %v)", id, err, u.Version(), u.Variant())
		}
		sec, nsec := u.Time().UnixTime()
		ts := time.Unix(sec, nsec)
		if ts.Before(before.Truncate(time.Millisecond)) || ts.After(after) {
			t.Fatalf("%q: time %v outside [%v, %v]", id, ts, before, after)
		}
		if seen[id] {
			t.Fatalf("%q returned twice", id)
		}
		seen[id] = true
	}
}

func TestNewIDSortsByTimeAndIsUniqueAcrossGoroutines(t *testing.T) {
	a := choreo.NewID()
	time.Sleep(2 * time.Millisecond)
	b := choreo.NewID()
	if !sort.StringsAreSorted([]string{a, b}) {
		t.Errorf("%s then %s: a later id sorts first", a, b)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				id := choreo.NewID()
				mu.Lock()
				if seen[id] {
					t.Errorf("duplicate id %s", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func TestKinds(t *testing.T) {
	base := errors.New("boom")
	for _, tc := range []struct {
		name      string
		err       error
		kind      choreo.ErrorKind
		permanent bool
	}{
		{"nil", nil, "", false},
		{"plain", base, choreo.KindRetryable, false},
		{"permanent", choreo.Permanent(base), choreo.KindPermanent, true},
		{"wrapped permanent", fmt.Errorf("charge: %w", choreo.Permanent(base)), choreo.KindPermanent, true},
		{"joined", errors.Join(base, choreo.Errorf(choreo.KindTruncated, "short")), choreo.KindTruncated, true},
		{"kinded", choreo.Errorf(choreo.KindMissingHeader, "no %s", choreo.HeaderID), choreo.KindMissingHeader, true},
		{"explicit retryable", &choreo.Error{Kind: choreo.KindRetryable, Err: base}, choreo.KindRetryable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := choreo.KindOf(tc.err); got != tc.kind {
				t.Errorf("KindOf = %q; want %q", got, tc.kind)
			}
			if got := choreo.IsPermanent(tc.err); got != tc.permanent {
				t.Errorf("IsPermanent = %v; want %v", got, tc.permanent)
			}
		})
	}
	if choreo.Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
	p := choreo.Permanent(base)
	if !errors.Is(p, base) || p.Error() != "permanent: boom" {
		t.Errorf("Permanent(err): Is %v, text %q", errors.Is(p, base), p.Error())
	}
}

func TestMetadataTravelsInContext(t *testing.T) {
	if _, ok := choreo.MetadataFrom(context.Background()); ok {
		t.Fatal("empty context has metadata")
	}
	md := choreo.Metadata{ID: "e1", CorrelationID: "c1"}
	got, ok := choreo.MetadataFrom(choreo.WithMetadata(context.Background(), md))
	if !ok || got != md {
		t.Fatalf("MetadataFrom = %+v, %v; want %+v", got, ok, md)
	}
}

func BenchmarkNewID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = choreo.NewID()
	}
}
