package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/examples/events"
	"github.com/choreokit/choreo/examples/orders/ordersvc"
	"github.com/choreokit/choreo/examples/payments/paymentsvc"
	"github.com/choreokit/choreo/examples/shipping/shippingsvc"
	"github.com/choreokit/choreo/kafkatest"
)

// demoArgs returns the demo's command line for this test: on the embedded
// stack, or on the cluster KAFKA_BROKERS names with a registry (the one
// SCHEMA_REGISTRY_URL names, or an embedded one served for the test).
func demoArgs(t *testing.T, args ...string) []string {
	t.Helper()
	out := append([]string{"demo", "--log-file", filepath.Join(t.TempDir(), "demo.log")}, args...)
	if os.Getenv(kafkatest.EnvBrokers) != "" {
		out = append(out, "--registry", kafkatest.SchemaRegistry(t))
	}
	return out
}

// runDemoForTest runs `choreo demo` in this process and returns its exit
// status and output.
func runDemoForTest(t *testing.T, args []string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// The demo with every hazard on: gateway failures, the poison record, the
// payment service restarted mid-run. It must end consistent and say so.
func TestDemoChaos(t *testing.T) {
	code, stdout, stderr := runDemoForTest(t, demoArgs(t, "--orders", "40", "--chaos", "--failure-rate", "0.3", "--seed", "11"))
	if code != 0 {
		t.Fatalf("choreo demo exited %d; want 0\nstderr: %s\nstdout:\n%s", code, stderr, stdout)
	}
	for _, want := range []string{
		"orders placed 40/40",                      // the progress line, plain lines when not a terminal
		"correlation id ",                          // a timeline
		"order-service          OrderPlaced",       // with the service that published each event
		"payment-service        PaymentAuthorized", //
		"payment-service        PaymentDeclined",   // a cancelled order's timeline
		"gateway call failed",                      // a retried order's timeline
		"40 placed: 32 completed, 8 cancelled",     // every fifth is over the limit
		"dead letters  2 (payment-service: bad_magic_byte 1; notification-service: bad_magic_byte 1)",
		"latency       OrderPlaced to completed or cancelled: p50 ",
		"chaos         payment service stopped after order 13 of 40",
		"consistency   ok",
		dlq.Topic(paymentsvc.Group), // the dead letter itself
		"dlq list payment-service",  // and how to look at it
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the report does not say %q:\n%s", want, stdout)
		}
	}
	if stderr != "" {
		t.Errorf("stderr: %s; want nothing", stderr)
	}
}

// doubleCharger is a broken payment integration: the first call for each
// order goes out under a key of its own and its answer is "lost", so the
// retry charges the order again.
type doubleCharger struct {
	inner paymentsvc.Gateway
	mu    sync.Mutex
	seen  map[string]bool
}

func (g *doubleCharger) Charge(ctx context.Context, req paymentsvc.ChargeRequest) (paymentsvc.Charge, error) {
	g.mu.Lock()
	first := !g.seen[req.OrderID]
	g.seen[req.OrderID] = true
	g.mu.Unlock()
	if !first {
		return g.inner.Charge(ctx, req)
	}
	req.IdempotencyKey += "/first-try"
	if _, err := g.inner.Charge(ctx, req); err != nil {
		return paymentsvc.Charge{}, err
	}
	return paymentsvc.Charge{}, fmt.Errorf("%w: the answer was lost", paymentsvc.ErrUnavailable)
}

// A demo whose payment integration charges twice must fail, and say why.
func TestDemoFailsWhenAnOrderIsChargedTwice(t *testing.T) {
	demoTestHooks.gateway = func(g paymentsvc.Gateway) paymentsvc.Gateway {
		return &doubleCharger{inner: g, seen: map[string]bool{}}
	}
	t.Cleanup(func() { demoTestHooks.gateway = nil })
	code, stdout, stderr := runDemoForTest(t, demoArgs(t, "--orders", "10", "--failure-rate", "0"))
	if code != 1 {
		t.Fatalf("choreo demo exited %d; want 1\nstderr: %s\nstdout:\n%s", code, stderr, stdout)
	}
	if !strings.HasPrefix(stderr, "choreo demo: ") || !strings.Contains(stderr, "consistency check(s) failed") || !strings.Contains(stderr, "charged 2 times") {
		t.Errorf("stderr: %q; want one line naming the double charge", stderr)
	}
	if strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("stderr has several lines: %q", stderr)
	}
	if !strings.Contains(stdout, "consistency   8 problems:") {
		t.Errorf("the summary does not list the 8 double charges (2 of the 10 orders are declined):\n%s", stdout)
	}
}

func TestDemoUsage(t *testing.T) {
	t.Setenv(kafkatest.EnvBrokers, "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--orders", "-1"}, "choreo demo: --orders -1: want 1 to 100000"},
		{[]string{"demo", "--orders", "0"}, "choreo demo: --orders 0: want 1 to 100000"},
		{[]string{"demo", "--orders", "many"}, `invalid argument "many" for "--orders" flag`},
		{[]string{"demo", "--failure-rate", "1"}, "choreo demo: --failure-rate 1: want at least 0 and below 1"},
		{[]string{"demo", "--failure-rate", "-0.1"}, "choreo demo: --failure-rate -0.1: want at least 0 and below 1"},
		{[]string{"demo", "--limit-cents", "0"}, "choreo demo: --limit-cents 0: want at least 1"},
		{[]string{"demo", "--timeout", "0s"}, "choreo demo: --timeout 0s: want more than 0"},
		{[]string{"demo", "--brokers", "127.0.0.1:1", "--registry", ""}, "choreo demo: --brokers needs a schema registry"},
		{[]string{"demo", "--brokers", "no-port"}, "choreo demo: --brokers"},
		{[]string{"demo", "now"}, `choreo demo: unexpected argument "now"`},
	} {
		t.Run(strings.Join(tc.args[1:], " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tc.args, &stdout, &stderr); code != 2 {
				t.Errorf("exit %d; want 2 (stderr %q)", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q; want %q", stderr.String(), tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q; want nothing", stdout.String())
			}
		})
	}
}

// demoTestOrder builds an order as the checks see it: the events of its
// timeline (by short type name) and the gateway's charges.
func demoTestOrder(id string, amount int64, status string, captures int, types ...string) demoOrder {
	o := demoOrder{id: id, amountCents: amount, known: true, gateway: paymentsvc.OrderRecord{Captures: captures}}
	o.view = ordersvc.Order{ID: id, Status: status}
	at := time.Unix(1000, 0)
	for i, typ := range types {
		at = at.Add(time.Duration(i+1) * time.Millisecond)
		o.view.Timeline = append(o.view.Timeline, ordersvc.Entry{EventID: fmt.Sprintf("%s-%d", id, i), Type: fullType(typ), Time: at})
	}
	return o
}

// fullType returns the Avro full name of the event type named short.
func fullType(short string) string {
	for _, ev := range events.All() {
		if name := ev.AvroSchema().FullName(); shortType(name) == short {
			return name
		}
	}
	return short
}

func TestCheckDemo(t *testing.T) {
	const limit = 1000
	completed := func(id string) demoOrder {
		return demoTestOrder(id, 500, ordersvc.StatusCompleted, 1, "OrderPlaced", "PaymentAuthorized", "ShipmentScheduled", "ShipmentDispatched", "OrderCompleted")
	}
	cancelled := func(id string) demoOrder {
		return demoTestOrder(id, 5000, ordersvc.StatusCancelled, 0, "OrderPlaced", "PaymentDeclined", "OrderCancelled")
	}
	poison := []demoDeadLetter{
		{dl: &dlq.DeadLetter{Group: paymentsvc.Group, Original: dlq.Original{Key: []byte("p")}}},
		{dl: &dlq.DeadLetter{Group: "notification-service", Original: dlq.Original{Key: []byte("p")}}},
	}
	for _, tc := range []struct {
		name   string
		orders []demoOrder
		ledger map[string]string
		dls    []demoDeadLetter
		want   []string // each a problem, in order; none: consistent
	}{
		{name: "consistent", orders: []demoOrder{completed("a"), cancelled("b")}, dls: poison},
		{name: "consistent with a ledger", orders: []demoOrder{completed("a"), cancelled("b")}, dls: poison,
			ledger: map[string]string{"a": "authorized", "b": "declined"}},
		{name: "charged twice", orders: []demoOrder{func() demoOrder { o := completed("a"); o.gateway.Captures = 2; return o }()}, dls: poison,
			want: []string{"order a: charged 2 times"}},
		{name: "paid, not charged", orders: []demoOrder{func() demoOrder { o := completed("a"); o.gateway.Captures = 0; return o }()}, dls: poison,
			want: []string{"order a: charged 0 times; want 1"}},
		{name: "declined, charged", orders: []demoOrder{func() demoOrder { o := cancelled("b"); o.gateway.Captures = 1; return o }()}, dls: poison,
			want: []string{"order b: charged 1 times; want 0"}},
		{name: "two authorizations", orders: []demoOrder{demoTestOrder("a", 500, ordersvc.StatusCompleted, 1,
			"OrderPlaced", "PaymentAuthorized", "PaymentAuthorized", "ShipmentScheduled", "ShipmentDispatched", "OrderCompleted")}, dls: poison,
			want: []string{"order a: 2 PaymentAuthorized events; want 1"}},
		{name: "over the limit but completed", orders: []demoOrder{demoTestOrder("c", 5000, ordersvc.StatusCompleted, 1,
			"OrderPlaced", "PaymentAuthorized", "ShipmentScheduled", "ShipmentDispatched", "OrderCompleted")}, dls: poison,
			want: []string{
				"order c: status completed; want cancelled (amount 50.00, limit 10.00)",
				"order c: 0 OrderCancelled events; want 1", "order c: 1 OrderCompleted events; want 0",
				"order c: 1 PaymentAuthorized events; want 0", "order c: 0 PaymentDeclined events; want 1",
				"order c: 1 ShipmentDispatched events; want 0", "order c: 1 ShipmentScheduled events; want 0",
				"order c: charged 1 times; want 0",
			}},
		{name: "not ended", orders: []demoOrder{demoTestOrder("a", 500, ordersvc.StatusPaid, 1, "OrderPlaced", "PaymentAuthorized")}, dls: poison,
			want: []string{"order a: status paid; want completed (amount 5.00, limit 10.00)",
				"order a: 0 OrderCompleted events; want 1", "order a: 0 ShipmentDispatched events; want 1", "order a: 0 ShipmentScheduled events; want 1"}},
		{name: "lost", orders: []demoOrder{{id: "z", amountCents: 10}}, dls: poison,
			want: []string{"order z: lost: the order service does not know it"}},
		{name: "ledger disagrees", orders: []demoOrder{completed("a")}, dls: poison, ledger: map[string]string{},
			want: []string{`order a: payments table says ""; want "authorized"`}},
		{name: "poison not dead-lettered", orders: []demoOrder{completed("a")}, dls: poison[:1],
			want: []string{"the poison record is not in notification-service.dlq: lost"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := checkDemo(demoFacts{limitCents: limit, orders: tc.orders, ledger: tc.ledger}, tc.dls, "p")
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 200; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    int
		want time.Duration
	}{{50, 100 * time.Millisecond}, {99, 198 * time.Millisecond}, {100, 200 * time.Millisecond}, {1, 2 * time.Millisecond}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("p%d of 1..200ms = %v; want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(ds[:1], 99); got != time.Millisecond {
		t.Errorf("p99 of one = %v; want 1ms", got)
	}
}

// A demo on a cluster whose topics hold records of earlier runs (left
// unhandled, or written with another registry's schema ids) must not
// handle them: it skips them, says how many, and reports this run alone.
func TestDemoSkipsWhatEarlierRunsLeft(t *testing.T) {
	c := kafkatest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := connection.Config{Brokers: c.Seeds()}
	redrive := dlq.RedriveTopic(paymentsvc.Group)
	if err := events.CreateTopics(ctx, conn, events.TopicOrders, redrive); err != nil {
		t.Fatal(err)
	}
	cl := c.Client(t)
	var left []*kgo.Record
	for i := range 5 {
		// Schema id 7 of some other registry, and not Avro either.
		left = append(left, &kgo.Record{Topic: events.TopicOrders, Key: fmt.Appendf(nil, "left-%d", i), Value: []byte("\x00\x00\x00\x00\x07garbage"),
			Headers: []kgo.RecordHeader{{Key: choreo.HeaderType, Value: []byte(events.OrderPlaced{}.AvroSchema().FullName())}}})
	}
	left = append(left, &kgo.Record{Topic: redrive, Key: []byte("left-redrive"), Value: []byte("not a dead letter")})
	if err := cl.ProduceSync(ctx, left...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runDemoForTest(t, []string{"demo", "--log-file", filepath.Join(t.TempDir(), "demo.log"),
		"--brokers", strings.Join(c.Seeds(), ","), "--registry", kafkatest.SchemaRegistry(t), "--orders", "10", "--failure-rate", "0", "--seed", "5"})
	if code != 0 {
		t.Fatalf("choreo demo exited %d; want 0\nstderr: %s\nstdout:\n%s", code, stderr, stdout)
	}
	m := regexp.MustCompile(`skipped (\d+) record\(s\) earlier runs left unhandled \((.*)\)`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("the demo does not say what it skipped:\n%s", stdout)
	}
	// On a shared real cluster other runs may have left more.
	for topic, least := range map[string]int{events.TopicOrders: 5, redrive: 1} {
		n := regexp.MustCompile(regexp.QuoteMeta(topic) + ` (\d+)`).FindStringSubmatch(m[2])
		if n == nil {
			t.Errorf("skipped %q does not name %s", m[2], topic)
			continue
		}
		if got, _ := strconv.Atoi(n[1]); got < least {
			t.Errorf("skipped %d of %s; want at least %d", got, topic, least)
		}
	}
	for _, want := range []string{
		"10 placed: 8 completed, 2 cancelled",
		"dead letters  2 (payment-service: bad_magic_byte 1; notification-service: bad_magic_byte 1)",
		"consistency   ok",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the report does not say %q:\n%s", want, stdout)
		}
	}
}

// A demo on a cluster where one of the services' groups has members (the
// services running elsewhere) must stop before placing an order, and say
// which group.
func TestDemoRefusesAGroupWithMembers(t *testing.T) {
	c := kafkatest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := events.CreateTopics(ctx, connection.Config{Brokers: c.Seeds()}, events.TopicOrders); err != nil {
		t.Fatal(err)
	}
	member := c.Client(t, kgo.ConsumerGroup(shippingsvc.Group), kgo.ConsumeTopics(events.TopicOrders))
	for {
		described, err := c.Admin().DescribeGroups(ctx, shippingsvc.Group)
		if err == nil && len(described[shippingsvc.Group].Members) > 0 {
			break
		}
		pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		member.PollRecords(pctx, 1) // joins the group
		pcancel()
		if ctx.Err() != nil {
			t.Fatalf("the member never joined group %s: %v", shippingsvc.Group, err)
		}
	}
	code, stdout, stderr := runDemoForTest(t, []string{"demo", "--log-file", filepath.Join(t.TempDir(), "demo.log"),
		"--brokers", strings.Join(c.Seeds(), ","), "--registry", kafkatest.SchemaRegistry(t), "--orders", "5"})
	if code != 1 {
		t.Fatalf("choreo demo exited %d; want 1\nstderr: %s\nstdout:\n%s", code, stderr, stdout)
	}
	if !strings.Contains(stderr, "group "+shippingsvc.Group+" has 1 member(s)") {
		t.Errorf("stderr: %q; want it to name the group with a member", stderr)
	}
	if strings.Contains(stdout, "orders placed") {
		t.Errorf("orders were placed:\n%s", stdout)
	}
}
