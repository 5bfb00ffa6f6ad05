package reliability_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/kafkatest"
)

// TestDuplicateStorm re-publishes every event several times (the same
// record: same ce_id), consumes them all, then resets the group to the
// start of the topic and consumes everything again. Every event's effect
// must exist exactly once.
func TestDuplicateStorm(t *testing.T) {
	e := newEnv(t, 4, false, "")
	n := size(1000, 5000)
	const copies = 4 // each event is on the topic this many times
	ids := e.publish(0, n)
	// Copy every record of the topic copies-1 more times, headers and all.
	recs := readAll(t, e, n)
	cl := e.cluster.Client(t, kgo.ProducerLinger(5*time.Millisecond))
	ctx := context.Background()
	for range copies - 1 {
		batch := make([]*kgo.Record, 0, len(recs))
		for _, r := range recs {
			batch = append(batch, &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers})
		}
		if err := cl.ProduceSync(ctx, batch...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	group := kafkatest.Group(t)
	total := int64(n * copies)
	consume := func(round string) (handled, dups int64) {
		c := e.newConsumer(group)
		stop := running(t, c)
		eventually(t, 3*time.Minute, round+": every record done", func() bool {
			s := c.Stats()
			return s.Handled+s.Duplicates >= total
		})
		eventually(t, 30*time.Second, round+": everything committed", func() bool { return committed(t, e, group) >= total })
		if err := stop(); err != nil {
			t.Errorf("%s: Run: %v", round, err)
		}
		s := c.Stats()
		return s.Handled, s.Duplicates
	}
	start := time.Now()
	h1, d1 := consume("first pass")
	// Reset the group to the start of the topic, as an operator would to
	// reprocess it.
	adm := e.cluster.Admin()
	offsets := kadm.Offsets{}
	for p := range int32(4) {
		offsets.Add(kadm.Offset{Topic: e.topic, Partition: p, At: 0, LeaderEpoch: -1})
	}
	resp, err := adm.CommitOffsets(ctx, group, offsets)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("reset the group: %v", err)
	}
	h2, d2 := consume("after the reset")
	done := time.Now()
	tl := count(ids, e.sink.effects(t))
	tl.check(t)
	if h1+h2 != int64(n) {
		t.Errorf("handlers succeeded %d times; want %d, once per event", h1+h2, n)
	}
	record(t, e, result{
		Fault:  fmt.Sprintf("duplicate storm: each event on the topic %d times, then the group reset to the start", copies),
		Events: tl.events, Effects: tl.effects, Duplicates: tl.duplicates, Lost: tl.lost,
		Drain: done.Sub(start),
		Notes: fmt.Sprintf("%d records read in two passes: %d handled, %d skipped as duplicates", 2*total, h1+h2, d1+d2),
	})
}

// readAll reads the first n records of e's topic.
func readAll(t *testing.T, e *env, n int) []*kgo.Record {
	t.Helper()
	cl := e.cluster.Client(t, kgo.ConsumeTopics(e.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", len(out), n)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

// committed sums the group's committed offsets on e's topic.
func committed(t *testing.T, e *env, group string) int64 {
	t.Helper()
	offs, err := e.cluster.Admin().FetchOffsets(context.Background(), group)
	if err != nil {
		return 0
	}
	var sum int64
	for _, o := range offs[e.topic] {
		sum += o.At
	}
	return sum
}
