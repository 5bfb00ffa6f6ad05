package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/choreokit/choreo/kafkatest"
)

// TestLoopbackHostGuard: on a loopback address the flows server answers
// loopback Host names and the allowed ones, and refuses any other (a DNS
// rebinding page) with 403 saying why; on another address it answers all.
func TestLoopbackHostGuard(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("page")) })
	loop := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	all := &net.TCPAddr{IP: net.IPv4zero, Port: 8080}
	for _, tc := range []struct {
		listen  net.Addr
		allowed []string
		host    string
		want    int
	}{
		{loop, nil, "127.0.0.1:8080", http.StatusOK},
		{loop, nil, "localhost:8080", http.StatusOK},
		{loop, nil, "LOCALHOST", http.StatusOK},
		{loop, nil, "[::1]:8080", http.StatusOK},
		{loop, nil, "127.1.2.3:8080", http.StatusOK},
		{loop, nil, "evil.example:8080", http.StatusForbidden},
		{loop, nil, "evil.example", http.StatusForbidden},
		{loop, nil, "10.0.0.5:8080", http.StatusForbidden},
		{loop, nil, "", http.StatusForbidden},
		{loop, []string{"flows.internal"}, "Flows.Internal:443", http.StatusOK},
		{loop, []string{"flows.internal"}, "evil.example:8080", http.StatusForbidden},
		{all, nil, "evil.example:8080", http.StatusOK},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Host = tc.host
		loopbackHostGuard(tc.listen, tc.allowed, ok).ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("listening on %v, allowed %v, Host %q: status %d; want %d", tc.listen, tc.allowed, tc.host, rec.Code, tc.want)
		}
		if tc.want == http.StatusForbidden && !strings.Contains(rec.Body.String(), "--allow-host") {
			t.Errorf("Host %q refused with %q; want it to say how to allow it", tc.host, rec.Body.String())
		}
	}
}

// TestFlowsRefusesAForeignHost: `choreo flows` on its loopback default
// answers its own address and refuses a request naming another site, as
// a DNS-rebinding page's requests do; --allow-host lets a name through.
func TestFlowsRefusesAForeignHost(t *testing.T) {
	c := kafkatest.New(t)
	url := startFlows(t, "--brokers", strings.Join(c.Seeds(), ","), "--data-dir", t.TempDir(), "--database-url", "",
		"--group", kafkatest.Group(t), "--topics", "^nothing-to-index$", "--allow-host", "flows.internal")
	get := func(host string) int {
		req, err := http.NewRequest(http.MethodGet, url+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for host, want := range map[string]int{"": http.StatusOK, "flows.internal": http.StatusOK, "evil.example": http.StatusForbidden} {
		if got := get(host); got != want {
			t.Errorf("GET /healthz with Host %q: %d; want %d", host, got, want)
		}
	}
}
