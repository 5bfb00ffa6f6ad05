package consumer

import (
	"testing"
	"time"
)

func TestParseTimeMatchesTimeParse(t *testing.T) {
	for _, s := range []string{
		"2026-11-28T05:15:00Z",
		"2026-11-28T05:15:00.1Z",
		"2026-11-28T05:15:00.123456789Z",
		"2026-11-28T05:15:00.000000001Z",
		"1999-12-31T23:59:59.5Z",
		"2026-11-28T05:15:00+01:00",
		"2026-11-28T05:15:00.25-07:30",
		"2024-02-29T00:00:00Z",
	} {
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		got, err := parseTime(s)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "yesterday", "2026-13-01T00:00:00Z", "2026-04-31T00:00:00Z", "2023-02-29T00:00:00Z",
		"2026-11-28T25:00:00Z", "2026-11-28T05:15:00.Z", "2026-11-28T05:15:0aZ", "2026-11-28 05:15:00Z"} {
		if got, err := parseTime(s); err == nil {
			t.Errorf("parseTime(%q) = %v; want an error", s, got)
		}
	}
	now := time.Now().UTC()
	if got, err := parseTime(now.Format(time.RFC3339Nano)); err != nil || !got.Equal(now) {
		t.Errorf("round trip of %v: %v, %v", now, got, err)
	}
}

func FuzzParseTime(f *testing.F) {
	f.Add("2026-11-28T05:15:00.123Z")
	f.Add("2026-11-28T05:15:00+01:00")
	f.Fuzz(func(t *testing.T, s string) {
		want, werr := time.Parse(time.RFC3339Nano, s)
		got, gerr := parseTime(s)
		if gerr == nil && werr == nil && !got.Equal(want) {
			t.Fatalf("parseTime(%q) = %v; time.Parse says %v", s, got, want)
		}
		if gerr == nil && werr != nil {
			t.Fatalf("parseTime(%q) accepted what time.Parse refuses (%v)", s, werr)
		}
	})
}
