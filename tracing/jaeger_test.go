package tracing_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/tracing"
)

// EnvJaegerQueryURL names the Jaeger query API the end-to-end trace tests
// use (deploy/local/jaeger.sh start; http://127.0.0.1:16686).
const EnvJaegerQueryURL = "JAEGER_QUERY_URL"

var pingSchema = schema.MustParse(`{"type": "record", "name": "Ping", "namespace": "choreo.tracing.test",
  "fields": [{"name": "id", "type": "string"}]}`)

type ping struct {
	ID string `avro:"id"`
}

func (ping) AvroSchema() *schema.Schema { return pingSchema }

// jaegerTrace is the part of a trace in Jaeger's query API (GET
// /api/traces) the tests look at.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		Tags          []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// jaegerTraces polls Jaeger until it has a trace of service, or fails t.
func jaegerTraces(t *testing.T, base, service string) []jaegerTrace {
	t.Helper()
	u := base + "/api/traces?" + url.Values{"service": {service}, "limit": {"20"}, "lookback": {"1h"}}.Encode()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatalf("Jaeger query API at %s: %v", base, err)
		}
		var body struct {
			Data []jaegerTrace `json:"data"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK && len(body.Data) > 0 {
			return body.Data
		}
		if time.Now().After(deadline) {
			t.Fatalf("no trace of service %s in Jaeger after 30 s (status %d, decode error %v)", service, resp.StatusCode, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestJaegerShowsSendSpan publishes an event with the producer, traced with
// OTLP to a real Jaeger, and finds the send span there under the service
// name. It needs JAEGER_QUERY_URL (and the OTLP endpoint, by default
// http://127.0.0.1:4318): eval "$(deploy/local/jaeger.sh start)".
func TestJaegerShowsSendSpan(t *testing.T) {
	base := strings.TrimRight(os.Getenv(EnvJaegerQueryURL), "/")
	if base == "" {
		t.Skip("JAEGER_QUERY_URL is not set: run `eval \"$(deploy/local/jaeger.sh start)\"; export OTEL_EXPORTER_OTLP_ENDPOINT JAEGER_QUERY_URL=http://127.0.0.1:16686` to test against a real Jaeger")
	}
	endpoint := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	if endpoint == "" {
		endpoint = "http://127.0.0.1:4318"
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_METRICS_EXPORTER", "none") // Jaeger takes traces only
	t.Setenv("OTEL_SERVICE_NAME", "")
	t.Setenv("OTEL_TRACES_SAMPLER", "")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	service := fmt.Sprintf("choreo-e2e-%d", time.Now().UnixNano())
	shutdown, err := tracing.Setup(ctx, service)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	defer shutdown(context.Background())

	cluster := kafkatest.New(t)
	topic := cluster.Topic(t, 1)
	reg, err := schema.NewRegistry([]string{kafkatest.SchemaRegistry(t)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(ctx, connection.Config{Brokers: cluster.Seeds()}, reg, producer.Source(service))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	pub, err := p.Publish(ctx, topic, "ping-1", ping{ID: "ping-1"})
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := shutdown(ctx); err != nil { // flushes the batch to Jaeger
		t.Fatalf("shutdown (flush to %s): %v", endpoint, err)
	}

	// The trace id in the record's traceparent is the one Jaeger shows.
	cl := cluster.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	fs := cl.PollFetches(ctx)
	if fs.NumRecords() != 1 {
		t.Fatalf("consumed %d records; want 1 (errors %v)", fs.NumRecords(), fs.Errors())
	}
	tp := tracing.HeaderCarrier{Record: fs.Records()[0]}.Get(choreo.HeaderTraceParent)
	parts := strings.Split(tp, "-")
	if len(parts) != 4 {
		t.Fatalf("traceparent %q is not W3C", tp)
	}

	traces := jaegerTraces(t, base, service)
	if len(traces) != 1 {
		t.Fatalf("%d traces of %s in Jaeger; want 1", len(traces), service)
	}
	tr := traces[0]
	if tr.TraceID != parts[1] {
		t.Errorf("Jaeger trace %s; want the record's trace %s", tr.TraceID, parts[1])
	}
	if len(tr.Spans) != 1 {
		t.Fatalf("%d spans in the trace; want 1 (send)", len(tr.Spans))
	}
	s := tr.Spans[0]
	if want := "send " + topic; s.OperationName != want {
		t.Errorf("operation %q; want %q", s.OperationName, want)
	}
	if s.SpanID != parts[2] {
		t.Errorf("span %s; want the record's parent span %s", s.SpanID, parts[2])
	}
	if got := tr.Processes[s.ProcessID].ServiceName; got != service {
		t.Errorf("service %q; want %q", got, service)
	}
	tags := map[string]string{}
	for _, tag := range s.Tags {
		tags[tag.Key] = fmt.Sprint(tag.Value)
	}
	for k, v := range map[string]string{
		"span.kind":                   "producer",
		"messaging.system":            "kafka",
		"messaging.operation.name":    "send",
		"messaging.destination.name":  topic,
		"messaging.message.id":        pub.Metadata.ID,
		"messaging.kafka.message.key": "ping-1",
	} {
		if tags[k] != v {
			t.Errorf("tag %s = %q; want %q", k, tags[k], v)
		}
	}
}
