package dlq

import "testing"

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"", 4, ""},
		{"abc", 3, "abc"},
		{"abcd", 3, "abc"},
		{"aé", 2, "a"},   // é is 2 bytes: cutting inside it drops it
		{"aé", 3, "aé"},  // exactly
		{"€€", 5, "€"},   // € is 3 bytes
		{"€", 2, ""},     // nothing fits
		{"x€y", 4, "x€"}, // on the boundary
	} {
		if got := cut(tc.s, tc.n); got != tc.want {
			t.Errorf("cut(%q, %d) = %q; want %q", tc.s, tc.n, got, tc.want)
		}
	}
}
