package flows_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/flows"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// apiFixture is an index of three flows, without Kafka: "done" (placed,
// paid: complete), "dead" (placed, dead-lettered by pay) and "waiting"
// (placed, not consumed by pay), with pay's committed offsets.
func apiFixture(t *testing.T) (*flows.View, flows.Store) {
	t.Helper()
	st := openStore(t, t.TempDir())
	ev := func(topic string, off int64, id, typ, src, corr, cause, key string, at time.Duration) flows.Record {
		return flows.Record{Topic: topic, Offset: off, Kind: flows.KindEvent, EventID: id, Type: typ, Source: src,
			Time: t0.Add(at), Timestamp: t0.Add(at), CorrelationID: corr, CausationID: cause, Key: key, SchemaID: 1,
			OriginalPartition: -1, OriginalOffset: -1}
	}
	dead := ev("pay.dlq", 0, "dead", "shop.OrderPlaced", "", "dead", "", "k2", time.Second)
	dead.Kind, dead.Group, dead.ErrorKind, dead.ErrorMessage, dead.Attempt = flows.KindDeadLetter, "pay", "permanent", "no", 1
	dead.FailedAt, dead.OriginalTopic, dead.OriginalPartition, dead.OriginalOffset = t0.Add(time.Second), "orders", 0, 1
	// "redriven": dead-lettered by pay, redriven through pay.redrive and
	// consumed there; pay then published the payment.
	dead2 := dead
	dead2.Offset, dead2.EventID, dead2.CorrelationID, dead2.Key, dead2.OriginalOffset = 1, "redriven", "redriven", "k4", 3
	redrive := ev("pay.redrive", 0, "redriven", "shop.OrderPlaced", "shop", "redriven", "", "k4", 3*time.Second)
	redrive.Kind, redrive.Group, redrive.ReplayedFrom = flows.KindRedrive, "pay", "pay.dlq/0/1"
	placed4 := ev("orders", 0, "redriven", "shop.OrderPlaced", "shop", "redriven", "", "k4", 0)
	placed4.Partition, dead2.OriginalPartition, dead2.OriginalOffset = 1, 1, 0
	recs := []flows.Record{
		placed4,
		dead2, redrive,
		ev("payments", 1, "paid2", "shop.PaymentRequested", "pay", "redriven", "redriven", "k4", 4*time.Second),
		ev("orders", 0, "done", "shop.OrderPlaced", "shop", "done", "", "k1", 0),
		ev("payments", 0, "paid", "shop.PaymentRequested", "pay", "done", "done", "k1", 10*time.Millisecond),
		ev("orders", 1, "dead", "shop.OrderPlaced", "shop", "dead", "", "k2", time.Second),
		dead,
		ev("orders", 2, "waiting", "shop.OrderPlaced", "shop", "waiting", "", "k3", 2*time.Second),
	}
	if err := st.Write(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if err := st.SetGroups(context.Background(), []flows.Group{
		{Name: "pay", State: "Empty", Topics: []string{"orders", "pay.redrive"},
			Offsets: map[string]map[int32]int64{"orders": {0: 2, 1: 1}, "pay.redrive": {0: 1}}, UpdatedAt: t0},
		{Name: "ledger", State: "Stable", Members: 1, Topics: []string{"payments"}, Offsets: map[string]map[int32]int64{"payments": {0: 2}}, UpdatedAt: t0},
	}); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(10 * time.Minute)
	return flows.NewView(st, flows.WithClock(func() time.Time { return now })), st
}

func getJSON(t *testing.T, url string, status int, v any) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Errorf("GET %s: %d %s; want %d", url, resp.StatusCode, body, status)
		return string(body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Errorf("GET %s: %v\n%s", url, err, body)
		}
	}
	return string(body)
}

func TestAPI(t *testing.T) {
	view, _ := apiFixture(t)
	ix, err := flows.NewIndexer(connection.Config{Brokers: []string{"127.0.0.1:1"}}, view.Store())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(flows.NewHandler(view, flows.WithIndexer(ix)))
	defer srv.Close()
	u := srv.URL

	var list flows.FlowList
	getJSON(t, u+"/api/flows", 200, &list)
	status := map[string]flows.Status{}
	for _, f := range list.Flows {
		status[f.CorrelationID] = f.Status
	}
	// The learned terminal type is PaymentRequested (nothing reacts to
	// it); the threshold is the floor, 30s: "waiting" waited 10m.
	if fmt.Sprint(status) != "map[dead:dead_letter done:completed redriven:completed waiting:stuck]" {
		t.Errorf("statuses: %v", status)
	}
	getJSON(t, u+"/api/flows?status=stuck", 200, &list)
	if len(list.Flows) != 1 || list.Flows[0].CorrelationID != "waiting" || len(list.Flows[0].Reasons) != 2 {
		t.Errorf("stuck flows: %+v", list.Flows)
	}
	getJSON(t, u+"/api/flows?status=completed&limit=1", 200, &list)
	if len(list.Flows) != 1 || list.Flows[0].CorrelationID != "redriven" { // the most recent
		t.Errorf("completed flows: %+v", list.Flows)
	}
	getJSON(t, u+"/api/flows?type=shop.PaymentRequested&since=1h", 200, &list)
	if len(list.Flows) != 2 {
		t.Errorf("flows with a payment: %+v", list.Flows)
	}

	var f flows.Flow
	getJSON(t, u+"/api/flows/done", 200, &f)
	if len(f.Nodes) != 2 || f.Nodes[1].ParentID != "done" || f.Nodes[1].Consumers[0].Group != "ledger" ||
		f.Nodes[1].Consumers[0].Status != "consumed" || strings.Join(f.Lanes, ",") != "shop,pay,ledger" || f.Events != 2 {
		t.Errorf("flow done: %+v", f)
	}
	getJSON(t, u+"/api/flows/redriven", 200, &f)
	if got := consumed(f.Nodes[0]); got["pay"] != "redriven" || !f.Nodes[0].Failures[0].Consumed || f.Status != flows.StatusCompleted {
		t.Errorf("flow redriven: consumers %v, failures %+v, status %s", got, f.Nodes[0].Failures, f.Status)
	}
	var ev flows.EventDetail
	getJSON(t, u+"/api/events/dead", 200, &ev)
	if ev.CorrelationID != "dead" || len(ev.Records) != 2 || len(ev.Event.Failures) != 1 || ev.Event.Consumers[0].Status != "dead_letter" {
		t.Errorf("event dead: %+v", ev)
	}
	var lk flows.LookupResult
	getJSON(t, u+"/api/lookup?q=k3", 200, &lk)
	if len(lk.Matches) != 1 || lk.Matches[0].CorrelationID != "waiting" || lk.Matches[0].By != "key" {
		t.Errorf("lookup k3: %+v", lk)
	}
	var rep flows.StuckReport
	getJSON(t, u+"/api/stuck?after=1h", 200, &rep)
	if len(rep.Flows) != 1 || rep.Flows[0].CorrelationID != "dead" || rep.Criteria.AfterText != "1h0m0s" {
		t.Errorf("stuck after 1h (only the dead letter): %+v", rep)
	}
	getJSON(t, u+"/api/stuck?terminal=shop.OrderPlaced", 200, &rep)
	// With OrderPlaced as the only terminal type, "done" and "redriven"
	// end too early: stalled; "waiting" is unconsumed, not stalled.
	kinds := map[string]string{}
	for _, f := range rep.Flows {
		for _, r := range f.Reasons {
			kinds[f.CorrelationID] += r.Kind + " "
		}
	}
	if fmt.Sprint(kinds) != "map[dead:dead_letter  done:stalled  redriven:stalled  waiting:unconsumed ]" || rep.Criteria.TerminalLearned {
		t.Errorf("stuck with OrderPlaced terminal: %v, %+v", kinds, rep.Criteria)
	}
	var dls flows.DeadLetterList
	getJSON(t, u+"/api/services/pay/deadletters", 200, &dls)
	if len(dls.DeadLetters) != 2 || dls.DeadLetters[1].Command != "choreo dlq show pay 0:0" || dls.DeadLetters[1].Redrive != "choreo dlq redrive pay 0:0" ||
		dls.Topic != "pay.dlq" || dls.DeadLetters[1].Redriven || !dls.DeadLetters[0].Redriven {
		t.Errorf("dead letters of pay: %+v", dls)
	}
	var svcs []flows.ServiceInfo
	getJSON(t, u+"/api/services", 200, &svcs)
	if len(svcs) != 3 || svcs[2].Name != "shop" || !svcs[2].Producer || svcs[2].Group || svcs[1].DeadLetters != 2 {
		t.Errorf("services: %+v", svcs)
	}
	var cat flows.Catalog
	getJSON(t, u+"/api/catalog", 200, &cat)
	if len(cat.Types) != 2 || cat.Types[0].Consumers[0] != "pay" || len(cat.Graph.Nodes) != 5 {
		t.Errorf("catalog: %+v", cat)
	}
	var stats flows.Stats
	getJSON(t, u+"/api/stats", 200, &stats)
	if stats.Records != 9 || stats.Flows != 4 || stats.Indexer == nil {
		t.Errorf("stats: %+v", stats)
	}
	getJSON(t, u+"/api/groups", 200, nil)
	if body := getJSON(t, u+"/healthz", 200, nil); body != "ok\n" {
		t.Errorf("healthz: %q", body)
	}
	metrics := getJSON(t, u+"/metrics", 200, nil)
	for _, want := range []string{"# TYPE " + flows.StuckMetric + " gauge\n", flows.StuckMetric + " 2\n",
		flows.StuckMetric + `_by_reason{reason="dead_letter"} 1`, "choreo_flows_index_records 9\n",
		`choreo_flows_skipped_records_total{reason="no_ce_id"} 0`, "choreo_flows_stuck_threshold_seconds 30\n"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics have no %q:\n%s", want, metrics)
		}
	}

	// Errors: JSON, with the right status.
	for _, tc := range []struct {
		path   string
		status int
		msg    string
	}{
		{"/api/flows/nope", 404, "flow nope: not found"},
		{"/api/events/nope", 404, "event nope: not found"},
		{"/api/flows?status=lost", 400, `status "lost"`},
		{"/api/flows?limit=0", 400, `limit "0"`},
		{"/api/flows?since=yesterday", 400, `since "yesterday"`},
		{"/api/stuck?after=-1s", 400, `after "-1s"`},
		{"/api/lookup", 400, "q: want"},
		{"/api/catalog/asyncapi?format=xml", 400, `format "xml"`},
		{"/api/nothing", 404, "no API route GET /api/nothing"},
	} {
		var e struct{ Error string }
		getJSON(t, u+tc.path, tc.status, &e)
		if !strings.Contains(e.Error, tc.msg) {
			t.Errorf("GET %s: error %q; want %q", tc.path, e.Error, tc.msg)
		}
	}

	// The client.
	cl, err := flows.NewClient(u)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cl.Flow(ctx, "nope", flows.Thresholds{}); !errors.Is(err, flows.ErrNotFound) {
		t.Errorf("client, unknown flow: %v; want ErrNotFound", err)
	}
	if f, err := cl.Flow(ctx, "done", flows.Thresholds{After: time.Minute}); err != nil || f.Criteria.After != time.Minute {
		t.Errorf("client flow: %v, %+v", err, f.Criteria)
	}
	if _, err := flows.NewClient("127.0.0.1:8080"); err == nil {
		t.Error("client of a URL without a scheme: no error")
	}
	dead, _ := flows.NewClient("http://127.0.0.1:1")
	if _, err := dead.Stats(ctx); !errors.Is(err, flows.ErrUnreachable) || !strings.Contains(err.Error(), "http://127.0.0.1:1") {
		t.Errorf("client of nothing: %v; want ErrUnreachable naming the URL", err)
	}
}
