package reliability_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/choreokit/choreo/kafkatest"
)

// localScript returns the path of a deploy/local script.
func localScript(name string) string {
	p, _ := filepath.Abs(filepath.Join("..", "deploy", "local", name))
	return p
}

// script runs a deploy/local script with the test's environment and
// returns its stdout and stderr.
func script(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, localScript(name), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// brokerRestarter stops and starts the broker the test runs on.
type brokerRestarter struct {
	name     string
	embedded bool
	stop     func() error
	start    func() error
}

// restartableBroker returns the broker for TestBrokerRestart: with
// KAFKA_BROKERS set, the Apache Kafka that deploy/local/kafka.sh runs at
// that address (the test skips if the address is another broker's: it
// restarts only what the script started); without, an embedded broker
// with a data directory on a fixed port, which a restart reloads.
func restartableBroker(t *testing.T) brokerRestarter {
	t.Helper()
	if seeds := strings.TrimSpace(os.Getenv("KAFKA_BROKERS")); seeds != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := script(ctx, "kafka.sh", "status")
		if err != nil || !strings.Contains(out, " at "+seeds) {
			t.Skipf("KAFKA_BROKERS=%s is not the broker deploy/local/kafka.sh runs (status: %q): not restarting a broker this suite did not start", seeds, strings.TrimSpace(out))
		}
		run := func(cmd string) func() error {
			return func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				out, err := script(ctx, "kafka.sh", cmd)
				if err != nil {
					return fmt.Errorf("kafka.sh %s: %w: %s", cmd, err, out)
				}
				return nil
			}
		}
		return brokerRestarter{name: "Apache Kafka restarted by deploy/local/kafka.sh stop/start", stop: run("stop"), start: run("start")}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(t.TempDir())}
	fake, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if fake != nil {
			fake.Close()
		}
	})
	t.Setenv("KAFKA_BROKERS", fake.ListenAddrs()[0]) // kafkatest and the clients use it
	return brokerRestarter{
		name:     "embedded kfake closed and started again on its port and data directory",
		embedded: true,
		stop:     func() error { fake.Close(); fake = nil; return nil },
		start: func() error {
			var err error
			for range 50 { // the port may take a moment to be free again
				if fake, err = kfake.NewCluster(opts...); err == nil {
					return nil
				}
				time.Sleep(100 * time.Millisecond)
			}
			return err
		},
	}
}

// TestBrokerRestart stops the broker mid-stream and starts it again, with
// a consumer and a producer running: both ride through with no manual
// step. Every publish acknowledged must have its effect exactly once; a
// publish made during the outage either succeeds once the broker is back
// or returns an error to its caller (counted, never silently dropped).
func TestBrokerRestart(t *testing.T) {
	b := restartableBroker(t)
	e := newEnv(t, 4, false, "")
	if b.embedded {
		e.brokerName = "embedded kfake (with a data directory)"
	}
	n := size(3000, 15000)
	outage := size(2*time.Second, 10*time.Second)
	c := e.newConsumer(kafkatest.Group(t))
	stop := running(t, c)
	s := e.startStream(0, n, 50, size(40*time.Millisecond, 30*time.Millisecond))
	time.Sleep(size(1500*time.Millisecond, 5*time.Second))
	t.Logf("stopping the broker at %d events acknowledged", s.count())
	began := time.Now()
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(outage)
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	t.Logf("broker back after %v", back.Sub(began).Round(time.Millisecond))
	sent := s.wait()
	done := e.waitEffects(sent, 5*time.Minute)
	time.Sleep(500 * time.Millisecond)
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	tl := count(sent, e.sink.effects(t))
	s.mu.Lock()
	failed, errs := s.failed, s.errs
	s.mu.Unlock()
	// An event whose publish failed may still have been written (its
	// acknowledgement lost): its effect then exists once, which is not a
	// duplicate. Only acknowledged events are required.
	tl.effects -= tl.unknown
	if tl.unknown > failed {
		t.Errorf("%d effects of events never acknowledged, but only %d publishes failed", tl.unknown, failed)
	}
	tl.unknown = 0
	tl.check(t)
	if failed > 0 {
		t.Logf("%d publishes returned an error to the caller, e.g. %v", failed, errs)
	}
	record(t, e, result{
		Fault:  fmt.Sprintf("broker stopped and restarted mid-stream (down %v)", back.Sub(began).Round(100*time.Millisecond)),
		Events: tl.events, Effects: tl.effects, Duplicates: tl.duplicates, Lost: tl.lost,
		Drain: done.Sub(back),
		Notes: fmt.Sprintf("%s; %d of %d publishes returned an error to the caller (none vanished)", b.name, failed, n),
	})
}
