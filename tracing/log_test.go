package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"testing/slogtest"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"

	"github.com/choreokit/choreo"
)

// logCtx is a context with a span, event metadata and a record position.
func logCtx() (context.Context, trace.SpanContext) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	ctx = choreo.WithMetadata(ctx, choreo.Metadata{ID: "ev-1", CorrelationID: "corr-1"})
	ctx = ContextWithRecord(ctx, &kgo.Record{Topic: "orders", Partition: 3, Offset: 1234})
	return ctx, sc
}

// logLines logs with fn into a JSON handler wrapped by NewLogHandler and
// returns the decoded lines.
func logLines(t *testing.T, fn func(*slog.Logger)) []map[string]any {
	t.Helper()
	var buf bytes.Buffer
	fn(slog.New(NewLogHandler(slog.NewJSONHandler(&buf, nil))))
	var out []map[string]any
	for line := range strings.Lines(buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func wantFields(t *testing.T, what string, m map[string]any, sc trace.SpanContext) {
	t.Helper()
	want := map[string]any{
		LogTraceID: sc.TraceID().String(), LogSpanID: sc.SpanID().String(),
		LogCorrelationID: "corr-1", LogEventID: "ev-1",
		LogTopic: "orders", LogPartition: float64(3), LogOffset: float64(1234),
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s: %s = %v; want %v (line %v)", what, k, m[k], v, m)
		}
	}
}

func TestLogHandlerAddsCorrelationFields(t *testing.T) {
	ctx, sc := logCtx()
	lines := logLines(t, func(l *slog.Logger) {
		l.InfoContext(ctx, "charged", "amount", 1999)
		l.Info("no context")
	})
	if len(lines) != 2 {
		t.Fatalf("%d lines; want 2", len(lines))
	}
	wantFields(t, "InfoContext", lines[0], sc)
	if lines[0]["msg"] != "charged" || lines[0]["amount"] != float64(1999) {
		t.Errorf("line %v; want msg and amount kept", lines[0])
	}
	if len(lines[1]) != 3 { // time, level, msg
		t.Errorf("line without context %v; want only time, level and msg", lines[1])
	}
}

func TestLogHandlerWithAttrsAndGroups(t *testing.T) {
	ctx, sc := logCtx()
	lines := logLines(t, func(l *slog.Logger) {
		l = l.With("service", "payment")
		l.InfoContext(ctx, "a")
		g := l.WithGroup("req").With("id", "r-1").WithGroup("db")
		g.InfoContext(ctx, "b", "rows", 2)
		g.Info("c", "rows", 3)
		l.WithGroup("").With().InfoContext(ctx, "d")
	})
	if len(lines) != 4 {
		t.Fatalf("%d lines; want 4", len(lines))
	}
	for i, m := range lines {
		if m["service"] != "payment" {
			t.Errorf("line %d: service = %v; want payment", i, m["service"])
		}
	}
	wantFields(t, "before groups", lines[0], sc)
	wantFields(t, "in groups (fields top level)", lines[1], sc)
	wantFields(t, "empty group and attrs", lines[3], sc)

	req, _ := lines[1]["req"].(map[string]any)
	db, _ := req["db"].(map[string]any)
	if req["id"] != "r-1" || db["rows"] != float64(2) {
		t.Errorf("line %v; want req.id=r-1 and req.db.rows=2", lines[1])
	}
	if _, ok := req[LogTraceID]; ok {
		t.Errorf("trace_id inside the group: %v", lines[1])
	}
	req, _ = lines[2]["req"].(map[string]any)
	db, _ = req["db"].(map[string]any)
	if req["id"] != "r-1" || db["rows"] != float64(3) || lines[2][LogTraceID] != nil {
		t.Errorf("line without context %v; want req.id, req.db.rows=3 and no trace_id", lines[2])
	}
}

func TestLogHandlerCorrelationFromBaggage(t *testing.T) {
	m, _ := baggage.NewMemberRaw(BaggageCorrelationID, "corr-9")
	bag, _ := baggage.New(m)
	ctx := baggage.ContextWithBaggage(context.Background(), bag)
	lines := logLines(t, func(l *slog.Logger) { l.InfoContext(ctx, "x") })
	if lines[0][LogCorrelationID] != "corr-9" || lines[0][LogEventID] != nil || lines[0][LogTraceID] != nil {
		t.Errorf("line %v; want correlation_id=corr-9 from baggage and nothing else added", lines[0])
	}
}

func TestLogHandlerRespectsLevel(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(NewLogHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctx, _ := logCtx()
	l.InfoContext(ctx, "hidden")
	if buf.Len() != 0 {
		t.Errorf("info logged at warn level: %s", buf.String())
	}
}

// TestLogHandlerConformance runs the standard library's handler test suite
// against the wrapper.
func TestLogHandlerConformance(t *testing.T) {
	var buf bytes.Buffer
	h := NewLogHandler(slog.NewJSONHandler(&buf, nil))
	results := func() []map[string]any {
		var ms []map[string]any
		for line := range bytes.Lines(buf.Bytes()) {
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatal(err)
			}
			ms = append(ms, m)
		}
		return ms
	}
	if err := slogtest.TestHandler(h, results); err != nil {
		t.Error(err)
	}
}

func BenchmarkLogHandler(b *testing.B) {
	ctx, _ := logCtx()
	for _, bc := range []struct {
		name string
		l    *slog.Logger
	}{
		{"plain", slog.New(slog.NewJSONHandler(discard{}, nil))},
		{"wrapped", slog.New(NewLogHandler(slog.NewJSONHandler(discard{}, nil)))},
		{"wrapped-group", slog.New(NewLogHandler(slog.NewJSONHandler(discard{}, nil))).WithGroup("g").With("a", 1)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.l.InfoContext(ctx, "handled", "amount", 1999)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
