package e2e

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/examples/events"
	"github.com/choreokit/choreo/examples/orders/ordersvc"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

// readmeService returns the Go program of the README's section "A service
// of your own".
func readmeService(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## A service of your own\n")
	if !ok {
		t.Fatal(`README.md has no section "A service of your own"`)
	}
	m := regexp.MustCompile("(?s)\n```go\n(.*?)\n```\n").FindStringSubmatch(section)
	if m == nil {
		t.Fatal("the README's service section has no Go code block")
	}
	return m[1]
}

// buildReadmeService builds the README's service as pasted: a main
// package of its own in this module (under a directory the go command's
// ./... patterns skip).
func buildReadmeService(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(".", "_readme-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(readmeService(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "audit")
	cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", bin, "./"+filepath.Base(dir))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the README's service does not build: %v\n%s", err, out)
	}
	return bin
}

// lines collects a process's output lines and lets a test wait for one.
type lines struct {
	mu   sync.Mutex
	all  []string
	more chan struct{}
}

func collect(r io.Reader) *lines {
	l := &lines{more: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.all = append(l.all, sc.Text())
			l.mu.Unlock()
			select {
			case l.more <- struct{}{}:
			default:
			}
		}
	}()
	return l
}

// wait returns the first line containing every one of subs, waiting up to
// d; "" when none came.
func (l *lines) wait(d time.Duration, subs ...string) string {
	deadline := time.After(d)
	for {
		l.mu.Lock()
		for _, line := range l.all {
			all := true
			for _, s := range subs {
				all = all && strings.Contains(line, s)
			}
			if all {
				l.mu.Unlock()
				return line
			}
		}
		l.mu.Unlock()
		select {
		case <-l.more:
		case <-deadline:
			return ""
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// The README's service, pasted and built, works against a broker set up as
// `choreo dev` sets up its own: it says that its topic is missing, picks
// the topic up once the order service creates it, handles the order
// service's events with its own reader schema, and stops cleanly.
func TestReadmeService(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the README's service")
	}
	bin := buildReadmeService(t)
	ctx := context.Background()

	t.Run("without configuration", func(t *testing.T) {
		cmd := exec.Command(bin)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("exit %v; want status 1\n%s", err, out)
		}
		if !strings.Contains(string(out), "SCHEMA_REGISTRY_URL: schema: new registry: empty URL") || strings.Contains(string(out), "panic") {
			t.Errorf("output %q; want one error line naming SCHEMA_REGISTRY_URL", out)
		}
	})

	// The broker as `choreo dev` runs it: topics created on first use for
	// clients that ask.
	cluster := kafkatest.New(t, kafkatest.EmbeddedOptions(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3)))
	regURL := kafkatest.SchemaRegistry(t)
	conn := connection.Config{Brokers: cluster.Seeds()}
	embedded := cluster.Embedded() != nil
	if !embedded {
		// A real cluster keeps the group's offsets of earlier runs.
		if _, err := cluster.Admin().DeleteGroups(ctx, "audit-service"); err != nil {
			t.Logf("deleting group audit-service: %v", err)
		}
	}

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "KAFKA_BROKERS="+strings.Join(cluster.Seeds(), ","), "SCHEMA_REGISTRY_URL="+regURL)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	out := collect(pr)

	if embedded {
		// A fresh broker has no topic orders yet.
		if out.wait(30*time.Second, "source topic does not exist", "topic=orders") == "" {
			t.Fatalf("no warning about the missing topic orders:\n%s", out)
		}
	}

	// The order service creates the topic and publishes OrderPlaced
	// (version 2, with fields the README's type leaves out).
	reg, err := schema.NewRegistry([]string{regURL})
	if err != nil {
		t.Fatal(err)
	}
	orders, err := ordersvc.New(ctx, ordersvc.Config{Conn: conn, Registry: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer orders.Close(ctx)
	small, err := orders.Place(ctx, ordersvc.PlaceRequest{Customer: "ada@example.com", AmountCents: 1999})
	if err != nil {
		t.Fatal(err)
	}
	large, err := orders.Place(ctx, ordersvc.PlaceRequest{Customer: "bob@example.com", AmountCents: 75_000, Currency: "CHF"})
	if err != nil {
		t.Fatal(err)
	}
	if out.wait(60*time.Second, "large order", "order="+large.ID, "cents=75000") == "" {
		t.Fatalf("the README's service did not report the large order %s:\n%s", large.ID, out)
	}
	if line := out.wait(0, small.ID); line != "" {
		t.Errorf("the small order was reported: %s", line)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v; want status 0\n%s", err, out)
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("still running 40s after SIGTERM:\n%s", out)
	}
	if strings.Contains(out.String(), "<nil>") || strings.Contains(out.String(), "audit service failed") {
		t.Errorf("the clean shutdown logged <nil> or a failure:\n%s", out)
	}
}

// A choreo producer asks `choreo dev` (a broker that allows it) to create
// a missing topic when given kgo.AllowAutoTopicCreation, as the README
// says.
func TestProducerCreatesTopicWhenAsked(t *testing.T) {
	cluster := kafkatest.New(t, kafkatest.EmbeddedOnly("a real broker's auto-creation setting is its own"),
		kafkatest.EmbeddedOptions(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg, err := schema.NewRegistry([]string{kafkatest.SchemaRegistry(t)})
	if err != nil {
		t.Fatal(err)
	}
	topic := kafkatest.Name(t, "auto")
	p, err := producer.New(ctx, connection.Config{Brokers: cluster.Seeds()}, reg,
		producer.ClientOptions(kgo.AllowAutoTopicCreation()), producer.Subjects(schema.TopicRecordNameStrategy))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	if _, err := p.Publish(ctx, topic, "o-1", events.OrderPlaced{OrderID: "o-1", Customer: "ada@example.com", AmountCents: 1, Currency: "EUR"}); err != nil {
		t.Fatalf("publish to a new topic with AllowAutoTopicCreation: %v", err)
	}
	td, err := cluster.Admin().ListTopics(ctx, topic)
	if err != nil || td[topic].Err != nil || len(td[topic].Partitions) != 3 {
		t.Errorf("topic %s after the publish: %+v, %v; want it with 3 partitions", topic, td[topic], err)
	}
}
