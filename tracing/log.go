package tracing

import (
	"context"
	"log/slog"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"

	"github.com/choreokit/choreo"
)

// Position is where a record sits in Kafka.
type Position = choreo.Position

type positionKey struct{}

// ContextWithRecord returns a context that carries rec's topic, partition
// and offset, which the log handler from NewLogHandler adds to every record
// logged with it. StartProcess calls it already. The record itself is not
// retained.
func ContextWithRecord(ctx context.Context, rec *kgo.Record) context.Context {
	return context.WithValue(ctx, positionKey{}, Position{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset})
}

// PositionFrom returns the position stored by ContextWithRecord, or else
// the one of a choreo.Handling (choreo.RecordFrom), and false when ctx
// carries none.
func PositionFrom(ctx context.Context) (Position, bool) {
	if p, ok := ctx.Value(positionKey{}).(Position); ok {
		return p, true
	}
	return choreo.RecordFrom(ctx)
}

// Keys of the attributes the log handler from NewLogHandler adds.
const (
	LogTraceID       = "trace_id"       // W3C trace id of the span in the context, 32 hex digits
	LogSpanID        = "span_id"        // its span id, 16 hex digits
	LogCorrelationID = "correlation_id" // choreo.Metadata.CorrelationID, else the correlation_id baggage member
	LogEventID       = "event_id"       // choreo.Metadata.ID: the ce_id of the event being handled
	LogTopic         = "topic"          // from ContextWithRecord
	LogPartition     = "partition"      // from ContextWithRecord
	LogOffset        = "offset"         // from ContextWithRecord
)

// NewLogHandler returns a slog.Handler that adds the correlation fields of
// the context to each record and passes it on to inner: trace_id and
// span_id of the span in the context (when it is valid), correlation_id and
// event_id of the event being handled (choreo.MetadataFrom; without
// metadata the correlation_id baggage member is used), and topic, partition
// and offset (ContextWithRecord). Fields the context does not have are left
// out, so records logged without a context (slog.Info rather than
// slog.InfoContext) pass through unchanged.
//
// The fields are always top level, also under WithGroup, so that log
// pipelines find them in one place: the handler keeps the groups and
// attributes given after the first group and re-applies them after adding
// the fields (which costs a little per record, only when a group is open).
func NewLogHandler(inner slog.Handler) slog.Handler {
	return &logHandler{base: inner, full: inner}
}

// logHandler adds correlation fields. base is inner with the attributes
// given before the first group; tail holds what came after, in order; full
// is base with tail applied.
type logHandler struct {
	base slog.Handler
	tail []handlerOp
	full slog.Handler
}

// handlerOp is one WithGroup (group != "") or WithAttrs call.
type handlerOp struct {
	group string
	attrs []slog.Attr
}

// Enabled reports whether the inner handler handles records of level.
func (h *logHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.full.Enabled(ctx, level)
}

// Handle adds the context's correlation fields to r and passes it on.
func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx == nil {
		return h.full.Handle(ctx, r)
	}
	var buf [7]slog.Attr
	fields := contextFields(ctx, buf[:0])
	if len(fields) == 0 {
		return h.full.Handle(ctx, r)
	}
	if len(h.tail) == 0 {
		r = r.Clone()
		r.AddAttrs(fields...)
		return h.full.Handle(ctx, r)
	}
	inner := h.base.WithAttrs(fields)
	for _, op := range h.tail {
		if op.group != "" {
			inner = inner.WithGroup(op.group)
		} else {
			inner = inner.WithAttrs(op.attrs)
		}
	}
	return inner.Handle(ctx, r)
}

// WithAttrs returns a handler whose records also have attrs.
func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	if len(h.tail) == 0 {
		base := h.base.WithAttrs(attrs)
		return &logHandler{base: base, full: base}
	}
	return &logHandler{
		base: h.base,
		tail: append(slices.Clip(h.tail), handlerOp{attrs: slices.Clone(attrs)}),
		full: h.full.WithAttrs(attrs),
	}
}

// WithGroup returns a handler that puts the attributes that follow in the
// group name; the correlation fields stay top level.
func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &logHandler{
		base: h.base,
		tail: append(slices.Clip(h.tail), handlerOp{group: name}),
		full: h.full.WithGroup(name),
	}
}

// contextFields appends the correlation fields ctx has to dst.
func contextFields(ctx context.Context, dst []slog.Attr) []slog.Attr {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		dst = append(dst,
			slog.String(LogTraceID, sc.TraceID().String()),
			slog.String(LogSpanID, sc.SpanID().String()),
		)
	}
	if md, ok := choreo.MetadataFrom(ctx); ok {
		if md.CorrelationID != "" {
			dst = append(dst, slog.String(LogCorrelationID, md.CorrelationID))
		}
		if md.ID != "" {
			dst = append(dst, slog.String(LogEventID, md.ID))
		}
	} else if cid := baggage.FromContext(ctx).Member(BaggageCorrelationID).Value(); cid != "" {
		dst = append(dst, slog.String(LogCorrelationID, cid))
	}
	if p, ok := PositionFrom(ctx); ok {
		dst = append(dst,
			slog.String(LogTopic, p.Topic),
			slog.Int(LogPartition, int(p.Partition)),
			slog.Int64(LogOffset, p.Offset),
		)
	}
	return dst
}
