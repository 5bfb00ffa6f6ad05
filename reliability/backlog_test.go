package reliability_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/choreokit/choreo/kafkatest"
)

// TestSlowConsumerLargeBacklog lets a backlog pile up, then starts a
// service process with a slow handler (1 ms per event, 16 at a time) on
// it, and samples its resident memory while it works through the
// backlog. Memory must stay bounded by the consumer's caps, not grow with
// the backlog: the records in flight stay under MaxInFlight (1024), the
// records tracked per partition under MaxUncommitted (1024), and the
// process under rssCap. Every event is handled exactly once (one process,
// the in-memory store).
func TestSlowConsumerLargeBacklog(t *testing.T) {
	e := newEnv(t, 8, false, "")
	n := size(20000, 200000)
	const (
		maxInFlight    = 1024 // the consumer's defaults
		maxUncommitted = 1024
		// The caps bound the records held (about 1024 × 1 KiB here) and
		// the fetch buffers (MaxInFlightBytes/64 per broker); the Go
		// runtime, the client and the OpenTelemetry SDK come on top.
		rssCap = 160 << 20
	)
	for sent := 0; sent < n; sent += 10000 {
		e.publish(sent, min(10000, n-sent))
	}
	group := kafkatest.Group(t)
	ch := e.startChild(childConfig{group: group, store: "memory", sleep: time.Millisecond, statsEvery: 200 * time.Millisecond, concurrency: 16})
	start := time.Now()
	var samples []int64
	var peak int64
	deadline := time.Now().Add(size(2*time.Minute, 10*time.Minute))
	for {
		if rss, err := ch.rss(); err == nil {
			samples = append(samples, rss)
			peak = max(peak, rss)
		}
		last, _ := ch.lastStats()
		if last.Distinct >= int64(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events handled before the deadline", last.Distinct, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	done := time.Now()
	last, all := ch.lastStats()
	if err := ch.term(60 * time.Second); err != nil {
		t.Errorf("service after SIGTERM: %v", err)
	}
	var peakIn, peakUncommitted, peakAssigned int64
	for _, s := range all {
		peakIn = max(peakIn, s.InFlight)
		peakUncommitted = max(peakUncommitted, s.Uncommitted)
		peakAssigned = max(peakAssigned, s.Assigned)
	}
	if peakIn > maxInFlight || last.PeakIn > maxInFlight {
		t.Errorf("in flight reached %d (peak %d); want at most %d", peakIn, last.PeakIn, maxInFlight)
	}
	if peakUncommitted > maxUncommitted*peakAssigned {
		t.Errorf("records tracked reached %d over %d partitions; want at most %d each", peakUncommitted, peakAssigned, maxUncommitted)
	}
	switch {
	case raceEnabled:
		t.Logf("race detector on: resident memory (peak %d MiB) not checked", peak>>20)
	case peak > rssCap:
		t.Errorf("resident memory peaked at %d MiB; want under %d MiB", peak>>20, rssCap>>20)
	}
	// Memory must not grow with progress through the backlog.
	half := len(samples) / 2
	var early, late int64
	for i, s := range samples {
		if i < half {
			early = max(early, s)
		} else {
			late = max(late, s)
		}
	}
	if !raceEnabled && half > 5 && late > early+early/2+(16<<20) {
		t.Errorf("resident memory grew through the backlog: peak %d MiB in the first half, %d MiB in the second", early>>20, late>>20)
	}
	handled := last.Handled
	record(t, e, result{
		Fault:  fmt.Sprintf("slow consumer (1 ms per event) on a backlog of %d", n),
		Events: n, Effects: int(handled), Duplicates: int(handled - last.Distinct), Lost: n - int(last.Distinct),
		Drain: done.Sub(start),
		Notes: fmt.Sprintf("RSS peak %d MiB (first half %d, second half %d; cap %d); in flight peak %d of %d; tracked peak %d over %d partitions",
			peak>>20, early>>20, late>>20, rssCap>>20, peakIn, maxInFlight, peakUncommitted, peakAssigned),
	})
}
