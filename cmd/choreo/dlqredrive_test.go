package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/internal/testevents"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/producer"
)

// service is a consumer running in the test, counting what its handler
// did per event id.
type service struct {
	c       *consumer.Consumer
	stop    func() error
	mu      sync.Mutex
	handled map[string]int // event id → successful handlings
	failing func(key string) bool
}

// startService runs a consumer of topic in group whose handler fails
// permanently for the keys failing says.
func startService(t *testing.T, conn connection.Config, fx *dlqFixture, group, topic string, failing func(string) bool) *service {
	t.Helper()
	s := &service{handled: map[string]int{}, failing: failing}
	c, err := consumer.New(conn, fx.reg, group, consumer.Logger(slog.New(slog.DiscardHandler)),
		consumer.CommitInterval(100*time.Millisecond), consumer.RetryTopics(200*time.Millisecond),
		consumer.Retry(consumer.RetryPolicy{MaxAttempts: 1, Multiplier: 1}))
	if err != nil {
		t.Fatal(err)
	}
	consumer.Handle(c, topic, func(_ context.Context, ev consumer.Event[testevents.OrderPlaced]) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.failing(ev.Key) {
			return choreo.Permanent(errors.New("card declined"))
		}
		s.handled[ev.ID]++
		return nil
	})
	s.c = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var runErr error
	s.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(60 * time.Second):
				runErr = errors.New("Run did not return")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = s.stop() })
	waitFor(t, 30*time.Second, group+" ready", c.Ready)
	return s
}

// counts returns a copy of the handled counts.
func (s *service) counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.handled))
	for k, v := range s.handled {
		out[k] = v
	}
	return out
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// endOffsets sums a topic's end offsets.
func endOffsets(t *testing.T, fx *dlqFixture, topic string) int64 {
	t.Helper()
	ends, err := fx.c.Admin().ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// TestDLQRedriveEndToEnd: dead letters written by a real consumer whose
// handler fails for some events are redriven, once the handler is fixed,
// to that service only: each is handled exactly once there, and another
// service reading the same source topic (even one with a fresh memory
// store) sees nothing again. Redriving again sends nothing; --again sends
// them and the service's idempotency store skips them. An event that keeps
// failing comes back as a new dead letter linked to the first, and the
// loop guard stops it.
func TestDLQRedriveEndToEnd(t *testing.T) {
	fx := newDLQFixture(t, 2)
	conn := connection.Config{Brokers: fx.c.Seeds()}
	source := fx.c.Topic(t, 2)
	other := kafkatest.Group(t)
	ctx := context.Background()

	var fixed atomic.Bool
	a := startService(t, conn, fx, fx.group, source, func(key string) bool {
		return key == "poison" || (strings.HasPrefix(key, "bad-") && !fixed.Load())
	})
	b := startService(t, conn, fx, other, source, func(string) bool { return false })

	p, err := producer.New(ctx, conn, fx.reg, producer.Source("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	keys := []string{"ok-1", "bad-1", "ok-2", "bad-2", "poison", "ok-3"}
	ids := map[string]string{}
	for i, k := range keys {
		pub, err := p.Publish(ctx, source, k, testevents.OrderPlaced{OrderID: k, CustomerID: "c", AmountCents: int64(i), Currency: "EUR", PlacedAt: time.Now().UTC().Truncate(time.Millisecond)})
		if err != nil {
			t.Fatal(err)
		}
		ids[k] = pub.Metadata.ID
	}
	waitFor(t, 30*time.Second, "three dead letters", func() bool { return a.c.Stats().DeadLettered == 3 })
	waitFor(t, 30*time.Second, "the other service handled all", func() bool { return len(b.counts()) == len(keys) })
	sourceEnd := endOffsets(t, fx, source)

	// A dry run lists what would go, and sends nothing.
	code, out, errOut := fx.choreo(t, "", fx.args("dlq", "redrive", fx.group, "--dry-run", "-o", "jsonl")...)
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.Contains(errOut, "would send 3 dead letters") {
		t.Fatalf("dry run: status %d, stdout %q, stderr %q; want 3 lines and a note", code, out, errOut)
	}
	// Not confirmed: nothing sent.
	code, _, errOut = fx.choreo(t, "n\n", fx.args("dlq", "redrive", fx.group)...)
	if code != 1 || !strings.Contains(errOut, "Redrive 3 dead letters") || !strings.Contains(errOut, "not confirmed") {
		t.Fatalf("unconfirmed: status %d, stderr %q; want 1, the question and not confirmed", code, errOut)
	}
	if n := endOffsets(t, fx, dlq.RedriveTopic(fx.group)); n != 0 {
		t.Fatalf("%d records in the redrive topic after a dry run and a refusal; want 0", n)
	}

	// Fixed; redriven once, confirmed on stdin.
	fixed.Store(true)
	code, out, errOut = fx.choreo(t, "yes\n", fx.args("dlq", "redrive", fx.group)...)
	if code != 0 || !strings.Contains(out, "sent                    3") {
		t.Fatalf("redrive: status %d, stdout %q, stderr %q; want 0 and 3 sent", code, out, errOut)
	}
	waitFor(t, 30*time.Second, "bad events handled and poison dead-lettered again", func() bool {
		c := a.counts()
		return c[ids["bad-1"]] == 1 && c[ids["bad-2"]] == 1 && a.c.Stats().DeadLettered == 4
	})
	for k, id := range ids {
		want := 1
		if k == "poison" {
			want = 0
		}
		if got := a.counts()[id]; got != want {
			t.Errorf("failing service handled %s %d times; want %d", k, got, want)
		}
	}
	if n := endOffsets(t, fx, source); n != sourceEnd {
		t.Errorf("source topic grew from %d to %d records: the redrive went to the shared topic", sourceEnd, n)
	}
	// The other service, restarted with a fresh memory store, finds
	// nothing new: the redrive never reached its topics.
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	b2 := startService(t, conn, fx, other, source, func(string) bool { return false })
	time.Sleep(time.Second) // it would handle anything new in this time
	if s := b2.c.Stats(); s.Handled != 0 || s.Duplicates != 0 {
		t.Errorf("the other service after a restart: %+v; want nothing handled", s)
	}

	// The poison event failed again: its new dead letter links the first
	// and counts one redrive.
	code, out, _ = fx.choreo(t, "", fx.args("dlq", "list", fx.group, "-o", "jsonl", "--key", "poison")...)
	if code != 0 {
		t.Fatalf("list: status %d", code)
	}
	var poison []listItem
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var it struct {
			listItem
			Key json.RawMessage `json:"key"` // dlq.Bytes only encodes
		}
		if err := json.Unmarshal([]byte(line), &it); err != nil {
			t.Fatalf("list line %q: %v", line, err)
		}
		poison = append(poison, it.listItem)
	}
	if len(poison) != 2 || poison[0].Redriven == nil || poison[0].Redriven.Count != 1 || poison[1].RedriveCount != 1 ||
		poison[1].ReplayedFrom != fmt.Sprintf("%s/%d/%d", dlq.Topic("svc"), poison[0].Partition, poison[0].Offset) || poison[1].Redriven != nil {
		t.Fatalf("poison dead letters %+v; want the first redriven once, the second with redrive count 1 linking the first", poison)
	}

	// Again: the three redriven are skipped, and with --max-redrives 1 the
	// new poison dead letter too: nothing to send.
	redriveEnd := endOffsets(t, fx, dlq.RedriveTopic(fx.group))
	code, out, errOut = fx.choreo(t, "", fx.args("dlq", "redrive", fx.group, "--max-redrives", "1")...)
	if code != 0 || !strings.Contains(out, "nothing to redrive") || !strings.Contains(out, "3 redriven before") || !strings.Contains(out, "1 whose original was redriven 1 times") {
		t.Fatalf("second redrive: status %d, stdout %q, stderr %q; want nothing sent, 3 redriven before, 1 over the loop guard", code, out, errOut)
	}
	if n := endOffsets(t, fx, dlq.RedriveTopic(fx.group)); n != redriveEnd {
		t.Fatalf("the second redrive sent %d records; want none", n-redriveEnd)
	}

	// --again (keeping the loop guard at 1): the three go again; the
	// service skips the two it handled, and poison fails once more.
	dups := a.c.Stats().Duplicates
	code, out, errOut = fx.choreo(t, "", fx.args("dlq", "redrive", fx.group, "--again", "--max-redrives", "1", "--yes", "--rate", "100/s")...)
	if code != 0 || !strings.Contains(out, "sent                    3") || !strings.Contains(out, "over --max-redrives 1   1") {
		t.Fatalf("--again: status %d, stdout %q, stderr %q; want 3 sent, 1 over the loop guard", code, out, errOut)
	}
	waitFor(t, 30*time.Second, "two duplicates skipped, poison dead-lettered a third time", func() bool {
		return a.c.Stats().Duplicates == dups+2 && a.c.Stats().DeadLettered == 5
	})
	for _, k := range []string{"bad-1", "bad-2"} {
		if got := a.counts()[ids[k]]; got != 1 {
			t.Errorf("%s handled %d times after --again; want still 1", k, got)
		}
	}

	// show names both redrives of the first poison dead letter.
	code, out, _ = fx.choreo(t, "", fx.args("dlq", "show", fx.group, fmt.Sprintf("%d:%d", poison[0].Partition, poison[0].Offset), "-o", "json")...)
	var sv struct {
		Redrives []redriveRecord `json:"redrives"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &sv) != nil {
		t.Fatalf("show: status %d, stdout %q", code, out)
	}
	if len(sv.Redrives) != 2 || sv.Redrives[0].Count != 1 || sv.Redrives[1].Count != 2 || sv.Redrives[1].To != dlq.RedriveTopic("svc") {
		t.Errorf("show's redrives %+v; want two, counted 1 and 2, to the redrive topic", sv.Redrives)
	}
	if s := b2.c.Stats(); s.Handled != 0 {
		t.Errorf("the other service handled %d events; want 0", s.Handled)
	}
}

// TestDLQRedriveTo: --to republishes to a topic of the operator's choosing
// (here the source topic, which every service reads), records it, and
// refuses a topic that does not exist.
func TestDLQRedriveTo(t *testing.T) {
	fx := newDLQFixture(t, 1)
	fx.writeGolden(t)
	target := fx.c.Topic(t, 1)
	code, out, errOut := fx.choreo(t, "", fx.args("dlq", "redrive", fx.group, "0:3", "--to", target, "--yes")...)
	if code != 0 || !strings.Contains(out, "sent                    1") {
		t.Fatalf("status %d, stdout %q, stderr %q; want 1 sent", code, out, errOut)
	}
	cl := fx.c.Client(t, kgo.ConsumeTopics(target), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) == 0 && ctx.Err() == nil {
		recs = append(recs, cl.PollFetches(ctx).Records()...)
	}
	if len(recs) != 1 || string(recs[0].Key) != "pay-9" {
		t.Fatalf("records on %s: %v; want the dead letter 0:3's original (key pay-9)", target, recs)
	}
	var from, count string
	for _, h := range recs[0].Headers {
		switch h.Key {
		case choreo.HeaderReplayedFrom:
			from = string(h.Value)
		case choreo.HeaderRedriveCount:
			count = string(h.Value)
		case choreo.HeaderOriginalTopic:
			t.Errorf("a republish carries %s", h.Key)
		}
	}
	if from != fx.topic+"/0/3" || count != "1" {
		t.Errorf("replayed from %q, redrive count %q; want %s/0/3, 1", from, count, fx.topic)
	}
	code, _, errOut = fx.choreo(t, "", fx.args("dlq", "redrive", fx.group, "--to", "no-such-topic-"+fx.group, "--yes")...)
	if code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Errorf("--to a missing topic: status %d, stderr %q; want 1, does not exist", code, errOut)
	}
	// The redrive topic of a service that never ran with redrive support
	// does not exist: a clear failure.
	code, _, errOut = fx.choreo(t, "", fx.args("dlq", "redrive", fx.group, "--yes")...)
	if code != 1 || !strings.Contains(errOut, "a service creates its redrive topic when it starts") {
		t.Errorf("missing redrive topic: status %d, stderr %q", code, errOut)
	}
}

// TestDLQRedriveInterrupted: Ctrl-C during a rate-limited redrive stops
// it cleanly: status 1, a summary of what was sent, each sent dead letter
// recorded; running it again sends exactly the rest.
func TestDLQRedriveInterrupted(t *testing.T) {
	fx := newDLQFixture(t, 1)
	redrive := dlq.RedriveTopic(fx.group)
	fx.c.CreateTopic(t, redrive, 1)
	const n = 40
	for i := range n {
		dl := dlq.New(&kgo.Record{Topic: "orders", Offset: int64(i), Key: []byte(fmt.Sprint("k", i)), Value: []byte("v"),
			Headers: []kgo.RecordHeader{{Key: choreo.HeaderID, Value: []byte(fmt.Sprint("evt-", i))}}},
			dlq.Failure{Err: errors.New("down"), Group: fx.group})
		if err := fx.w.Write(context.Background(), fx.topic, dl); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- execute(ctx, newRootCmd(), fx.args("dlq", "redrive", fx.group, "--yes", "--rate", "20/s"), &out, &errOut)
	}()
	waitFor(t, 20*time.Second, "some sent", func() bool { return endOffsets(t, fx, redrive) >= 5 })
	cancel()
	var code int
	select {
	case code = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("redrive did not stop when interrupted")
	}
	sent := endOffsets(t, fx, redrive)
	if code != 1 || !strings.Contains(errOut.String(), "interrupted: sent") || !strings.Contains(out.String(), "(interrupted)") ||
		!strings.Contains(out.String(), fmt.Sprintf("sent                    %d\n", sent)) {
		t.Fatalf("status %d, stdout %q, stderr %q; want 1, an interrupted summary of %d sent", code, out.String(), errOut.String(), sent)
	}
	if sent >= n {
		t.Fatalf("all %d sent before the interruption: the rate did not hold", sent)
	}
	if logged := endOffsets(t, fx, dlq.RedriveLog(fx.topic)); logged != sent {
		t.Errorf("%d redrives recorded; want the %d sent", logged, sent)
	}

	code, stdout, stderr := fx.choreo(t, "", fx.args("dlq", "redrive", fx.group, "--yes")...)
	if code != 0 || !strings.Contains(stdout, fmt.Sprintf("sent                    %d\n", n-sent)) ||
		!strings.Contains(stdout, fmt.Sprintf("redriven before         %d", sent)) {
		t.Fatalf("rerun: status %d, stdout %q, stderr %q; want the remaining %d sent", code, stdout, stderr, n-sent)
	}
	if got := endOffsets(t, fx, redrive); got != n {
		t.Errorf("%d records in the redrive topic; want %d, each dead letter once", got, n)
	}
}
