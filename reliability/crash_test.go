package reliability_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/choreokit/choreo/kafkatest"
)

// TestConsumerCrashes runs a service as two processes (two members of its
// group) while events flow, and kills one of them with SIGKILL at a random
// moment, again and again, restarting it each time. Every event's effect
// must exist exactly once at the end (PostgreSQL: mark and effect in one
// transaction). Recovery is the longest time from a restart to the
// restarted process's first effect (it waits out the killed member's
// session timeout, 6s, in the group's rebalance).
func TestConsumerCrashes(t *testing.T) {
	e := newEnv(t, 6, true, "")
	n := size(3000, 20000)
	kills := size(5, 8)
	group := kafkatest.Group(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 13))

	members := []*child{e.startChild(childConfig{group: group}), e.startChild(childConfig{group: group})}
	// Events flow over the whole run, in small batches.
	s := e.startStream(0, n, 50, size(80*time.Millisecond, 60*time.Millisecond))
	var restarts []*child
	var lastRestart time.Time
	for k := range kills {
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		i := rng.IntN(len(members))
		members[i].kill()
		t.Logf("kill %d: member %d at %d events sent", k+1, i, s.count())
		members[i] = e.startChild(childConfig{group: group})
		restarts = append(restarts, members[i])
		lastRestart = time.Now()
	}
	sent := s.wait()
	done := e.waitEffects(sent, 3*time.Minute)
	var restartToFirst time.Duration
	for _, ch := range restarts {
		if f := ch.firstEffect(); !f.IsZero() && f.Sub(ch.started) > restartToFirst {
			restartToFirst = f.Sub(ch.started)
		}
	}
	time.Sleep(500 * time.Millisecond) // room for a late duplicate to show
	for _, m := range members {
		if err := m.term(60 * time.Second); err != nil {
			t.Errorf("member after SIGTERM: %v", err)
		}
	}
	tl := count(sent, e.sink.effects(t))
	tl.check(t)
	record(t, e, result{
		Fault:  fmt.Sprintf("consumer process killed (SIGKILL) %d times, restarted", kills),
		Events: tl.events, Effects: tl.effects, Duplicates: tl.duplicates, Lost: tl.lost,
		Drain: done.Sub(lastRestart),
		Notes: fmt.Sprintf("2 member processes, 6 partitions, a kill every 0.5-2 s; a restarted process's first effect came at most %v after its start (it waits out the killed member's 6 s session timeout)",
			restartToFirst.Round(100*time.Millisecond)),
	})
}
