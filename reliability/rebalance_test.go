package reliability_test

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/choreokit/choreo/kafkatest"
)

// TestRebalanceStorm starts and stops members of one group every few
// hundred milliseconds while events flow (5 s short, a minute full), each
// member a consumer in this process sharing the sink's store. Every
// event's effect must exist exactly once at the end.
func TestRebalanceStorm(t *testing.T) {
	e := newEnv(t, 8, false, "")
	n := size(4000, 30000)
	storm := size(5*time.Second, 60*time.Second)
	group := kafkatest.Group(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 17))

	type member struct{ stop func() error }
	var live []member
	join := func() {
		c := e.newConsumer(group)
		live = append(live, member{running(t, c)})
	}
	join()
	s := e.startStream(0, n, 100, time.Duration(float64(storm)/float64(n/100)))
	joins, leaves := 1, 0
	end := time.Now().Add(storm)
	for time.Now().Before(end) {
		time.Sleep(time.Duration(200+rng.IntN(300)) * time.Millisecond)
		switch {
		case len(live) < 2 || (len(live) < 4 && rng.IntN(2) == 0):
			join()
			joins++
		default:
			i := rng.IntN(len(live))
			if err := live[i].stop(); err != nil {
				t.Errorf("member leaving: %v", err)
			}
			live = append(live[:i], live[i+1:]...)
			leaves++
		}
	}
	stormEnd := time.Now()
	sent := s.wait()
	done := e.waitEffects(sent, 3*time.Minute)
	time.Sleep(500 * time.Millisecond)
	for _, m := range live {
		if err := m.stop(); err != nil {
			t.Errorf("member: %v", err)
		}
	}
	tl := count(sent, e.sink.effects(t))
	tl.check(t)
	record(t, e, result{
		Fault:  fmt.Sprintf("rebalance storm: %d joins, %d leaves in %v", joins, leaves, storm),
		Events: tl.events, Effects: tl.effects, Duplicates: tl.duplicates, Lost: tl.lost,
		Drain: done.Sub(stormEnd), Notes: "members in one process, a join or leave every 200-500 ms, 8 partitions",
	})
}

// TestFencedMember stops a member process with SIGSTOP for longer than
// its session timeout while events flow: the group fences it and gives
// its partitions to the other member. Continued with SIGCONT, the fenced
// member finds its generation gone: its commits fail, it drops its
// partitions and rejoins. Effects exactly once (PostgreSQL).
func TestFencedMember(t *testing.T) {
	e := newEnv(t, 6, true, "")
	n := size(3000, 15000)
	group := kafkatest.Group(t)
	a := e.startChild(childConfig{group: group})
	b := e.startChild(childConfig{group: group})
	s := e.startStream(0, n, 50, size(60*time.Millisecond, 40*time.Millisecond))
	time.Sleep(2 * time.Second)
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	t.Logf("member A stopped at %d events sent", s.count())
	time.Sleep(10 * time.Second) // past the 6 s session timeout
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	sent := s.wait()
	done := e.waitEffects(sent, 3*time.Minute)
	time.Sleep(500 * time.Millisecond)
	for _, m := range []*child{a, b} {
		if err := m.term(60 * time.Second); err != nil {
			t.Errorf("member after SIGTERM: %v", err)
		}
	}
	tl := count(sent, e.sink.effects(t))
	tl.check(t)
	record(t, e, result{
		Fault:  "member stopped (SIGSTOP) 10 s, past its session timeout, then continued (SIGCONT)",
		Events: tl.events, Effects: tl.effects, Duplicates: tl.duplicates, Lost: tl.lost,
		Drain: done.Sub(resumed), Notes: fmt.Sprintf("2 member processes, 6 partitions; stopped %v", resumed.Sub(stopped).Round(100*time.Millisecond)),
	})
}
