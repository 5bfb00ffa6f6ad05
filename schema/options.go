package schema

import (
	"crypto/tls"
	"net/http"
	"time"
)

// RegistryOption configures a Registry.
type RegistryOption func(*registryOptions)

type registryOptions struct {
	basicAuth *[2]string
	bearer    string
	tls       *tls.Config
	client    *http.Client
	timeout   time.Duration
	userAgent string
}

// DefaultRegistryTimeout is the default time limit of one request to the
// registry.
const DefaultRegistryTimeout = 10 * time.Second

// BasicAuth sends HTTP basic authentication with every request (Confluent
// Cloud API key and secret, Karapace, Redpanda with auth …).
func BasicAuth(user, pass string) RegistryOption {
	return func(o *registryOptions) { o.basicAuth = &[2]string{user, pass} }
}

// BearerToken sends "Authorization: Bearer token" with every request.
func BearerToken(token string) RegistryOption {
	return func(o *registryOptions) { o.bearer = token }
}

// TLS sets the TLS configuration for https registry URLs (a private CA,
// client certificates). The HTTP client given with HTTPClient, if any, is
// not modified: a copy is.
func TLS(cfg *tls.Config) RegistryOption {
	return func(o *registryOptions) { o.tls = cfg }
}

// HTTPClient sets the HTTP client to use (default: a client of its own
// with a DefaultRegistryTimeout time limit). Retries, proxies and tracing
// can be added through its Transport. The client is not modified.
func HTTPClient(c *http.Client) RegistryOption {
	return func(o *registryOptions) { o.client = c }
}

// Timeout sets the time limit of one request to the registry (default
// DefaultRegistryTimeout); it overrides the Timeout of an HTTPClient. A
// limit of zero or less is ignored: a request without one could hang a
// consumer.
func Timeout(d time.Duration) RegistryOption {
	return func(o *registryOptions) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// UserAgent sets the User-Agent of requests (default "choreo").
func UserAgent(ua string) RegistryOption {
	return func(o *registryOptions) { o.userAgent = ua }
}
