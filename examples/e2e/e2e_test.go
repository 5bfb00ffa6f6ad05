// Package e2e tests the example shop end to end: the four services built
// and run as separate processes, as a user runs them, against a broker
// and a schema registry started by the test (or the Kafka cluster that
// KAFKA_BROKERS names, with PostgreSQL when DATABASE_URL is set).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/choreokit/choreo/examples/events"
	"github.com/choreokit/choreo/examples/notifications/notificationsvc"
	"github.com/choreokit/choreo/examples/orders/ordersvc"
	"github.com/choreokit/choreo/examples/payments/paymentsvc"
	"github.com/choreokit/choreo/examples/shipping/shippingsvc"
	"github.com/choreokit/choreo/kafkatest"
)

const (
	orderCount = 200
	limitCents = 100_000
	// failureRate of the gateway's calls. Three failures in a row send an
	// order through the payment service's first retry topic (10s), six
	// through the second (1m): at 10% that is one run in ten with a 10s
	// straggler, and almost never a minute.
	failureRate = 0.1
)

// The shop's 200 orders through the four services as processes, the
// payment service killed with SIGKILL twice mid-run and started again:
// every order ends consistent (paid, shipped and completed; or declined
// and cancelled), none is charged twice, none is lost, and every service
// stops cleanly on SIGTERM.
func TestShopAsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the four services")
	}
	began := time.Now()
	cluster := kafkatest.New(t)
	t.Logf("broker: %s", cluster.Describe(context.Background()))
	resetShop(t, cluster)
	bins := buildServices(t)

	// The payment gateway outlives the payment service, as a real
	// provider does: the service reaches it over HTTP.
	gateway, err := paymentsvc.NewSimulatedGateway(failureRate, 1)
	if err != nil {
		t.Fatal(err)
	}
	gwSrv := httptest.NewServer(gateway)
	t.Cleanup(gwSrv.Close)

	env := map[string]string{
		"KAFKA_BROKERS":       strings.Join(cluster.Seeds(), ","),
		"SCHEMA_REGISTRY_URL": kafkatest.SchemaRegistry(t),
		"HTTP_ADDR":           "127.0.0.1:0",
		"PAYMENT_GATEWAY_URL": gwSrv.URL,
		"PAYMENT_LIMIT_CENTS": fmt.Sprint(limitCents),
		"DATABASE_URL":        os.Getenv("DATABASE_URL"),
	}
	logs := t.TempDir()
	start := func(name string) *process { return startProcess(t, filepath.Join(bins, name), logs, env) }
	orders := start("orders")
	payments := start("payments")
	shipping := start("shipping")
	notifications := start("notifications")
	all := []*process{orders, payments, shipping, notifications}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range all {
				p.dumpLog(t)
			}
		}
	})
	for _, p := range all {
		waitReady(t, p, 60*time.Second)
	}
	t.Logf("%v: built, started and ready", time.Since(began).Round(time.Millisecond))

	api := &orderAPI{base: "http://" + orders.addr}
	var placed []placedOrder
	kill := func(after int) {
		// Kill while the service is busy: once it has charged `after`.
		deadline := time.Now().Add(60 * time.Second)
		for gateway.Stats().Captures < after && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		payments.kill(t)
		t.Logf("%v: payment service killed at %d charges", time.Since(began).Round(time.Millisecond), gateway.Stats().Captures)
		payments = start("payments")
		all = append(all, payments)
	}
	placed = append(placed, api.placeMany(t, 0, 70)...)
	kill(30)
	placed = append(placed, api.placeMany(t, 70, 140)...)
	kill(80)
	placed = append(placed, api.placeMany(t, 140, orderCount)...)

	t.Logf("%v: %d orders placed", time.Since(began).Round(time.Millisecond), len(placed))
	final := api.waitEnded(t, placed, 3*time.Minute)
	t.Logf("%v: every order ended", time.Since(began).Round(time.Millisecond))
	checkOrders(t, placed, final, gateway)
	if url := os.Getenv("DATABASE_URL"); url != "" {
		checkPaymentsTable(t, url, placed)
	}

	// Clean shutdown: SIGTERM, exit 0, a last "stopped" line.
	for _, p := range []*process{orders, payments, shipping, notifications} {
		p.stop(t)
	}
	if s := gateway.Stats(); s.Failures == 0 || s.Replays == 0 {
		t.Logf("gateway %+v: no failure or no replay this run; the run proved less than it could", s)
	}
}

// placedOrder is an order the test placed.
type placedOrder struct {
	id          string
	amountCents int64
}

func (o placedOrder) declined() bool { return o.amountCents > limitCents }

// checkOrders checks every order's end against the payment rule, its
// timeline and the gateway's charges.
func checkOrders(t *testing.T, placed []placedOrder, final map[string]ordersvc.Order, gw *paymentsvc.SimulatedGateway) {
	t.Helper()
	var completed, cancelled int
	for _, p := range placed {
		o := final[p.id]
		want := []string{"OrderPlaced", "PaymentAuthorized", "ShipmentScheduled", "ShipmentDispatched", "OrderCompleted"}
		status, charges := ordersvc.StatusCompleted, 1
		if p.declined() {
			want = []string{"OrderPlaced", "PaymentDeclined", "OrderCancelled"}
			status, charges = ordersvc.StatusCancelled, 0
			cancelled++
		} else {
			completed++
		}
		if o.Status != status {
			t.Errorf("order %s (%d cents): status %s; want %s", p.id, p.amountCents, o.Status, status)
		}
		var got []string
		ids := map[string]bool{}
		for _, e := range o.Timeline {
			if ids[e.EventID] {
				t.Errorf("order %s: event %s twice in the timeline", p.id, e.EventID)
			}
			ids[e.EventID] = true
			got = append(got, e.Type[strings.LastIndexByte(e.Type, '.')+1:])
		}
		slices.Sort(got)
		sorted := slices.Sorted(slices.Values(want))
		if !slices.Equal(got, sorted) {
			t.Errorf("order %s: events %v; want each of %v once", p.id, got, want)
		}
		rec, _ := gw.Order(p.id)
		if rec.Captures != charges {
			t.Errorf("order %s: charged %d times; want %d", p.id, rec.Captures, charges)
		}
	}
	t.Logf("%d orders: %d completed, %d cancelled; gateway %+v", len(placed), completed, cancelled, gw.Stats())
}

// checkPaymentsTable checks the payment service's own record: one row per
// order, with the decision the rule gives.
func checkPaymentsTable(t *testing.T, url string, placed []placedOrder) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("DATABASE_URL: %v", err)
	}
	defer conn.Close(ctx)
	ids := make([]string, len(placed))
	for i, p := range placed {
		ids[i] = p.id
	}
	rows, err := conn.Query(ctx, `SELECT order_id, status, count(*) OVER (PARTITION BY order_id) FROM payments WHERE order_id = ANY($1)`, ids)
	if err != nil {
		t.Fatalf("payments table: %v", err)
	}
	got := map[string]string{}
	for rows.Next() {
		var id, status string
		var n int
		if err := rows.Scan(&id, &status, &n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("order %s: %d rows in payments; want 1", id, n)
		}
		got[id] = status
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, p := range placed {
		want := paymentsvc.StatusAuthorized
		if p.declined() {
			want = paymentsvc.StatusDeclined
		}
		if got[p.id] != want {
			t.Errorf("order %s: payments row %q; want %q", p.id, got[p.id], want)
		}
	}
}

// resetShop makes the shop's topics new: on a real cluster it deletes the
// topics and consumer groups of earlier runs first (the services use fixed
// names), then it creates the three topics.
func resetShop(t *testing.T, c *kafkatest.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	adm := c.Admin()
	groups := []string{ordersvc.Group, paymentsvc.Group, shippingsvc.Group, notificationsvc.Group}
	if c.Embedded() == nil {
		all, err := adm.ListTopics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var old []string
		for _, name := range all.Names() {
			for _, g := range groups {
				if strings.HasPrefix(name, g+".") {
					old = append(old, name)
				}
			}
		}
		old = append(old, events.TopicOrders, events.TopicPayments, events.TopicShipments)
		if _, err := adm.DeleteGroups(ctx, groups...); err != nil {
			t.Logf("deleting groups: %v", err)
		}
		if _, err := adm.DeleteTopics(ctx, old...); err != nil {
			t.Fatalf("deleting topics: %v", err)
		}
		t.Logf("deleted %d topics of earlier runs", len(old))
	}
	// A deleted topic goes away asynchronously: creating it again fails
	// until it has.
	for {
		resp, err := adm.CreateTopics(ctx, events.Partitions, -1, nil, events.TopicOrders, events.TopicPayments, events.TopicShipments)
		if err == nil {
			err = createErr(resp)
		}
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("creating the shop's topics: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func createErr(resp kadm.CreateTopicResponses) error {
	var errs []error
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("%s: %w", r.Topic, r.Err))
		}
		if errors.Is(r.Err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("%s: still being deleted", r.Topic))
		}
	}
	return errors.Join(errs...)
}

// buildServices builds the four services into a temporary directory.
func buildServices(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Without symbol tables and DWARF: linking four binaries is most of
	// the build, and they are not debugged here.
	cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", dir+string(filepath.Separator),
		"./examples/orders", "./examples/payments", "./examples/shipping", "./examples/notifications")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// process is a service running as a process.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	addr    string        // its HTTP listener
	exited  chan struct{} // closed when it has exited
	err     error         // its exit, once exited is closed
}

var starts sync.Map // name → count, for log file names

// startProcess starts bin with env (over this process's environment, less
// the variables the services read) and waits for its "started" log line.
func startProcess(t *testing.T, bin, logDir string, env map[string]string) *process {
	t.Helper()
	name := filepath.Base(bin)
	n, _ := starts.LoadOrStore(name, new(int))
	*n.(*int)++
	p := &process{name: name, logPath: filepath.Join(logDir, fmt.Sprintf("%s-%d.log", name, *n.(*int))), exited: make(chan struct{})}
	p.cmd = exec.Command(bin)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ours := env[k]; !ours && !strings.HasPrefix(k, "OTEL_") && !strings.HasPrefix(k, "KAFKA_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	for k, v := range env {
		if v != "" {
			p.cmd.Env = append(p.cmd.Env, k+"="+v)
		}
	}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	p.cmd.Stderr = io.MultiWriter(logFile, pw)
	p.cmd.Stdout = logFile
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logFile.Close()
		pw.Close()
		close(p.exited)
	}()
	t.Cleanup(func() { p.kill(t) })

	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if !sent && json.Unmarshal(sc.Bytes(), &line) == nil && strings.HasSuffix(line.Msg, "service started") {
				addr <- line.Addr
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case p.addr = <-addr:
	case <-p.exited:
		p.dumpLog(t)
		t.Fatalf("%s exited at start: %v", name, p.err)
	case <-time.After(60 * time.Second):
		p.dumpLog(t)
		t.Fatalf("%s did not start within 60s", name)
	}
	return p
}

// kill sends SIGKILL and waits for the process to go.
func (p *process) kill(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop sends SIGTERM and checks that the process exits 0 within the
// consumer's shutdown timeout, having logged that it stopped.
func (p *process) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(40 * time.Second):
		t.Errorf("%s: still running 40s after SIGTERM", p.name)
		p.kill(t)
		return
	}
	if p.err != nil {
		t.Errorf("%s: exit after SIGTERM: %v; want status 0", p.name, p.err)
	}
	log, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(log, []byte(`service stopped"`)) {
		t.Errorf("%s: no \"stopped\" line in its log after SIGTERM", p.name)
	}
	if bytes.Contains(log, []byte("<nil>")) {
		t.Errorf("%s: its log says <nil>", p.name)
	}
}

// dumpLog logs the end of the process's log.
func (p *process) dumpLog(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Logf("%s: %v", p.name, err)
		return
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	t.Logf("%s (%s), last lines of %d:\n%s", p.name, p.logPath, len(lines), strings.Join(lines[max(0, len(lines)-30):], "\n"))
}

// waitReady waits for the process's /readyz to answer 200.
func waitReady(t *testing.T, p *process, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + p.addr + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready after %v: %s", p.name, within, last)
}

// orderAPI is a client of the order service's HTTP API.
type orderAPI struct{ base string }

// amount is the i-th order's amount: every fifth over the limit.
func amount(i int) int64 {
	if i%5 == 4 {
		return limitCents + 1 + int64(i)
	}
	return 100 + int64(i)*397%(limitCents-100)
}

// placeMany places orders from to to-1, eight at a time.
func (a *orderAPI) placeMany(t *testing.T, from, to int) []placedOrder {
	t.Helper()
	out := make([]placedOrder, to-from)
	var wg sync.WaitGroup
	errs := make(chan error, to-from)
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id, err := a.place(i)
				if err != nil {
					errs <- fmt.Errorf("order %d: %w", i, err)
					continue
				}
				out[i-from] = placedOrder{id: id, amountCents: amount(i)}
			}
		}()
	}
	for i := from; i < to; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return out
}

func (a *orderAPI) place(i int) (string, error) {
	body := fmt.Sprintf(`{"customer": "customer%d@example.com", "amount_cents": %d}`, i, amount(i))
	resp, err := http.Post(a.base+"/orders", "application/json", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var placed struct {
		OrderID       string `json:"order_id"`
		CorrelationID string `json:"correlation_id"`
		Error         string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&placed); err != nil {
		return "", fmt.Errorf("POST /orders: %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusAccepted || placed.OrderID == "" || placed.CorrelationID == "" {
		return "", fmt.Errorf("POST /orders: %s %+v; want 202 with an order id and a correlation id", resp.Status, placed)
	}
	if loc := resp.Header.Get("Location"); loc != "/orders/"+placed.OrderID {
		return "", fmt.Errorf("POST /orders: Location %q; want /orders/%s", loc, placed.OrderID)
	}
	return placed.OrderID, nil
}

func (a *orderAPI) get(id string) (ordersvc.Order, error) {
	resp, err := http.Get(a.base + "/orders/" + id)
	if err != nil {
		return ordersvc.Order{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ordersvc.Order{}, fmt.Errorf("GET /orders/%s: %s", id, resp.Status)
	}
	var o ordersvc.Order
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil {
		return ordersvc.Order{}, fmt.Errorf("GET /orders/%s: %w", id, err)
	}
	return o, nil
}

// waitEnded polls the orders until each is completed or cancelled, and
// returns them as GET /orders/{id} last showed them.
func (a *orderAPI) waitEnded(t *testing.T, placed []placedOrder, within time.Duration) map[string]ordersvc.Order {
	t.Helper()
	final := map[string]ordersvc.Order{}
	deadline := time.Now().Add(within)
	for {
		pending := 0
		var example string
		for _, p := range placed {
			if o, ok := final[p.id]; ok && (o.Status == ordersvc.StatusCompleted || o.Status == ordersvc.StatusCancelled) {
				continue
			}
			o, err := a.get(p.id)
			if err != nil {
				t.Fatalf("order %s lost: %v", p.id, err)
			}
			final[p.id] = o
			if o.Status != ordersvc.StatusCompleted && o.Status != ordersvc.StatusCancelled {
				pending++
				example = fmt.Sprintf("%s is %s", p.id, o.Status)
			}
		}
		if pending == 0 {
			return final
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %d orders have not ended (%s)", within, pending, example)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
