package consumer_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/kafkatest"
)

// TestProbeHandlers: the readiness handler answers 503 with the reason
// before the consumer joins and 200 once it has; the liveness handler 200
// while it runs and 503 once Run returned.
func TestProbeHandlers(t *testing.T) {
	h := newHarness(t, 1)
	c := h.consumer(kafkatest.Group(t))
	consumer.Handle(c, h.topic, func(context.Context, consumer.Event[OrderPlaced]) error { return nil })
	get := func(handler http.Handler) (int, string) {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get(c.ReadyHandler()); code != http.StatusServiceUnavailable || !strings.Contains(body, "not a member") {
		t.Fatalf("readyz before Run = %d %q; want 503 with the reason", code, body)
	}
	stop := running(t, c)
	eventually(t, 30*time.Second, "ready", func() bool { code, _ := get(c.ReadyHandler()); return code == http.StatusOK })
	if code, body := get(c.LiveHandler()); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("healthz while running = %d %q; want 200 ok", code, body)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(c.LiveHandler()); code != http.StatusServiceUnavailable {
		t.Fatalf("healthz after Run = %d; want 503", code)
	}
}
