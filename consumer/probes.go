package consumer

import (
	"fmt"
	"net/http"
)

// LiveHandler serves Live for a liveness probe: 200 "ok", or 503 once the
// consumer has stopped or its poll loop has not moved for a minute.
func (c *Consumer) LiveHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !c.Live() {
			http.Error(w, "consumer stopped", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

// ReadyHandler serves CheckReady for a readiness probe: 200 "ready", or
// 503 with the reason the consumer is not ready.
func (c *Consumer) ReadyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if err := c.CheckReady(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
}
