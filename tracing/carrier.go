package tracing

import (
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/propagation"
)

// HeaderCarrier adapts a record's headers to the OpenTelemetry
// TextMapCarrier, so a propagator can inject into and extract from them.
// Set replaces every header of that key; Get returns the last one.
type HeaderCarrier struct {
	Record *kgo.Record
}

var _ propagation.TextMapCarrier = HeaderCarrier{}

// Get returns the value of the last header named key, or "".
func (c HeaderCarrier) Get(key string) string {
	hs := c.Record.Headers
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].Key == key {
			return string(hs[i].Value)
		}
	}
	return ""
}

// Set writes the header key, replacing any header of that name.
func (c HeaderCarrier) Set(key, value string) {
	hs := c.Record.Headers
	kept := hs[:0]
	for _, h := range hs {
		if h.Key != key {
			kept = append(kept, h)
		}
	}
	c.Record.Headers = append(kept, kgo.RecordHeader{Key: key, Value: []byte(value)})
}

// Keys returns the names of the record's headers.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c.Record.Headers))
	for _, h := range c.Record.Headers {
		keys = append(keys, h.Key)
	}
	return keys
}
