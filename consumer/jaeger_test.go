package consumer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/tracing"
)

// childService runs one service of the end-to-end trace test in its own
// process, so that each has its own service.name: order publishes one
// order, payment turns orders into payment requests, shipping ships them.
func childService(role string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	shutdown, err := tracing.Setup(ctx, role+"-service")
	if err != nil {
		return err
	}
	defer func() { _ = shutdown(context.Background()) }()
	reg, err := schema.NewRegistry([]string{os.Getenv("CHILD_REGISTRY")})
	if err != nil {
		return err
	}
	conn := connection.Config{Brokers: strings.Split(os.Getenv("CHILD_BROKERS"), ",")}
	prod, err := producer.New(ctx, conn, reg, producer.Source(role+"-service"))
	if err != nil {
		return err
	}
	defer func() { _ = prod.Close(context.Background()) }()
	orders, payments := os.Getenv("CHILD_ORDERS"), os.Getenv("CHILD_PAYMENTS")

	switch role {
	case "order":
		id := os.Getenv("CHILD_ORDER_ID")
		if _, err := prod.Publish(ctx, orders, id, order(id, 42)); err != nil {
			return err
		}
		fmt.Println("published", id)
		return nil
	case "payment", "shipping":
		c, err := consumer.New(conn, reg, os.Getenv("CHILD_GROUP")+"-"+role, consumer.BlockingRetries())
		if err != nil {
			return err
		}
		if role == "payment" {
			consumer.Handle(c, orders, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
				_, err := prod.Publish(ctx, payments, ev.Key, PaymentRequested{OrderID: ev.Data.OrderID, AmountCents: ev.Data.AmountCents})
				return err
			})
		} else {
			consumer.Handle(c, payments, func(ctx context.Context, ev consumer.Event[PaymentRequested]) error {
				fmt.Println("shipped", ev.Data.OrderID)
				return nil
			})
		}
		go func() {
			for !c.Ready() && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
			fmt.Println("ready")
		}()
		return c.Run(ctx)
	}
	return fmt.Errorf("unknown role %q", role)
}

// TestJaegerShowsOneTraceForOneOrder runs order, payment and shipping
// services as separate processes exporting OTLP to a real Jaeger, then asks
// Jaeger's query API for the order's trace: one trace with spans from all
// three services.
func TestJaegerShowsOneTraceForOneOrder(t *testing.T) {
	query := os.Getenv("JAEGER_QUERY_URL")
	if query == "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
		t.Skip("JAEGER_QUERY_URL and OTEL_EXPORTER_OTLP_ENDPOINT not set: skipping the Jaeger end-to-end test (deploy/local/jaeger.sh start)")
	}
	h := newHarness(t, 1)
	payments := h.cluster.Topic(t, 1)
	orderID := kafkatest.Name(t, "order")
	env := append(os.Environ(), "OTEL_TRACES_EXPORTER=otlp", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none",
		"OTEL_BSP_SCHEDULE_DELAY=100",
		"CHILD_BROKERS="+strings.Join(h.cluster.Seeds(), ","), "CHILD_REGISTRY="+h.regURL,
		"CHILD_ORDERS="+h.topic, "CHILD_PAYMENTS="+payments, "CHILD_GROUP="+kafkatest.Group(t), "CHILD_ORDER_ID="+orderID)
	type child struct {
		cmd   *exec.Cmd
		lines chan string
	}
	start := func(role string) child {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(env, envChild+"="+role)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		lines := make(chan string, 16)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		return child{cmd, lines}
	}
	await := func(c child, prefix string) {
		t.Helper()
		timeout := time.After(60 * time.Second)
		for {
			select {
			case l, ok := <-c.lines:
				if !ok {
					t.Fatalf("child exited before printing %q", prefix)
				}
				if strings.HasPrefix(l, prefix) {
					return
				}
			case <-timeout:
				t.Fatalf("child did not print %q within 60s", prefix)
			}
		}
	}
	payment, shipping := start("payment"), start("shipping")
	await(payment, "ready")
	await(shipping, "ready")
	ord := start("order")
	await(ord, "published")
	if err := ord.cmd.Wait(); err != nil {
		t.Fatalf("order service: %v", err)
	}
	await(shipping, "shipped "+orderID)
	for _, c := range []child{payment, shipping} {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		if err := c.cmd.Wait(); err != nil {
			t.Errorf("service exit: %v", err)
		}
	}

	// Jaeger: the order-service trace holding this order's send span.
	want := map[string]bool{"send " + h.topic: false, "process " + h.topic: false, "send " + payments: false, "process " + payments: false}
	services := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		for k := range want {
			want[k] = false
		}
		clear(services)
		tr := findTrace(t, query, "order-service", "send "+h.topic)
		if tr != nil {
			for _, s := range tr.Spans {
				if _, ok := want[s.OperationName]; ok {
					want[s.OperationName] = true
					services[tr.Processes[s.ProcessID].ServiceName] = true
				}
			}
		}
		complete := len(services) == 3
		for _, ok := range want {
			complete = complete && ok
		}
		if complete {
			t.Logf("trace %s: %d spans from %v", tr.TraceID, len(tr.Spans), services)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Jaeger has no single trace with all four spans from three services: spans %v, services %v", want, services)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// findTrace returns the trace of service holding an operation, or nil.
func findTrace(t *testing.T, base, service, operation string) *jaegerTrace {
	t.Helper()
	u := base + "/api/traces?" + url.Values{"service": {service}, "operation": {operation}, "limit": {"5"}, "lookback": {"1h"}}.Encode()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("query Jaeger: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Data []jaegerTrace `json:"data"`
	}
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("Jaeger answer: %v", err)
	}
	if len(body.Data) == 0 {
		return nil
	}
	return &body.Data[0]
}
