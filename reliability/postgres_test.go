package reliability_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/kafkatest"
)

// localPostgres skips the test unless DATABASE_URL names the server that
// deploy/local/postgres.sh runs (same port, running by the script's own
// status): the test stops and starts it, and must touch no other.
func localPostgres(t *testing.T) {
	t.Helper()
	raw := os.Getenv("DATABASE_URL")
	if raw == "" {
		t.Skip("DATABASE_URL not set: the PostgreSQL outage needs the server of deploy/local/postgres.sh")
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("DATABASE_URL: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := script(ctx, "postgres.sh", "status")
	if err != nil || !strings.Contains(out, "running at "+u.Host+" ") {
		t.Skipf("DATABASE_URL points at %s, which is not the server deploy/local/postgres.sh runs (status: %q): not stopping a database this suite did not start",
			u.Host, strings.TrimSpace(out))
	}
}

// TestPostgresOutage stops PostgreSQL (the idempotency store and the
// effects) mid-stream and starts it again. The store's errors are
// retryable: the circuit breaker opens, nothing is dead-lettered for the
// outage, and afterwards every event's effect exists exactly once.
//
// The breaker opens once 20 first attempts (MinAttempts) have failed. A
// record whose first attempt was among them, or in flight when it opened,
// may spend its in-process attempts first and go on to the retry topic,
// where it waits for the breaker like the rest; so at most MinAttempts +
// Concurrency - 1 records are forwarded. That happens when the outage
// meets a burst (a partition's first fetch held back, a handler stalled
// while the database shuts down): CI saw 11 once.
func TestPostgresOutage(t *testing.T) {
	localPostgres(t)
	e := newEnv(t, 4, true, "")
	n := size(2000, 10000)
	outage := size(3*time.Second, 30*time.Second)
	breaker := consumer.Breaker{}
	if !full() {
		breaker.CoolDown = 300 * time.Millisecond
	}
	c := e.newConsumer(kafkatest.Group(t), consumer.CircuitBreaker(breaker), consumer.RetryTopics(time.Second),
		consumer.Retry(consumer.RetryPolicy{MaxAttempts: 3, InitialInterval: 20 * time.Millisecond, Multiplier: 2}))
	stop := running(t, c)
	s := e.startStream(0, n, 50, size(50*time.Millisecond, 100*time.Millisecond))
	time.Sleep(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := script(ctx, "postgres.sh", "stop"); err != nil {
		t.Fatalf("postgres.sh stop: %v: %s", err, out)
	}
	began := time.Now()
	restarted := false
	t.Cleanup(func() { // never leave the database down
		if !restarted {
			_, _ = script(context.Background(), "postgres.sh", "start")
		}
	})
	route := e.topic + "/" + OrderPlaced{}.AvroSchema().FullName()
	sawOpen := false
	for time.Since(began) < outage {
		if c.Stats().Circuits[route] == "open" {
			sawOpen = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	mid := c.Stats()
	if out, err := script(ctx, "postgres.sh", "start"); err != nil {
		t.Fatalf("postgres.sh start: %v: %s", err, out)
	}
	restarted = true
	back := time.Now()
	sent := s.wait()
	done := e.waitEffects(sent, 3*time.Minute)
	time.Sleep(500 * time.Millisecond)
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	st := c.Stats()
	if !sawOpen {
		t.Errorf("the breaker never opened during the outage (stats %+v)", mid)
	}
	const minAttempts, concurrency = 20, 16 // the defaults
	if st.DeadLettered != 0 || st.Forwarded >= minAttempts+concurrency {
		t.Errorf("%d dead-lettered, %d forwarded; want none dead-lettered, and fewer than %d forwarded (those that failed before the breaker opened)",
			st.DeadLettered, st.Forwarded, minAttempts+concurrency)
	}
	tl := count(sent, e.sink.effects(t))
	tl.check(t)
	record(t, e, result{
		Fault:  fmt.Sprintf("PostgreSQL stopped %v (deploy/local/postgres.sh stop/start)", back.Sub(began).Round(100*time.Millisecond)),
		Events: tl.events, Effects: tl.effects, Duplicates: tl.duplicates, Lost: tl.lost,
		Drain: done.Sub(back),
		Notes: fmt.Sprintf("breaker opened, %d waits at it, %d dead letters, %d forwards (records that failed before it opened)", st.CircuitWaits, st.DeadLettered, st.Forwarded),
	})
}
