package consumer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/tracing"
)

// readOnlyRegistry returns a client of the harness's registry through a
// proxy that refuses to register schemas (POST /subjects/{subject}/versions)
// with 403, as a production registry refuses a service's credentials;
// look-ups and reads pass.
func (h *harness) readOnlyRegistry(t *testing.T) *schema.Registry {
	t.Helper()
	target, err := url.Parse(h.regURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/subjects/") && strings.HasSuffix(r.URL.Path, "/versions") {
			w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"error_code":40301,"message":"User is denied operation Write on Subject"}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	reg, err := schema.NewRegistry([]string{srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// With a registry that does not let the service register schemas and the
// envelope schema registered ahead of time, Production dead-letters.
func TestProductionDeadLettersWithReadOnlyRegistry(t *testing.T) {
	h := newHarness(t, 1)
	ctx := context.Background()
	group := kafkatest.Group(t)
	if _, err := h.reg.Register(ctx, dlq.Topic(group)+"-value", dlq.Schema()); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"permanent", "ok", "ok"} {
		if _, err := h.prod.Publish(ctx, h.topic, "k", order(id, i)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := consumer.New(h.conn, h.readOnlyRegistry(t), group, consumer.Production(), consumer.BlockingRetries(),
		consumer.CommitInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	consumer.Handle(c, h.topic, behaviour)
	stop := running(t, c)
	eventually(t, 20*time.Second, "the dead letter written and the good records handled", func() bool {
		s := c.Stats()
		return s.DeadLettered == 1 && s.Handled == 2
	})
	eventually(t, 10*time.Second, "commit past the poison record", func() bool { return h.committed(group)[0] == 3 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := c.Stats().WriteFailures; n != 0 {
		t.Errorf("%d failed dead-letter writes; want none", n)
	}
	dls := h.readDeadLetters(t, dlq.Topic(group), 1, 5*time.Second)
	if len(dls) != 1 || dls[0].Original.Offset != 0 || dls[0].Error.Kind != choreo.KindPermanent {
		t.Fatalf("dead letters %v; want one, of offset 0, kind permanent", dls)
	}
}

// Without the envelope schema in the registry, Production fails Run at
// start-up, naming the subject, and never joins the group.
func TestProductionFailsAtStartWithoutEnvelopeSchema(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	c, err := consumer.New(h.conn, h.readOnlyRegistry(t), group, consumer.Production())
	if err != nil {
		t.Fatal(err)
	}
	consumer.Handle(c, h.topic, func(context.Context, consumer.Event[OrderPlaced]) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = c.Run(ctx)
	subject := dlq.Topic(group) + "-value"
	switch {
	case ctx.Err() != nil:
		t.Fatalf("Run ran until its context ended (%v); want it to fail at start-up", err)
	case err == nil:
		t.Fatal("Run returned nil; want an error naming the missing envelope schema")
	case !errors.Is(err, schema.ErrNotRegistered) || !strings.Contains(err.Error(), subject):
		t.Fatalf("Run: %v; want an error wrapping schema.ErrNotRegistered that names %s", err, subject)
	}
	groups, err := h.cluster.Admin().ListGroups(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := groups[group]; ok {
		t.Errorf("group %s exists; want Run to fail before joining it", group)
	}
}

// A value far over MaxValueBytes (2 MiB against 64 KiB, so the envelope
// is over the dead-letter topic's limit too) is dead-lettered cut, with
// its size and hash, and the partition moves on.
func TestTooLargeValueIsDeadLetteredCut(t *testing.T) {
	h := newHarness(t, 1)
	ctx := context.Background()
	topic := kafkatest.Name(t, "big")
	maxBytes := strconv.Itoa(4 << 20)
	resp, err := h.cluster.Admin().CreateTopic(ctx, 1, 1, map[string]*string{"max.message.bytes": &maxBytes}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = h.cluster.Admin().DeleteTopics(context.Background(), topic) })
	h.topic = topic // for h.committed

	rec, _, err := h.prod.Record(ctx, topic, "k", order("ok", 0))
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 2<<20)
	_, _ = rand.Read(big) // incompressible
	rec.Value = big
	cl := h.cluster.Client(t, kgo.ProducerBatchMaxBytes(4<<20))
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatalf("produce 2 MiB record: %v", err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := h.prod.Publish(ctx, topic, "k", order("ok", i)); err != nil {
			t.Fatal(err)
		}
	}

	group := kafkatest.Group(t)
	c := h.consumer(group, consumer.MaxValueBytes(64<<10), consumer.BlockingRetries(), consumer.StuckAfter(time.Hour))
	consumer.Handle(c, topic, behaviour)
	stop := running(t, c)
	eventually(t, 20*time.Second, "the dead letter written and the good records behind it handled", func() bool {
		s := c.Stats()
		return s.DeadLettered == 1 && s.Handled == 3
	})
	eventually(t, 10*time.Second, "commit past the large record", func() bool { return h.committed(group)[0] == 4 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := c.Stats().WriteFailures; n != 0 {
		t.Errorf("%d failed dead-letter writes; want none", n)
	}
	dls := h.readDeadLetters(t, dlq.Topic(group), 1, 5*time.Second)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters; want 1", len(dls))
	}
	o, sum := dls[0].Original, sha256.Sum256(big)
	switch {
	case dls[0].Error.Kind != choreo.KindTooLarge || o.Offset != 0:
		t.Errorf("dead letter of offset %d, kind %s; want 0, too_large", o.Offset, dls[0].Error.Kind)
	case !o.ValueTruncated || o.ValueSize == nil || *o.ValueSize != int64(len(big)) || !bytes.Equal(o.ValueSHA256, sum[:]):
		t.Errorf("truncated %v, size %v, sha256 %x; want true, %d, %x", o.ValueTruncated, o.ValueSize, o.ValueSHA256, len(big), sum)
	case len(o.Value) == 0 || !bytes.HasPrefix(big, o.Value) || len(o.Value) > 64<<10+1<<20:
		t.Errorf("kept %d bytes; want a prefix of the value within the dead-letter topic's limit", len(o.Value))
	case header(&kgo.Record{Headers: headersOf(o)}, choreo.HeaderID) != header(rec, choreo.HeaderID):
		t.Errorf("ce_id not kept in the dead letter's headers")
	}
}

func headersOf(o dlq.Original) []kgo.RecordHeader {
	hs := make([]kgo.RecordHeader, len(o.Headers))
	for i, h := range o.Headers {
		hs[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
	}
	return hs
}

// logRecords keeps the messages of the records logged at error level.
type logRecords struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecords) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelError }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler            { return l }
func (l *logRecords) WithGroup(string) slog.Handler                 { return l }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.msgs = append(l.msgs, b.String())
	l.mu.Unlock()
	return nil
}

func (l *logRecords) matching(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, m := range l.msgs {
		if strings.Contains(m, s) {
			out = append(out, m)
		}
	}
	return out
}

// stuckGauge reads choreo.consumer.stuck_writes for topic.
func stuckGauge(t *testing.T, reader sdkmetric.Reader, topic string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if m.Name != tracing.MetricStuckWrites || !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				if v, _ := dp.Attributes.Value(tracing.MetricAttrTopic); v.AsString() == topic {
					n += dp.Value
				}
			}
		}
	}
	return n
}

// deleteDeadLetterTopic deletes the group's dead-letter topic (which a
// running consumer created at start-up, and does not create again), so
// that dead-letter writes fail.
func (h *harness) deleteDeadLetterTopic(t *testing.T, group string) {
	t.Helper()
	ctx := context.Background()
	if _, err := h.cluster.Admin().DeleteTopics(ctx, dlq.Topic(group)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "dead-letter topic deleted", func() bool {
		td, err := h.cluster.Admin().ListTopics(ctx, dlq.Topic(group))
		return err == nil && td[dlq.Topic(group)].Err != nil
	})
}

// limitDeadLetterTopic sets max.message.bytes of the group's dead-letter
// topic to n. At 64 bytes no dead letter fits: the broker refuses each
// write at once, as it would refuse one that is not authorized.
func (h *harness) limitDeadLetterTopic(t *testing.T, group string, n int) {
	t.Helper()
	h.limitTopic(t, dlq.Topic(group), n)
}

// limitTopic sets max.message.bytes of topic to n.
func (h *harness) limitTopic(t *testing.T, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v := strconv.Itoa(n)
	resps, err := h.cluster.Admin().AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &v}}, topic)
	if err == nil {
		_, err = resps.On(topic, nil)
	}
	if err != nil {
		t.Fatalf("set max.message.bytes of %s: %v", topic, err)
	}
}

// A dead letter that the broker refuses (its topic's limit is too small)
// makes the record stuck after StuckAfter: the consumer says so (not
// ready, the gauge, an error log line), keeps it uncommitted, and
// recovers once the write succeeds.
func TestStuckDeadLetterIsReported(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	metrics, err := tracing.NewMetrics(mp)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	ctx := context.Background()
	logs := &logRecords{}
	c := h.consumer(group, consumer.BlockingRetries(), consumer.StuckAfter(300*time.Millisecond),
		consumer.Metrics(metrics), consumer.Logger(slog.New(logs)))
	consumer.Handle(c, h.topic, behaviour)
	stop := running(t, c)
	eventually(t, 20*time.Second, "consumer ready", c.Ready)
	h.limitDeadLetterTopic(t, group, 64)
	for i, k := range []string{"a", "poison", "b"} {
		id := "ok"
		if k == "poison" {
			id = "permanent"
		}
		if _, err := h.prod.Publish(ctx, h.topic, k, order(id, i)); err != nil {
			t.Fatal(err)
		}
	}

	where := fmt.Sprintf("%s/0/1", h.topic)
	eventually(t, 20*time.Second, "the stuck record reported by CheckReady", func() bool {
		err := c.CheckReady()
		return err != nil && strings.Contains(err.Error(), where) && strings.Contains(err.Error(), "stuck")
	})
	if c.Ready() {
		t.Error("Ready with a stuck dead letter")
	}
	if n := stuckGauge(t, reader, h.topic); n != 1 {
		t.Errorf("%s = %d; want 1", tracing.MetricStuckWrites, n)
	}
	if got := logs.matching("stuck"); len(got) == 0 || !strings.Contains(got[0], dlq.Topic(group)) {
		t.Errorf("error log lines about the stuck record %q; want one naming the dead-letter topic", got)
	}
	if got := h.committed(group)[0]; got != 1 {
		t.Fatalf("committed %d while the dead letter cannot be written; want 1 (the stuck record)", got)
	}

	h.limitDeadLetterTopic(t, group, 1<<20) // the limit is raised
	eventually(t, 30*time.Second, "dead letter written", func() bool { return c.Stats().DeadLettered == 1 })
	eventually(t, 10*time.Second, "commit past the poison record", func() bool { return h.committed(group)[0] == 3 })
	if err := c.CheckReady(); err != nil {
		t.Errorf("CheckReady after the write succeeded: %v; want nil", err)
	}
	if n := stuckGauge(t, reader, h.topic); n != 0 {
		t.Errorf("%s = %d after the write succeeded; want 0", tracing.MetricStuckWrites, n)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// With FailOnStuckWrite, a stuck dead letter ends Run with an error that
// names the record, without committing past it.
func TestFailOnStuckWriteEndsRun(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	ctx := context.Background()
	c := h.consumer(group, consumer.BlockingRetries(), consumer.StuckAfter(300*time.Millisecond), consumer.FailOnStuckWrite())
	consumer.Handle(c, h.topic, behaviour)
	runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	eventually(t, 20*time.Second, "consumer ready", c.Ready)
	h.limitDeadLetterTopic(t, group, 64)
	for i, id := range []string{"ok", "permanent", "ok"} {
		if _, err := h.prod.Publish(ctx, h.topic, "k", order(id, i)); err != nil {
			t.Fatal(err)
		}
	}
	err := <-done
	if runCtx.Err() != nil {
		t.Fatalf("Run ran until its context ended (%v); want it to fail on the stuck dead letter", err)
	}
	where := fmt.Sprintf("%s/0/1", h.topic)
	if err == nil || !strings.Contains(err.Error(), where) || !strings.Contains(err.Error(), dlq.Topic(group)) {
		t.Fatalf("Run: %v; want an error naming %s and the dead-letter topic", err, where)
	}
	if !errors.Is(err, kerr.MessageTooLarge) {
		t.Errorf("Run: %v; want it to wrap the write's error, %v", err, kerr.MessageTooLarge)
	}
	if got := h.committed(group)[0]; got != 1 {
		t.Errorf("committed %d; want 1: the record before the stuck one, not past it", got)
	}
	if n := c.Stats().DeadLettered; n != 0 {
		t.Errorf("dead-lettered %d; want 0", n)
	}
}

// A write that hangs rather than fails (the dead-letter topic was deleted:
// each attempt waits for the topic to appear) is reported stuck too, from
// the time of its first attempt.
func TestHangingDeadLetterWriteIsReported(t *testing.T) {
	h := newHarness(t, 1)
	group := kafkatest.Group(t)
	c := h.consumer(group, consumer.BlockingRetries(), consumer.StuckAfter(300*time.Millisecond), consumer.ShutdownTimeout(time.Second))
	consumer.Handle(c, h.topic, behaviour)
	stop := running(t, c)
	eventually(t, 20*time.Second, "consumer ready", c.Ready)
	h.deleteDeadLetterTopic(t, group)
	if _, err := h.prod.Publish(context.Background(), h.topic, "k", order("permanent", 0)); err != nil {
		t.Fatal(err)
	}
	where := fmt.Sprintf("%s/0/0", h.topic)
	eventually(t, 10*time.Second, "the stuck record reported by CheckReady", func() bool {
		err := c.CheckReady()
		return err != nil && strings.Contains(err.Error(), where) && strings.Contains(err.Error(), "stuck")
	})
	if got := h.committed(group)[0]; got > 0 {
		t.Errorf("committed %d; want nothing past the stuck record", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
