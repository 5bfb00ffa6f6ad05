package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"
)

// loopbackHostGuard answers only requests whose Host names this machine's
// loopback (localhost, 127.0.0.0/8, ::1) or one of allowed, when the
// server listens on a loopback address; on any other address it lets
// every request through.
//
// A page on another site can re-resolve its own name to 127.0.0.1 (DNS
// rebinding): the browser then sends its requests to the local server with
// that site's name in Host and treats the answers as same-origin, so
// neither the same-origin policy nor an Origin check stops it from reading
// the page or posting a redrive. A server on loopback knows no such name.
// A proxy that forwards its own Host header needs that name in allowed.
func loopbackHostGuard(listen net.Addr, allowed []string, next http.Handler) http.Handler {
	tcp, ok := listen.(*net.TCPAddr)
	if !ok || !tcp.IP.IsLoopback() {
		return next
	}
	names := map[string]bool{}
	for _, a := range allowed {
		names[strings.ToLower(strings.TrimSpace(a))] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := requestHostname(r.Host)
		if host == "localhost" || names[host] {
			next.ServeHTTP(w, r)
			return
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			next.ServeHTTP(w, r)
			return
		}
		http.Error(w, fmt.Sprintf("choreo flows: Host %q is not this server's (it listens on %s, loopback only): a page of another site? A proxy that keeps its Host header needs --allow-host %s",
			r.Host, listen, host), http.StatusForbidden)
	})
}

// requestHostname returns the host name of a Host header, without port or
// IPv6 brackets, in lower case.
func requestHostname(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
}
