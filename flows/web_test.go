package flows_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/choreokit/choreo/flows"
)

// pageFixture is an index of its own for the page's tests, without
// Kafka: "done" (placed by shop, paid by pay, consumed by ledger), "flaky"
// (placed, retried once by pay, then paid), "dead" (placed, dead-lettered
// by pay at pay.dlq 0:0) and "evil" (placed with a key that would be
// markup were it not escaped; pay has not consumed it).
func pageFixture(t *testing.T) *flows.View {
	t.Helper()
	st := openStore(t, t.TempDir())
	ev := func(topic string, off int64, id, typ, src, corr, cause, key string, at time.Duration) flows.Record {
		return flows.Record{Topic: topic, Offset: off, Kind: flows.KindEvent, EventID: id, Type: typ, Source: src,
			Time: t0.Add(at), Timestamp: t0.Add(at), CorrelationID: corr, CausationID: cause, Key: key, SchemaID: 1,
			OriginalPartition: -1, OriginalOffset: -1}
	}
	failed := func(topic string, off int64, kind flows.Kind, id, corr, key, errKind, msg string, origOff int64, at time.Duration) flows.Record {
		r := ev(topic, off, id, "shop.OrderPlaced", "shop", corr, "", key, at)
		r.Kind, r.Group, r.ErrorKind, r.ErrorMessage, r.Attempt = kind, "pay", errKind, msg, 3
		r.FailedAt, r.OriginalTopic, r.OriginalPartition, r.OriginalOffset = t0.Add(at+5*time.Millisecond), "orders", 0, origOff
		if kind == flows.KindRetry {
			r.NotBefore = r.FailedAt.Add(time.Second)
		}
		return r
	}
	recs := []flows.Record{
		ev("orders", 0, "done", "shop.OrderPlaced", "shop", "done", "", "k1", 0),
		ev("payments", 0, "paid", "shop.PaymentRequested", "pay", "done", "done", "k1", 10*time.Millisecond),
		ev("orders", 1, "flaky", "shop.OrderPlaced", "shop", "flaky", "", "k2", time.Second),
		failed("pay.retry.1-1s", 0, flows.KindRetry, "flaky", "flaky", "k2", "retryable", "gateway timeout", 1, time.Second),
		ev("payments", 1, "paid2", "shop.PaymentRequested", "pay", "flaky", "flaky", "k2", 2100*time.Millisecond),
		ev("orders", 2, "dead", "shop.OrderPlaced", "shop", "dead", "", "k3", 3*time.Second),
		failed("pay.dlq", 0, flows.KindDeadLetter, "dead", "dead", "k3", "permanent", "card refused <for good>", 2, 3*time.Second),
		ev("orders", 3, "evil", "shop.OrderPlaced", "shop", "evil", "", `<script>alert("k")</script>`, 4*time.Second),
	}
	if err := st.Write(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if err := st.SetGroups(context.Background(), []flows.Group{
		{Name: "pay", State: "Stable", Members: 1, Topics: []string{"orders", "pay.retry.1-1s", "pay.redrive"},
			Offsets: map[string]map[int32]int64{"orders": {0: 3}, "pay.retry.1-1s": {0: 1}}, UpdatedAt: t0},
		{Name: "ledger", State: "Stable", Members: 1, Topics: []string{"payments"}, Offsets: map[string]map[int32]int64{"payments": {0: 2}}, UpdatedAt: t0},
	}); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(10 * time.Minute)
	return flows.NewView(st, flows.WithClock(func() time.Time { return now }), flows.LearnTTL(0))
}

// pageServer serves the page and the API over view as `choreo flows`
// does: the API at /api/, the page at /.
func pageServer(t *testing.T, view *flows.View, opts ...flows.PageOption) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/api/", flows.NewHandler(view))
	opts = append([]flows.PageOption{flows.PageLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)
	mux.Handle("/", flows.NewPage(view, opts...))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// get fetches a page and checks its status.
func get(t *testing.T, u string, status int) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Errorf("GET %s: %d; want %d\n%.2000s", u, resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") && !strings.HasPrefix(u[len(u)-4:], ".css") && !strings.HasSuffix(u, ".js") {
		t.Errorf("GET %s: Content-Type %q; want HTML", u, ct)
	}
	return string(body)
}

// attrs returns the values of an attribute in the page, in order.
func attrs(page, name string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`\s`+regexp.QuoteMeta(name)+`="([^"]*)"`).FindAllStringSubmatch(page, -1) {
		out = append(out, m[1])
	}
	return out
}

// The page over the API's fixture index: each view renders what the view
// answers, bad input gets a 400 page that says what is wrong, output is
// escaped, and the redrive is off unless given, confirmed and same-origin.
func TestPage(t *testing.T) {
	view := pageFixture(t)
	srv := pageServer(t, view)
	u := srv.URL

	// The list: every flow, with its status.
	page := get(t, u+"/", 200)
	if got, want := attrs(page, "data-flow"), []string{"evil", "dead", "flaky", "done"}; !slices.Equal(got, want) {
		t.Errorf("flows listed: %v; want %v", got, want)
	}
	if got := attrs(page, "data-status"); !slices.Equal(got, []string{"stuck", "dead_letter", "completed", "completed"}) {
		t.Errorf("statuses: %v", got)
	}
	if strings.Contains(page, `<script>alert`) || !strings.Contains(page, `&lt;script&gt;alert(&#34;k&#34;)&lt;/script&gt;`) {
		t.Errorf("the key is not escaped:\n%s", page)
	}
	for _, want := range []string{`<label for="f-status">Status</label>`, `<label for="f-type">Event type</label>`, `<label for="f-service">Service</label>`,
		`<label for="f-since">Active</label>`, `2 stuck now`, `with a dead letter`} {
		if !strings.Contains(page, want) {
			t.Errorf("the list has no %q", want)
		}
	}
	// Filters.
	if got := attrs(get(t, u+"/?status=dead_letter", 200), "data-flow"); !slices.Equal(got, []string{"dead"}) {
		t.Errorf("status=dead_letter: %v", got)
	}
	if got := attrs(get(t, u+"/?status=&type=&service=shop&key=k1&since=&limit=20", 200), "data-flow"); !slices.Equal(got, []string{"done"}) {
		t.Errorf("key=k1: %v", got)
	}
	if got := attrs(get(t, u+"/?type=shop.PaymentRequested", 200), "data-flow"); !slices.Equal(got, []string{"flaky", "done"}) {
		t.Errorf("type=shop.PaymentRequested: %v", got)
	}

	// The search box: one flow opens, none is a 404, nothing a 400.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(u + "/find?q=k2")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/flows/flaky" {
		t.Errorf("find k2: %d %s; want 303 to /flows/flaky", resp.StatusCode, resp.Header.Get("Location"))
	}
	if page := get(t, u+"/find?q=nobody", 404); !strings.Contains(page, `No flow, event or key &#34;nobody&#34; in the index.`) {
		t.Errorf("find nobody:\n%s", page)
	}
	get(t, u+"/find?q=", 400)

	// Bad input: a 400 page saying what is wrong.
	for q, want := range map[string]string{
		"status=bogus":                       `status &#34;bogus&#34;: want running, completed, stuck or dead_letter`,
		"limit=0":                            `limit &#34;0&#34;: want a number from 1 to 1000`,
		"limit=1001":                         `want a number from 1 to 1000`,
		"since=yesterday":                    `since &#34;yesterday&#34;: want an RFC 3339 time or a duration such as 1h`,
		"colour=red":                         `unknown parameter &#34;colour&#34;: this page takes status, type, service, key, since, limit`,
		"key=a&key=b":                        `parameter &#34;key&#34; is given 2 times`,
		"type=" + strings.Repeat("x", 300):   `type is 300 bytes long: at most 256`,
		"service=" + url.QueryEscape("a\nb"): `service &#34;a\nb&#34; is not printable text`,
	} {
		page := get(t, u+"/?"+q, 400)
		if !strings.Contains(page, want) || !strings.Contains(page, "<h1>Bad request</h1>") {
			t.Errorf("?%.40s: the page does not say %q:\n%s", q, want, page)
		}
	}
	get(t, u+"/?"+strings.Repeat("a=1&", 1100), 400)
	get(t, u+"/no/such/page", 404)
	get(t, u+"/flows/nope", 404)
	get(t, u+"/flows/done?x=1", 400)

	// One flow: its lanes and events are the API's.
	page = get(t, u+"/flows/done", 200)
	var f flows.Flow
	getJSON(t, u+"/api/flows/done", 200, &f)
	if got := attrs(page, "data-lane"); !slices.Equal(got, f.Lanes) || len(got) != 3 {
		t.Errorf("lanes: %v; the API's: %v", got, f.Lanes)
	}
	if got := attrs(page, "data-event"); !slices.Equal(got, []string{"done", "paid"}) {
		t.Errorf("events: %v", got)
	}
	if got := attrs(page, "data-status"); !slices.Contains(got, "consumed") {
		t.Errorf("consumption marks: %v", got)
	}
	if !strings.Contains(page, "choreo trace done") || !strings.Contains(page, `<svg class="sequence" role="img"`) {
		t.Errorf("the flow page has no trace command or no diagram")
	}
	// The dead-lettered flow: its dead letter marked, linked to its page.
	page = get(t, u+"/flows/dead", 200)
	if !strings.Contains(page, `data-kind="dead_letter"`) || !strings.Contains(page, `href="/services/pay/deadletters/0/0"`) {
		t.Errorf("the dead letter is not marked and linked:\n%s", page)
	}
	if got := get(t, u+"/flows/evil", 200); strings.Contains(got, `<script>alert`) {
		t.Errorf("the flow page does not escape the key")
	}

	// The catalog: a box per node of the API's graph, a line per edge.
	page = get(t, u+"/catalog", 200)
	var cat flows.Catalog
	getJSON(t, u+"/api/catalog", 200, &cat)
	var ids []string
	for _, n := range cat.Graph.Nodes {
		ids = append(ids, n.ID)
	}
	got := attrs(page, "data-node")
	slices.Sort(got)
	slices.Sort(ids)
	// a service on both sides has two boxes
	if !slices.Equal(slices.Compact(got), ids) {
		t.Errorf("graph nodes: %v; the API's: %v", got, ids)
	}
	if n := strings.Count(page, `<path class="edge `); n != len(cat.Graph.Edges) {
		t.Errorf("%d edges drawn; the API has %d", n, len(cat.Graph.Edges))
	}

	// Services and dead letters.
	page = get(t, u+"/services", 200)
	if !strings.Contains(page, `href="/services/pay/deadletters">1 dead letter</a>`) {
		t.Errorf("services: no link to pay's dead letter:\n%s", page)
	}
	page = get(t, u+"/services/pay/deadletters", 200)
	if !strings.Contains(page, "<code id=\"redrive-0\">choreo dlq redrive pay 0:0</code>") || !strings.Contains(page, "choreo dlq redrive pay</code>") {
		t.Errorf("dead letters: no redrive commands:\n%s", page)
	}
	page = get(t, u+"/services/pay/deadletters/0/0", 200)
	if !strings.Contains(page, "choreo dlq redrive pay 0:0") || !strings.Contains(page, "--allow-redrive") || strings.Contains(page, `id="redrive-start"`) {
		t.Errorf("dead letter: want the command and no redrive button:\n%s", page)
	}
	get(t, u+"/services/pay/deadletters/0/9", 404)
	get(t, u+"/services/pay/deadletters/x/0", 400)
	get(t, u+"/services/pay/deadletters/0/-1", 400)
	get(t, u+"/services/pay/deadletters?limit=abc", 400)
	get(t, u+"/services/a%2Fb/deadletters", 400)

	// Redrive is off: no confirmation page, no POST.
	get(t, u+"/services/pay/deadletters/0/0/redrive", 403)
	resp, err = http.PostForm(u+"/services/pay/deadletters/0/0/redrive", url.Values{"confirm": {"yes"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("POST redrive when off: %d; want 403", resp.StatusCode)
	}

	// Static files and headers.
	resp, err = http.Get(u + "/static/page.css")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Errorf("GET /static/page.css: %d %v", resp.StatusCode, resp.Header)
	}
	get(t, u+"/static/", 404)
	get(t, u+"/static/nope.js", 404)
}

// With WithRedrive, the dead letter's page offers a redrive, asks to
// confirm, and runs it on a confirmed same-origin POST only.
func TestPageRedrive(t *testing.T) {
	view := pageFixture(t)
	var mu sync.Mutex
	var calls []string
	fail := false
	srv := pageServer(t, view, flows.WithRedrive(func(ctx context.Context, group string, partition int32, offset int64) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, group+" "+string(rune('0'+partition))+":"+string(rune('0'+offset)))
		if fail {
			return "", errors.New("topic pay.redrive does not exist")
		}
		return "redrive of pay.dlq to pay.redrive\n  sent 1", nil
	}))
	u := srv.URL + "/services/pay/deadletters/0/0"

	if page := get(t, u, 200); !strings.Contains(page, `href="/services/pay/deadletters/0/0/redrive"`) {
		t.Errorf("no redrive button:\n%s", page)
	}
	page := get(t, u+"/redrive", 200)
	if !strings.Contains(page, `<form method="post" action="/services/pay/deadletters/0/0/redrive"`) ||
		!strings.Contains(page, "choreo dlq redrive pay 0:0 --yes") {
		t.Errorf("no confirmation form:\n%s", page)
	}
	post := func(form url.Values, hdr map[string]string) (int, string) {
		req, _ := http.NewRequest("POST", u+"/redrive", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Another site's form: refused, nothing run.
	if code, body := post(url.Values{"confirm": {"yes"}}, map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}); code != 403 ||
		!strings.Contains(body, "came from another site") {
		t.Errorf("cross-site POST: %d\n%s", code, body)
	}
	if code, _ := post(url.Values{"confirm": {"yes"}}, map[string]string{"Origin": "http://evil.example"}); code != 403 {
		t.Errorf("POST from another origin: %d; want 403", code)
	}
	// Not confirmed.
	if code, body := post(url.Values{}, map[string]string{"Origin": srv.URL, "Sec-Fetch-Site": "same-origin"}); code != 400 || !strings.Contains(body, "not confirmed") {
		t.Errorf("unconfirmed POST: %d\n%s", code, body)
	}
	mu.Lock()
	if len(calls) != 0 {
		t.Errorf("redrives run: %v; want none", calls)
	}
	mu.Unlock()
	// Confirmed, from the page itself.
	code, body := post(url.Values{"confirm": {"yes"}}, map[string]string{"Origin": srv.URL, "Sec-Fetch-Site": "same-origin"})
	if code != 200 || !strings.Contains(body, `data-ok="true"`) || !strings.Contains(body, "sent 1") {
		t.Errorf("confirmed POST: %d\n%s", code, body)
	}
	// A failure says why.
	mu.Lock()
	fail = true
	mu.Unlock()
	code, body = post(url.Values{"confirm": {"yes"}}, map[string]string{"Origin": srv.URL})
	if code != 500 || !strings.Contains(body, "The redrive failed: topic pay.redrive does not exist") {
		t.Errorf("failed redrive: %d\n%s", code, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(calls, []string{"pay 0:0", "pay 0:0"}) {
		t.Errorf("redrives run: %v; want pay 0:0 twice", calls)
	}
}

// A flow of more events than the diagram draws shows the first ones, and
// says so.
func TestPageBigFlow(t *testing.T) {
	st := openStore(t, t.TempDir())
	var recs []flows.Record
	for i := range 600 {
		recs = append(recs, flows.Record{Topic: "orders", Offset: int64(i), Kind: flows.KindEvent, EventID: fmt.Sprintf("e%d", i),
			Type: "shop.Tick", Source: "shop", Time: t0.Add(time.Duration(i) * time.Millisecond), Timestamp: t0, CorrelationID: "big",
			OriginalPartition: -1, OriginalOffset: -1})
	}
	if err := st.Write(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	srv := pageServer(t, flows.NewView(st, flows.WithClock(func() time.Time { return t0.Add(time.Hour) })))
	page := get(t, srv.URL+"/flows/big", 200)
	if n := strings.Count(page, `<tr class="event"`); n != 500 || !strings.Contains(page, "This flow has 600 events, retries, dead letters and redrives: the diagram and the table show the first 500.") {
		t.Errorf("%d event rows; want 500 and a note", n)
	}
}
