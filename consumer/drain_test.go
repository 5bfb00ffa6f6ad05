package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/kafkatest"
)

// TestOldRetryTopicsAreDrained forwards a record to a retry topic, stops
// the service while the record waits there, and starts it again with other
// retry delays or with blocking retries. The old retry topic is no longer
// the configuration's, but the waiting record must still be handled, once,
// not before its not-before time; failing again, it goes on to the current
// configuration's next tier, or to the dead-letter topic when there is
// none.
func TestOldRetryTopicsAreDrained(t *testing.T) {
	const oldDelay = 3 * time.Second // run 1 stops long before this passes
	for _, tc := range []struct {
		name       string
		run2       consumer.Option
		failAgain  bool   // the handler fails the drained record again
		forwardTo  string // then the record goes to this retry topic (after the group) …
		deadLetter bool   // … or to the dead-letter topic
	}{
		{name: "new delays", run2: consumer.RetryTopics(500 * time.Millisecond)},
		{name: "blocking retries", run2: consumer.BlockingRetries()},
		{name: "new delays, fails again", run2: consumer.RetryTopics(200*time.Millisecond, 300*time.Millisecond),
			failAgain: true, forwardTo: ".retry.2-300ms"},
		{name: "blocking retries, fails again", run2: consumer.BlockingRetries(), failAgain: true, deadLetter: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 1)
			group := kafkatest.Group(t)
			oldTopic := group + ".retry.1-3s"
			once := consumer.Retry(consumer.RetryPolicy{MaxAttempts: 1, Multiplier: 1})

			// Run 1: the first delivery fails and is forwarded to the
			// 3-second retry topic; the service stops at once.
			c1 := h.consumer(group, consumer.RetryTopics(oldDelay), once)
			var mu sync.Mutex
			var run1 []int
			consumer.Handle(c1, h.topic, func(_ context.Context, ev consumer.Event[OrderPlaced]) error {
				mu.Lock()
				defer mu.Unlock()
				run1 = append(run1, ev.Attempt)
				return errors.New("downstream unavailable")
			})
			stop1 := running(t, c1)
			pub, err := h.prod.Publish(context.Background(), h.topic, "k", order("k", 1))
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, 20*time.Second, "the forward to the retry topic", func() bool { return c1.Stats().Forwarded == 1 })
			if err := stop1(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			if fmt.Sprint(run1) != "[1]" {
				t.Fatalf("run 1 made attempts %v; want [1] (it must stop before the record's not-before)", run1)
			}
			mu.Unlock()
			if got := h.committed(group)[pub.Partition]; got != pub.Offset+1 {
				t.Fatalf("run 1 committed %d on the source; want %d (past the forwarded record)", got, pub.Offset+1)
			}
			rs := consumeAll(t, h, oldTopic, 1)
			notBefore, err := time.Parse(time.RFC3339Nano, header(rs[0], choreo.HeaderNotBefore))
			if err != nil {
				t.Fatalf("retry record's not-before: %v", err)
			}

			// Run 2: another retry configuration.
			c2 := h.consumer(group, tc.run2, once)
			type call struct {
				attempt int
				at      time.Time
			}
			var run2 []call
			consumer.Handle(c2, h.topic, func(_ context.Context, ev consumer.Event[OrderPlaced]) error {
				mu.Lock()
				defer mu.Unlock()
				run2 = append(run2, call{ev.Attempt, time.Now()})
				if tc.failAgain && ev.Attempt == 2 {
					return errors.New("still unavailable")
				}
				return nil
			})
			stop2 := running(t, c2)
			finished := func() bool { return c2.Stats().Handled == 1 }
			if tc.deadLetter {
				finished = func() bool { return c2.Stats().DeadLettered == 1 }
			}
			eventually(t, 15*time.Second, "the waiting record handled in run 2", finished)
			// Let a second delivery, if any, show up before counting.
			time.Sleep(300 * time.Millisecond)
			if err := stop2(); err != nil {
				t.Fatal(err)
			}

			mu.Lock()
			defer mu.Unlock()
			var attempts []int
			for _, c := range run2 {
				attempts = append(attempts, c.attempt)
			}
			want := "[2]"
			if tc.forwardTo != "" {
				want = "[2 3]"
			}
			if got := fmt.Sprint(attempts); got != want {
				t.Fatalf("run 2 made attempts %s; want %s", got, want)
			}
			if run2[0].at.Before(notBefore) {
				t.Errorf("run 2 handled the record at %v, before its not-before %v", run2[0].at, notBefore)
			}
			s := c2.Stats()
			wantFwd, wantDL := int64(0), int64(0)
			if tc.forwardTo != "" {
				wantFwd = 1
			}
			if tc.deadLetter {
				wantDL = 1
			}
			if s.Forwarded != wantFwd || s.DeadLettered != wantDL {
				t.Errorf("run 2 stats %+v; want %d forwards and %d dead letters", s, wantFwd, wantDL)
			}
			if tc.forwardTo != "" {
				rs := consumeAll(t, h, group+tc.forwardTo, 1)
				if got := header(rs[0], choreo.HeaderAttempt); got != "2" {
					t.Errorf("forwarded record's %s = %q; want 2", choreo.HeaderAttempt, got)
				}
				if got := header(rs[0], choreo.HeaderOriginalTopic); got != h.topic {
					t.Errorf("forwarded record's original topic %q; want %s", got, h.topic)
				}
			}
			if tc.deadLetter {
				dls := h.readDeadLetters(t, dlq.Topic(group), 1, 5*time.Second)
				if len(dls) != 1 {
					t.Fatalf("%d dead letters; want 1", len(dls))
				}
				dl := dls[0]
				if dl.Error.Kind != choreo.KindRetriesExhausted || dl.Attempts != 2 ||
					dl.Original.Topic != h.topic || dl.Original.Offset != pub.Offset {
					t.Errorf("dead letter kind %s, %d attempts, original %s/%d; want retries_exhausted, 2, %s/%d",
						dl.Error.Kind, dl.Attempts, dl.Original.Topic, dl.Original.Offset, h.topic, pub.Offset)
				}
			}
			// The old retry topic was committed past the drained record.
			offs, err := h.cluster.Admin().FetchOffsets(context.Background(), group)
			if err != nil {
				t.Fatal(err)
			}
			if o, ok := offs.Lookup(oldTopic, 0); !ok || o.At != 1 {
				t.Errorf("committed offset on %s = %+v (found %v); want 1", oldTopic, o.At, ok)
			}
		})
	}
}
