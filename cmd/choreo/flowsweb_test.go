package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

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

// flakyAmount is the amount of the order whose payment the gateway fails
// three times (the consumer's in-memory attempts under demoRetries), so
// that the order goes through a retry topic.
const flakyAmount = 4242

// flakyGateway fails the first three charges of orders of flakyAmount.
type flakyGateway struct {
	paymentsvc.Gateway
	mu    sync.Mutex
	calls map[string]int
}

func (g *flakyGateway) Charge(ctx context.Context, req paymentsvc.ChargeRequest) (paymentsvc.Charge, error) {
	if req.AmountCents == flakyAmount {
		g.mu.Lock()
		g.calls[req.OrderID]++
		n := g.calls[req.OrderID]
		g.mu.Unlock()
		if n <= 3 {
			return paymentsvc.Charge{}, errors.New("gateway timeout (simulated)")
		}
	}
	return g.Gateway.Charge(ctx, req)
}

// runShop runs the example shop's four services in this process until the
// test ends, the payment service on gw.
func runShop(t *testing.T, conn connection.Config, reg *schema.Registry, gw paymentsvc.Gateway) *ordersvc.Service {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := append(demoRetries(), consumer.Logger(log))
	orders, err := ordersvc.New(ctx, ordersvc.Config{Conn: conn, Registry: reg, Logger: log, ConsumerOptions: opts})
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
	t.Cleanup(func() { _ = pay.Close(ctx); _ = ship.Close(ctx); _ = orders.Close(ctx) })
	type svc interface {
		Run(context.Context) error
		Consumer() *consumer.Consumer
	}
	for name, sv := range map[string]svc{ordersvc.Group: orders, paymentsvc.Group: pay, shippingsvc.Group: ship, notificationsvc.Group: notif} {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := sv.Run(rctx); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
		t.Cleanup(func() { cancel(); <-done })
		deadline := time.Now().Add(30 * time.Second)
		for !sv.Consumer().Ready() {
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready: %v", name, sv.Consumer().CheckReady())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return orders
}

// browser starts headless Chromium for the test: the Debian package's
// binary, without the sandbox (tests run as root). Without it the test
// skips, but not in CI (.ci/run installs it).
func browser(t *testing.T) context.Context {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium not installed: .ci/run installs the Debian package chromium")
		}
		t.Skip("chromium not installed (apt-get install chromium; .ci/run installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900), chromedp.Flag("disable-gpu", true), chromedp.Flag("lang", "en-GB"))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// screenshots returns where the test saves its screenshots: $CHOREO_SCREENSHOTS,
// or a directory of the test's own.
func screenshots(t *testing.T) string {
	dir := os.Getenv("CHOREO_SCREENSHOTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The page of `choreo flows --allow-redrive`, in a real browser, over the
// example shop on the embedded broker: the list shows the flows the index
// has; a flow opens as a diagram whose lanes, events and consumers are the
// API's, with the retry marked; the list filtered to dead letters leads to
// the poison record's flow, then to its dead letter, which the page
// redrives after a confirmation; the catalog draws the API's graph; a bad
// filter gets a 400 page. Each view is saved as a screenshot.
func TestFlowsPageInABrowser(t *testing.T) {
	c := kafkatest.New(t, kafkatest.EmbeddedOnly("the shop's topic and group names are fixed"))
	bctx := browser(t)
	regURL := kafkatest.SchemaRegistry(t)
	reg, err := schema.NewRegistry([]string{regURL})
	if err != nil {
		t.Fatal(err)
	}
	conn := connection.Config{Brokers: c.Seeds()}
	sim, err := paymentsvc.NewSimulatedGateway(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	orders := runShop(t, conn, reg, &flakyGateway{Gateway: sim, calls: map[string]int{}})
	flowsTestHooks.viewOpts = []flows.ViewOption{flows.LearnTTL(0)}
	t.Cleanup(func() { flowsTestHooks.viewOpts = nil })
	base := startFlows(t, "--brokers", strings.Join(c.Seeds(), ","), "--registry", regURL, "--data-dir", t.TempDir(), "--allow-redrive")
	cl, err := flows.NewClient(base)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	shots := screenshots(t)
	start := time.Now()

	// Two orders, one of which goes through a retry topic, and the demo's
	// poison record, which the services that read orders dead-letter.
	okOrder, err := orders.Place(ctx, ordersvc.PlaceRequest{Customer: "ada@example.com", AmountCents: 1999})
	if err != nil {
		t.Fatal(err)
	}
	flaky, err := orders.Place(ctx, ordersvc.PlaceRequest{Customer: "grace@example.com", AmountCents: flakyAmount})
	if err != nil {
		t.Fatal(err)
	}
	d := &demo{conn: conn, runID: "web"}
	if err := d.injectPoison(ctx); err != nil {
		t.Fatal(err)
	}
	flowOf := func(key string) (flows.Flow, error) {
		ms, err := cl.Lookup(ctx, key, 5)
		if err != nil || len(ms) != 1 {
			return flows.Flow{}, fmt.Errorf("lookup %s: %v, %v", key, ms, err)
		}
		return cl.Flow(ctx, ms[0].CorrelationID, flows.Thresholds{})
	}
	var fOK, fFlaky, fPoison flows.Flow
	eventually(t, 60*time.Second, func() error {
		var err error
		for _, x := range []struct {
			key    string
			f      *flows.Flow
			events int
			status flows.Status
		}{{okOrder.ID, &fOK, 5, flows.StatusCompleted}, {flaky.ID, &fFlaky, 5, flows.StatusCompleted}, {d.poisonKey, &fPoison, 1, flows.StatusDeadLetter}} {
			if *x.f, err = flowOf(x.key); err != nil {
				return err
			}
			if len(x.f.Nodes) != x.events || x.f.Status != x.status {
				return fmt.Errorf("flow of %s: %d events, %s; want %d, %s", x.key, len(x.f.Nodes), x.f.Status, x.events, x.status)
			}
			for _, n := range x.f.Nodes {
				for _, c := range n.Consumers {
					if c.Status == "pending" || c.Status == "retrying" {
						return fmt.Errorf("flow of %s: %s is %s for %s", x.key, c.Group, c.Status, n.Type)
					}
				}
			}
		}
		if fFlaky.Retries == 0 || fPoison.DeadLetters < 2 {
			return fmt.Errorf("%d retries of the flaky order, %d dead letters of the poison record; want 1 and 2", fFlaky.Retries, fPoison.DeadLetters)
		}
		return nil
	})
	t.Logf("the shop's flows are indexed after %v", time.Since(start).Round(time.Millisecond))

	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(what, js string, v any) {
		t.Helper()
		res, err := chromedp.Run(bctx, chromedp.Evaluate[string](`JSON.stringify(`+js+`)`))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := json.Unmarshal([]byte(res), v); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, res)
		}
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		p := filepath.Join(shots, name+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d KiB)", p, len(png)>>10)
	}
	location := func() string {
		t.Helper()
		loc, err := chromedp.Run(bctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(loc)
		return u.RequestURI()
	}

	// 1. The list: the flows of the index, with their statuses.
	run("open the list", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("table.flows")))
	var listed []struct{ ID, Status string }
	eval("read the list", `[...document.querySelectorAll("tr[data-flow]")].map(r => ({ID: r.dataset.flow, Status: r.dataset.status}))`, &listed)
	api, err := cl.Stuck(ctx, flows.Thresholds{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range listed {
		got[r.ID] = r.Status
	}
	for _, f := range []flows.Flow{fOK, fFlaky, fPoison} {
		if got[f.CorrelationID] != string(f.Status) {
			t.Errorf("the list shows flow %s as %q; the API says %s", f.CorrelationID, got[f.CorrelationID], f.Status)
		}
	}
	if len(listed) != 3 {
		t.Errorf("the list shows %d flows; want 3: %v", len(listed), listed)
	}
	if n := len(api.Flows); n != 1 {
		t.Errorf("the API has %d stuck flows; want the poison record's", n)
	}
	shot("flows-list")

	// 2. Open the flaky order's flow: lanes, events and consumers as the
	// API has them, the retry marked.
	run("open the flaky order's flow", chromedp.Click(chromedp.CSS(`a[data-flow-link="`+fFlaky.CorrelationID+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("svg.sequence")))
	if loc := location(); loc != "/flows/"+url.PathEscape(fFlaky.CorrelationID) {
		t.Errorf("the link led to %s", loc)
	}
	checkFlowPage(t, eval, fFlaky)
	shot("flow-timeline")

	// 3. The list filtered to dead letters, as a person would: choose the
	// status, press Show.
	run("filter the list", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#f-status")),
		chromedp.SetValue(chromedp.CSS("#f-status"), "dead_letter"), chromedp.Click(chromedp.CSS(`form.filters button[type="submit"]`)),
		chromedp.WaitReady(chromedp.CSS(`#f-status option[value="dead_letter"][selected]`)))
	if loc := location(); loc != "/?status=dead_letter&limit=100" {
		t.Errorf("the filter led to %s; want /?status=dead_letter&limit=100 (empty fields left out)", loc)
	}
	eval("read the filtered list", `[...document.querySelectorAll("tr[data-flow]")].map(r => ({ID: r.dataset.flow, Status: r.dataset.status}))`, &listed)
	if len(listed) != 1 || listed[0].ID != fPoison.CorrelationID {
		t.Errorf("flows with a dead letter: %v; want the poison record's, %s", listed, fPoison.CorrelationID)
	}
	run("open the poison record's flow", chromedp.Click(chromedp.CSS(`a[data-flow-link="`+fPoison.CorrelationID+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("svg.sequence")))
	checkFlowPage(t, eval, fPoison)

	// 4. Its dead letter in the payment service.
	var dl flows.Failure
	for _, f := range fPoison.Nodes[0].Failures {
		if f.Kind == flows.KindDeadLetter && f.Group == paymentsvc.Group {
			dl = f
		}
	}
	coords := fmt.Sprintf("%s/%d/%d", dl.Group, dl.Partition, dl.Offset)
	dlPath := fmt.Sprintf("/services/%s/deadletters/%d/%d", dl.Group, dl.Partition, dl.Offset)
	run("open the dead letter", chromedp.Click(chromedp.CSS(`a.dl-link[data-dl="`+coords+`"]`)), chromedp.WaitVisible(chromedp.CSS("#redrive-start")))
	if loc := location(); loc != dlPath {
		t.Errorf("the dead letter's link led to %s", loc)
	}
	redriveCmd, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#cmd-redrive")))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("choreo dlq redrive %s %d:%d", dl.Group, dl.Partition, dl.Offset); redriveCmd != want {
		t.Errorf("the redrive command shown: %q; want %q", redriveCmd, want)
	}
	shot("dead-letter")

	// 5. Redrive it from the page: confirm, then it is sent; the index
	// sees the redrive (and the poison record's new dead letter).
	run("ask to redrive", chromedp.Click(chromedp.CSS("#redrive-start")), chromedp.WaitVisible(chromedp.CSS("#redrive-confirm")))
	run("confirm", chromedp.Click(chromedp.CSS("#redrive-confirm")), chromedp.WaitVisible(chromedp.CSS("#redrive-result")))
	var result struct{ OK, Report string }
	eval("read the result", `({OK: document.getElementById("redrive-result").dataset.ok, Report: (document.querySelector("pre.report") || {}).textContent || ""})`, &result)
	if result.OK != "true" || !strings.Contains(result.Report, "sent") {
		t.Errorf("redrive from the page: ok=%s\n%s", result.OK, result.Report)
	}
	t.Logf("redrive from the page:\n%s", result.Report)
	eventually(t, 30*time.Second, func() error {
		f, err := cl.Flow(ctx, fPoison.CorrelationID, flows.Thresholds{})
		if err != nil {
			return err
		}
		if f.Redrives != 1 || f.DeadLetters != 3 {
			return fmt.Errorf("poison flow: %d redrives, %d dead letters; want 1 redrive, and a third dead letter (it fails again)", f.Redrives, f.DeadLetters)
		}
		return nil
	})
	// The poison record's flow now shows the redrive and the dead letter
	// it led to.
	run("open the poison record's flow again", chromedp.Navigate(base+"/flows/"+url.PathEscape(fPoison.CorrelationID)),
		chromedp.WaitVisible(chromedp.CSS("svg.sequence")))
	var marks struct{ Redrives, DeadLetters, Badges int }
	eval("read the marks", `({Redrives: document.querySelectorAll('tr[data-kind="redrive"]').length,
		DeadLetters: document.querySelectorAll('tr[data-kind="dead_letter"]').length,
		Badges: document.querySelectorAll("svg.sequence rect.badge").length})`, &marks)
	if marks.Redrives != 1 || marks.DeadLetters != 3 || marks.Badges != 4 {
		t.Errorf("the poison record's flow shows %+v; want 1 redrive and 3 dead letters, each marked in the diagram", marks)
	}
	shot("flow-dead-letters")
	// The same POST from another site is refused.
	req, _ := http.NewRequest("POST", base+dlPath+"/redrive", strings.NewReader("confirm=yes"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a cross-site redrive: %v %v; want 403", resp, err)
	} else {
		resp.Body.Close()
	}

	// 6. The catalog: the API's graph.
	run("open the catalog", chromedp.Navigate(base+"/catalog"), chromedp.WaitVisible(chromedp.CSS("svg.catalog")))
	cat, err := cl.Catalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var drawn struct {
		Nodes []string
		Edges int
	}
	eval("read the graph", `({Nodes: [...new Set([...document.querySelectorAll("svg.catalog [data-node]")].map(n => n.dataset.node))], Edges: document.querySelectorAll("svg.catalog path.edge").length})`, &drawn)
	var ids []string
	for _, n := range cat.Graph.Nodes {
		ids = append(ids, n.ID)
	}
	sort.Strings(ids)
	sort.Strings(drawn.Nodes)
	if !slices.Equal(drawn.Nodes, ids) || drawn.Edges != len(cat.Graph.Edges) {
		t.Errorf("graph drawn: %v, %d edges\nthe API's: %v, %d edges", drawn.Nodes, drawn.Edges, ids, len(cat.Graph.Edges))
	}
	shot("catalog-graph")

	// 7. A bad filter: a 400 page that says what is wrong.
	resp, err := http.Get(base + "/?status=nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET /?status=nope: %d; want 400", resp.StatusCode)
	}
	run("a bad filter", chromedp.Navigate(base+"/?status=nope"), chromedp.WaitVisible(chromedp.CSS(".error-message")))
	msg, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(".error-message")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, `status "nope": want running, completed, stuck or dead_letter`) {
		t.Errorf("the 400 page says %q", msg)
	}
	t.Logf("done in %v", time.Since(start).Round(time.Millisecond))
}

// pageRow is an event row of a flow's page as the test reads it.
type pageRow struct {
	Event, Type, Source string
	Consumers           []string // group=status
}

// checkFlowPage compares the flow page in the browser with the API's flow:
// the lanes, the events with their producers and consumers, an arrow per
// consumer, a row per retry and dead letter.
func checkFlowPage(t *testing.T, eval func(what, js string, v any), f flows.Flow) {
	t.Helper()
	var page struct {
		Lanes    []string
		Rows     []pageRow
		Arrows   int
		Failures []string // kind group
	}
	eval("read the flow", `({
		Lanes: [...document.querySelectorAll("svg.sequence [data-lane]")].map(l => l.dataset.lane),
		Rows: [...document.querySelectorAll('tr[data-kind="event"]')].map(r => ({Event: r.dataset.event, Type: r.dataset.type, Source: r.dataset.source,
			Consumers: [...r.querySelectorAll("li[data-group]")].map(c => c.dataset.group + "=" + c.dataset.status)})),
		Arrows: document.querySelectorAll("svg.sequence g.arrow").length,
		Failures: [...document.querySelectorAll('tr[data-kind="retry"], tr[data-kind="dead_letter"]')].map(r => r.dataset.kind + " " + r.dataset.group),
	})`, &page)
	if !slices.Equal(page.Lanes, f.Lanes) {
		t.Errorf("flow %s: lanes %v; the API's %v", f.CorrelationID, page.Lanes, f.Lanes)
	}
	var want []pageRow
	arrows := 0
	var failures []string
	nodes := slices.Clone(f.Nodes)
	sort.SliceStable(nodes, func(i, j int) bool { return nodes[i].Time.Before(nodes[j].Time) })
	for _, n := range nodes {
		r := pageRow{Event: n.EventID, Type: n.Type, Source: n.Source, Consumers: []string{}}
		for _, c := range n.Consumers {
			r.Consumers = append(r.Consumers, c.Group+"="+c.Status)
		}
		arrows += len(n.Consumers)
		want = append(want, r)
		for _, fl := range n.Failures {
			failures = append(failures, string(fl.Kind)+" "+fl.Group)
		}
	}
	if fmt.Sprint(page.Rows) != fmt.Sprint(want) {
		t.Errorf("flow %s: events shown\n%v\nthe API's, by time\n%v", f.CorrelationID, page.Rows, want)
	}
	if page.Arrows != arrows {
		t.Errorf("flow %s: %d arrows; the API has %d consumers", f.CorrelationID, page.Arrows, arrows)
	}
	sort.Strings(failures)
	sort.Strings(page.Failures)
	if !slices.Equal(page.Failures, failures) {
		t.Errorf("flow %s: retries and dead letters shown %v; the API's %v", f.CorrelationID, page.Failures, failures)
	}
}
