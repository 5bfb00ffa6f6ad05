package consumer

import (
	"fmt"
	"testing"
	"time"
)

func TestRetryTopicTier(t *testing.T) {
	for _, tc := range []struct {
		group, name string
		tier        int // 0: not a retry topic of group
	}{
		{"pay", "pay.retry.1-10s", 1},
		{"pay", "pay.retry.2-1m", 2},
		{"pay", "pay.retry.3-1h30m", 3},
		{"pay", "pay.retry.12-1500ms", 12},
		{"pay.svc", "pay.svc.retry.1-10s", 1},
		{"pay", "pay.dlq", 0},
		{"pay", "payments.retry.1-10s", 0},
		{"pay", "pay-2.retry.1-10s", 0},
		{"pay.svc", "payXsvc.retry.1-10s", 0}, // the dot is not a wildcard
		// Group pay.retry.1-10s's own retry topic is not pay's.
		{"pay", "pay.retry.1-10s.retry.1-10s", 0},
		{"pay", "pay.retry.2.retry.1-10s", 0},
		{"pay", "pay.retry.0-10s", 0},
		{"pay", "pay.retry.01-10s", 0},
		{"pay", "pay.retry.+1-10s", 0},
		{"pay", "pay.retry.1-10", 0},
		{"pay", "pay.retry.1-0s", 0},
		{"pay", "pay.retry.1-1.5s", 0}, // retryTopicName writes 1500ms
		{"pay", "pay.retry.1-60s", 0},  // … and 1m
		{"pay", "pay.retry.1-", 0},
		{"pay", "pay.retry.1-10s-x", 0},
	} {
		tier, ok := retryTopicTier(tc.group, tc.name)
		if ok != (tc.tier > 0) || tier != tc.tier {
			t.Errorf("retryTopicTier(%q, %q) = %d, %v; want %d, %v", tc.group, tc.name, tier, ok, tc.tier, tc.tier > 0)
		}
	}
	// Every name retryTopicName writes is recognised.
	for i, d := range []time.Duration{time.Millisecond, 999 * time.Millisecond, 1500 * time.Millisecond, time.Second,
		90 * time.Second, time.Hour, time.Hour + time.Second, 36 * time.Hour} {
		name := retryTopicName("g.x_y-z", i+1, d)
		if tier, ok := retryTopicTier("g.x_y-z", name); !ok || tier != i+1 {
			t.Errorf("retryTopicTier(%q) = %d, %v; want %d, true", name, tier, ok, i+1)
		}
	}
}

func TestOldRetryTopics(t *testing.T) {
	current := map[string]int{"pay.retry.1-5s": 1}
	names := []string{"pay.retry.1-5s", "pay.retry.1-10s", "pay.retry.3-10m", "pay.dlq", "orders",
		"pay.retry.1-10s.retry.1-10s", "payments.retry.1-10s", "pay.retry.2-1m"}
	got := oldRetryTopics("pay", names, current, []string{"orders", "pay.retry.2-1m"}, []string{"pay.dlq", "pay.retry.1-5s"})
	if want := "map[pay.retry.1-10s:1 pay.retry.3-10m:3]"; fmt.Sprint(got) != want {
		t.Errorf("oldRetryTopics = %v; want %s", got, want)
	}
}
