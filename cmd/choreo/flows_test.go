package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/examples/notifications/notificationsvc"
	"github.com/choreokit/choreo/examples/orders/ordersvc"
	"github.com/choreokit/choreo/examples/payments/paymentsvc"
	"github.com/choreokit/choreo/examples/shipping/shippingsvc"
	"github.com/choreokit/choreo/flows"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/schema"
)

// runCmd runs the command line and returns its exit status and outputs.
func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb strings.Builder
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestFlowsBadInput(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "")
	t.Setenv(envFlowsURL, "")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no brokers", []string{"flows"}, 2, "no Kafka brokers: set KAFKA_BROKERS or --brokers"},
		{"bad topics regex", []string{"flows", "--brokers", "127.0.0.1:1", "--topics", "orders("}, 2, `--topics "orders(": not a regular expression`},
		{"bad exclude regex", []string{"flows", "--brokers", "127.0.0.1:1", "--exclude-topics", "["}, 2, "--exclude-topics"},
		{"bad http address", []string{"flows", "--brokers", "127.0.0.1:1", "--http", "nowhere"}, 2, `--http "nowhere": want host:port`},
		{"negative retention", []string{"flows", "--brokers", "127.0.0.1:1", "--retention", "-1h"}, 2, "--retention -1h0m0s"},
		{"argument to flows", []string{"flows", "stuk"}, 2, `unexpected argument "stuk" (subcommand: stuck)`},
		{"bad after", []string{"flows", "stuck", "--after", "soon"}, 2, `--after "soon": want a positive duration`},
		{"zero after", []string{"flows", "stuck", "--after", "0s"}, 2, `--after "0s"`},
		{"bad flows URL", []string{"flows", "stuck", "--flows", "ftp://x"}, 2, `--flows "ftp://x": want an http:// URL`},
		{"trace without id", []string{"trace"}, 2, "want one correlation id, event id or key, got 0 arguments"},
		{"trace with two ids", []string{"trace", "a", "b"}, 2, "got 2 arguments"},
		{"catalog bad output", []string{"catalog", "-o", "xml"}, 2, "want table, json, jsonl, asyncapi or asyncapi-json"},
		{"trace, nothing listening", []string{"trace", "x", "--flows", "http://127.0.0.1:1"}, 1,
			"choreo trace: cannot reach choreo flows at http://127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused (start it with 'choreo flows', or point --flows or CHOREO_FLOWS_URL at it)"},
		{"stuck, nothing listening", []string{"flows", "stuck", "--flows", "http://127.0.0.1:1"}, 1, "cannot reach choreo flows at http://127.0.0.1:1"},
		{"catalog, nothing listening", []string{"catalog", "--flows", "http://127.0.0.1:1"}, 1, "cannot reach choreo flows at http://127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			code, _, stderr := runCmd(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, stderr, tc.code, tc.want)
			}
			if first := strings.SplitN(stderr, "\n", 2)[0]; !strings.Contains(first, tc.want) {
				t.Errorf("the error's first line %q does not say it all", first)
			}
			t.Logf("%v", time.Since(start).Round(time.Millisecond))
		})
	}
}

// shopInProcess runs the example shop's four services on c until the test
// ends; stop stops one by group name.
type shopInProcess struct {
	orders *ordersvc.Service
	mu     sync.Mutex
	stops  map[string]func()
}

func startShop(t *testing.T, conn connection.Config, reg *schema.Registry) *shopInProcess {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := append(demoRetries(), consumer.Logger(log))
	s := &shopInProcess{stops: map[string]func(){}}
	var err error
	if s.orders, err = ordersvc.New(ctx, ordersvc.Config{Conn: conn, Registry: reg, Logger: log, ConsumerOptions: opts}); err != nil {
		t.Fatal(err)
	}
	gw, err := paymentsvc.NewSimulatedGateway(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	pay, err := paymentsvc.New(ctx, paymentsvc.Config{Conn: conn, Registry: reg, Gateway: gw, Logger: log, ConsumerOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	ship, err := shippingsvc.New(ctx, shippingsvc.Config{Conn: conn, Registry: reg, Logger: log, ConsumerOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	notif, err := notificationsvc.New(ctx, notificationsvc.Config{Conn: conn, Registry: reg, Logger: log, ConsumerOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	type svc interface {
		Run(context.Context) error
		Consumer() *consumer.Consumer
	}
	for name, sv := range map[string]svc{ordersvc.Group: s.orders, paymentsvc.Group: pay, shippingsvc.Group: ship, notificationsvc.Group: notif} {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := sv.Run(rctx); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
		var once sync.Once
		s.stops[name] = func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(s.stops[name])
		deadline := time.Now().Add(30 * time.Second)
		for !sv.Consumer().Ready() {
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready: %v", name, sv.Consumer().CheckReady())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Cleanup(func() { _ = pay.Close(ctx); _ = ship.Close(ctx); _ = s.orders.Close(ctx) })
	return s
}

func (s *shopInProcess) stop(group string) {
	s.mu.Lock()
	f := s.stops[group]
	s.mu.Unlock()
	f()
}

// startFlows runs `choreo flows` in this process and returns its API URL.
func startFlows(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &lockedBuffer{}
	errb := &lockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"flows", "--http", "127.0.0.1:0", "--refresh", "200ms"}, args...), out, errb)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("choreo flows exited %d:\n%s", code, errb.String())
		}
	})
	re := regexp.MustCompile(`API on (http://\S+)`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		select {
		case code := <-done:
			t.Fatalf("choreo flows exited %d:\n%s%s", code, out.String(), errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("choreo flows did not start:\n%s%s", out.String(), errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// After the example shop has run, `choreo trace` of an order prints its
// whole story across the four services, `choreo catalog` lists every
// event type with producers and consumers (and as AsyncAPI), and an order
// placed while the shipping service is stopped shows in `choreo flows
// stuck` within the threshold, waiting on it.
func TestTraceCatalogStuckOnTheShop(t *testing.T) {
	c := kafkatest.New(t, kafkatest.EmbeddedOnly("the shop's topic and group names are fixed"))
	regURL := kafkatest.SchemaRegistry(t)
	reg, err := schema.NewRegistry([]string{regURL})
	if err != nil {
		t.Fatal(err)
	}
	conn := connection.Config{Brokers: c.Seeds()}
	shop := startShop(t, conn, reg)
	// Learn the terminal types afresh for every answer: the default
	// reuses them for 5s, and the shop runs faster than that.
	flowsTestHooks.viewOpts = []flows.ViewOption{flows.LearnTTL(0)}
	t.Cleanup(func() { flowsTestHooks.viewOpts = nil })
	url := startFlows(t, "--brokers", strings.Join(c.Seeds(), ","), "--registry", regURL, "--data-dir", t.TempDir(), "--database-url", "")
	ctx := context.Background()

	var ids []string
	for i := range 3 {
		o, err := shop.orders.Place(ctx, ordersvc.PlaceRequest{Customer: fmt.Sprintf("c%d@example.com", i), AmountCents: 1000 + int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.ID)
	}
	// trace by order id (the key), until the whole story is indexed and
	// every consumer has committed.
	var out string
	eventually(t, 60*time.Second, func() error {
		code, stdout, stderr := runCmd(t, "trace", ids[0], "--flows", url)
		out = stdout
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{"OrderPlaced  by order-service on orders", "PaymentAuthorized  by payment-service on payments",
			"ShipmentScheduled  by shipping-service on shipments", "ShipmentDispatched  by shipping-service",
			"OrderCompleted  by order-service", ": completed", "services: order-service → "} {
			if !strings.Contains(stdout, want) {
				return fmt.Errorf("trace has no %q:\n%s", want, stdout)
			}
		}
		if strings.Contains(stdout, "not yet") {
			return fmt.Errorf("not every consumer has committed yet:\n%s", stdout)
		}
		return nil
	})
	t.Logf("choreo trace %s:\n%s", ids[0], out)
	for _, svc := range []string{"notification-service ✓", "payment-service ✓", "shipping-service ✓", "order-service ✓"} {
		if !strings.Contains(out, svc) {
			t.Errorf("trace: no %q", svc)
		}
	}
	// The tree: PaymentAuthorized under OrderPlaced, ShipmentScheduled
	// under it, and so on.
	if !regexp.MustCompile(`(?s)^Flow .*\nOrderPlaced .*\n└─ PaymentAuthorized .*\n   └─ ShipmentScheduled .*\n      └─ ShipmentDispatched .*\n         └─ OrderCompleted `).MatchString(out) {
		t.Errorf("trace is not the causal tree:\n%s", out)
	}
	// JSON: the same flow.
	code, stdout, stderr := runCmd(t, "trace", ids[0], "--flows", url, "-o", "json")
	var fs []flows.Flow
	if code != 0 || json.Unmarshal([]byte(stdout), &fs) != nil || len(fs) != 1 || len(fs[0].Nodes) != 5 || fs[0].Status != flows.StatusCompleted {
		t.Errorf("trace -o json: exit %d, %s\n%.500s", code, stderr, stdout)
	}
	// An id nobody knows.
	code, _, stderr = runCmd(t, "trace", "no-such-order", "--flows", url)
	if code != 1 || !strings.Contains(stderr, `no flow, event or key "no-such-order" in the index at `+url) {
		t.Errorf("trace of an unknown id: exit %d, %s", code, stderr)
	}

	// The catalog: every type, its producers and consumers.
	code, stdout, stderr = runCmd(t, "catalog", "--flows", url)
	if code != 0 {
		t.Fatalf("catalog: exit %d: %s", code, stderr)
	}
	t.Logf("choreo catalog:\n%s", stdout)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`shop\.orders\.OrderPlaced\s+orders\s+order-service\s+notification-service, payment-service\s+id \d+ \(orders-shop\.orders\.OrderPlaced v\d\)`),
		regexp.MustCompile(`shop\.payments\.PaymentAuthorized\s+payments\s+payment-service\s+order-service, shipping-service\s`),
		regexp.MustCompile(`shop\.shipping\.ShipmentScheduled\s+shipments\s+shipping-service\s+notification-service, order-service, shipping-service\s`),
		regexp.MustCompile(`shop\.orders\.OrderCompleted \(terminal\)\s+orders\s+order-service\s`),
	} {
		if !want.MatchString(stdout) {
			t.Errorf("catalog does not match %s", want)
		}
	}
	code, stdout, stderr = runCmd(t, "catalog", "--flows", url, "-o", "asyncapi")
	var doc map[string]any
	if code != 0 || yaml.Unmarshal([]byte(stdout), &doc) != nil || doc["asyncapi"] != "3.0.0" {
		t.Errorf("catalog -o asyncapi: exit %d, %s\n%.300s", code, stderr, stdout)
	} else if ops, _ := doc["operations"].(map[string]any); ops["payment-service.receive.orders"] == nil || ops["order-service.send.orders"] == nil {
		t.Errorf("AsyncAPI operations: %v", ops)
	}

	// Stop the shipping service: an order placed now stalls at
	// PaymentAuthorized, which shipping-service has not consumed.
	shop.stop(shippingsvc.Group)
	o, err := shop.orders.Place(ctx, ordersvc.PlaceRequest{Customer: "late@example.com", AmountCents: 500})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, 60*time.Second, func() error {
		code, stdout, stderr := runCmd(t, "flows", "stuck", "--flows", url, "--after", "2s")
		out = stdout
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, stderr)
		}
		// Stalled at PaymentAuthorized, waiting on shipping-service; and,
		// when the payment landed on a partition where shipping-service
		// has committed before, unconsumed by it too.
		if !regexp.MustCompile(`(?m)^\S+\s+`+regexp.QuoteMeta(o.ID)+`\s+OrderPlaced `).MatchString(stdout) ||
			!regexp.MustCompile(`stalled: no event for \S+ after PaymentAuthorized, which shipping-service reacts to\s+shipping-service\s+.*choreo trace `).MatchString(stdout) {
			return fmt.Errorf("order %s not stuck waiting on shipping-service yet:\n%s", o.ID, stdout)
		}
		return nil
	})
	t.Logf("stuck after %v; choreo flows stuck --after 2s:\n%s", time.Since(start).Round(time.Millisecond), out)
	if !strings.HasPrefix(out, "Stuck after 2s (set with --after). Terminal types (learned: no service reacts to them): shop.orders.OrderCancelled, shop.orders.OrderCompleted.") &&
		!strings.HasPrefix(out, "Stuck after 2s (set with --after). Terminal types (learned: no service reacts to them): shop.orders.OrderCompleted.") {
		t.Errorf("stuck header: %s", strings.SplitN(out, "\n", 2)[0])
	}
	code, stdout, _ = runCmd(t, "flows", "stuck", "--flows", url, "--after", "2s", "-o", "json")
	var items []flows.FlowItem
	if code != 0 || json.Unmarshal([]byte(stdout), &items) != nil || len(items) == 0 {
		t.Errorf("flows stuck -o json: exit %d\n%.300s", code, stdout)
	}
}

// eventually retries check until it returns nil, failing t after within.
func eventually(t *testing.T, within time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
