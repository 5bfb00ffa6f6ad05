package flows_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.yaml.in/yaml/v3"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/flows"
	"github.com/choreokit/choreo/flows/sqlstore"
	"github.com/choreokit/choreo/internal/testevents"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/producer"
	"github.com/choreokit/choreo/schema"
)

// shop is a small choreography for the tests: a shop publishes
// OrderPlaced to orders; the payment service (group pay) reacts with
// PaymentRequested on payments, fails order "bad" for good (a dead
// letter) and order "flaky" once (a retry-topic forward); the ledger
// (group ledger) reads payments and publishes nothing.
type shop struct {
	t        *testing.T
	cluster  *kafkatest.Cluster
	conn     connection.Config
	reg      *schema.Registry
	regURL   string
	orders   string
	payments string
	pay      string // group names
	ledger   string
	source   string // the shop's ce_source
	pattern  string // a regular expression matching every topic of the test
	prod     *producer.Producer
	log      *slog.Logger

	mu       sync.Mutex
	services map[string]context.CancelFunc
	done     map[string]chan struct{}
	flaky    atomic.Int32
}

func newShop(t *testing.T) *shop {
	t.Helper()
	c := kafkatest.New(t)
	s := &shop{t: t, cluster: c, conn: connection.Config{Brokers: c.Seeds()}, regURL: kafkatest.SchemaRegistry(t),
		services: map[string]context.CancelFunc{}, done: map[string]chan struct{}{}}
	if testing.Verbose() {
		s.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	} else {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var err error
	if s.reg, err = schema.NewRegistry([]string{s.regURL}); err != nil {
		t.Fatal(err)
	}
	s.orders, s.payments = c.Topic(t, 1), c.Topic(t, 1)
	s.pay, s.ledger = kafkatest.Group(t), kafkatest.Group(t)
	s.source = "shop-" + choreo.NewID()[24:]
	// Every name kafkatest gives this test holds ".<test name>.<pid>.".
	name := kafkatest.Name(t, "x")
	s.pattern = regexp.QuoteMeta(name[strings.Index(name, ".") : strings.LastIndex(name, ".")+1])
	if s.prod, err = producer.New(context.Background(), s.conn, s.reg, producer.Source(s.source)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.prod.Close(context.Background()) })
	t.Cleanup(s.stopAll)
	return s
}

// consumerOptions are quick settings for tests: short retries, a retry
// topic of 200ms, frequent commits.
func (s *shop) consumerOptions() []consumer.Option {
	return []consumer.Option{
		consumer.Logger(s.log),
		consumer.Retry(consumer.RetryPolicy{MaxAttempts: 1, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, Multiplier: 1}),
		consumer.RetryTopics(200 * time.Millisecond),
		consumer.CommitInterval(100 * time.Millisecond),
		consumer.ShutdownTimeout(5 * time.Second),
		consumer.ClientOptions(kgo.FetchMaxWait(100*time.Millisecond), kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(500*time.Millisecond)),
	}
}

// startPayment runs the payment service until stopped.
func (s *shop) startPayment() {
	s.t.Helper()
	prod, err := producer.New(context.Background(), s.conn, s.reg, producer.Source(s.pay))
	if err != nil {
		s.t.Fatal(err)
	}
	c, err := consumer.New(s.conn, s.reg, s.pay, s.consumerOptions()...)
	if err != nil {
		s.t.Fatal(err)
	}
	consumer.Handle(c, s.orders, func(ctx context.Context, ev consumer.Event[testevents.OrderPlaced]) error {
		switch {
		case ev.Data.OrderID == "bad":
			return choreo.Permanent(errors.New("card refused for good"))
		case ev.Data.OrderID == "flaky" && s.flaky.Add(1) == 1:
			return errors.New("gateway timeout")
		}
		_, err := prod.Publish(ctx, s.payments, ev.Key, testevents.PaymentRequested{OrderID: ev.Data.OrderID, AmountCents: ev.Data.AmountCents})
		return err
	})
	s.run(s.pay, c, func() { _ = prod.Close(context.Background()) })
}

// startLedger runs the ledger until stopped.
func (s *shop) startLedger() {
	s.t.Helper()
	c, err := consumer.New(s.conn, s.reg, s.ledger, s.consumerOptions()...)
	if err != nil {
		s.t.Fatal(err)
	}
	consumer.Handle(c, s.payments, func(ctx context.Context, ev consumer.Event[testevents.PaymentRequested]) error { return nil })
	s.run(s.ledger, c, nil)
}

func (s *shop) run(name string, c *consumer.Consumer, after func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			s.t.Errorf("service %s: %v", name, err)
		}
		if after != nil {
			after()
		}
	}()
	s.mu.Lock()
	s.services[name], s.done[name] = cancel, done
	s.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for !c.Ready() {
		if time.Now().After(deadline) {
			s.t.Fatalf("service %s not ready: %v", name, c.CheckReady())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops a service and waits until it has committed and left.
func (s *shop) stop(name string) {
	s.mu.Lock()
	cancel, done := s.services[name], s.done[name]
	delete(s.services, name)
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (s *shop) stopAll() {
	s.mu.Lock()
	var names []string
	for n := range s.services {
		names = append(names, n)
	}
	s.mu.Unlock()
	for _, n := range names {
		s.stop(n)
	}
}

// place publishes an order, the first event of a flow, and returns its
// metadata.
func (s *shop) place(id string) choreo.Metadata {
	s.t.Helper()
	p, err := s.prod.Publish(context.Background(), s.orders, id, testevents.OrderPlaced{
		OrderID: id, CustomerID: "c", AmountCents: 100, Currency: "EUR", Items: 1, PlacedAt: time.Now().Truncate(time.Millisecond)})
	if err != nil {
		s.t.Fatal(err)
	}
	return p.Metadata
}

// index runs an indexer of the test's topics into st until the returned
// stop is called (or the test ends).
func (s *shop) index(st flows.Store) (ix *flows.Indexer, stop func()) {
	s.t.Helper()
	ix, err := flows.NewIndexer(s.conn, st, flows.ConsumerGroup(kafkatest.Group(s.t)), flows.Topics(s.pattern),
		flows.RefreshInterval(200*time.Millisecond), flows.Registry(s.reg), flows.Logger(s.log))
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ix.Run(ctx); err != nil {
			s.t.Errorf("indexer: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	s.t.Cleanup(stop)
	return ix, stop
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
		time.Sleep(100 * time.Millisecond)
	}
}

func openStore(t testing.TB, dir string) *sqlstore.Store {
	t.Helper()
	st, err := sqlstore.OpenSQLite(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// node returns the flow's event of the type.
func node(f flows.Flow, typ string) (flows.Node, bool) {
	for _, n := range f.Nodes {
		if n.Type == typ {
			return n, true
		}
	}
	return flows.Node{}, false
}

func consumed(n flows.Node) map[string]string {
	out := map[string]string{}
	for _, c := range n.Consumers {
		out[c.Group] = c.Status
	}
	return out
}

const (
	typePlaced  = "choreo.test.OrderPlaced"
	typePayment = "choreo.test.PaymentRequested"
)

// The shop's flows as the index sees them: causal trees, who consumed
// what, a retry and a dead letter on their branches, the catalog, the
// AsyncAPI document, then stuck flows once the services stop, and an
// indexer restarted on the same data directory going on without
// duplicates.
func TestIndexTheShop(t *testing.T) {
	s := newShop(t)
	s.startPayment()
	s.startLedger()
	dir := t.TempDir()
	st := openStore(t, dir)
	ix, stopIndex := s.index(st)
	view := flows.NewView(st, flows.WithRegistry(s.reg), flows.MinAfter(time.Second), flows.LearnTTL(0))
	ctx := context.Background()

	// Records that are no choreo events, on a topic the index reads:
	// counted and skipped, never a crash.
	junk := s.cluster.Topic(t, 1)
	raw := s.cluster.Client(t)
	if err := raw.ProduceSync(ctx,
		&kgo.Record{Topic: junk, Value: []byte("not an event")},
		&kgo.Record{Topic: junk, Key: []byte{0xff}, Headers: []kgo.RecordHeader{{Key: "ce_id", Value: nil}, {Key: "ce_time", Value: []byte("noon")}}},
		&kgo.Record{Topic: junk, Value: []byte{0, 0, 0}, Headers: []kgo.RecordHeader{{Key: "ce_id", Value: []byte("junk-1")}, {Key: "ce_time", Value: []byte("noon")}}},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// Another flow index's group (it has offsets on every topic) is not a
	// consumer.
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: s.orders, Partition: 0, At: 0, LeaderEpoch: -1})
	if _, err := s.cluster.Admin().CommitOffsets(ctx, flows.DefaultGroup+"-"+kafkatest.Group(t), offs); err != nil {
		t.Fatal(err)
	}

	ok, bad, flaky := s.place("ok"), s.place("bad"), s.place("flaky")

	// Every flow reaches its end, and every group's commits are seen.
	want := map[string]int{ok.CorrelationID: 2, bad.CorrelationID: 1, flaky.CorrelationID: 2}
	var fOK, fBad, fFlaky flows.Flow
	eventually(t, 60*time.Second, func() error {
		if err := ix.RefreshGroups(ctx); err != nil {
			return err
		}
		for id, n := range want {
			f, err := view.Flow(ctx, id, flows.Thresholds{})
			if err != nil {
				return err
			}
			if len(f.Nodes) != n {
				return fmt.Errorf("flow %s: %d events; want %d", id, len(f.Nodes), n)
			}
			for _, e := range f.Nodes {
				for _, c := range e.Consumers {
					if c.Status == "pending" || c.Status == "retrying" {
						return fmt.Errorf("flow %s: %s is %s for %s", id, c.Group, c.Status, e.Type)
					}
				}
			}
			if id == bad.CorrelationID && f.DeadLetters == 0 {
				return fmt.Errorf("flow %s: no dead letter yet", id)
			}
			switch id {
			case ok.CorrelationID:
				fOK = f
			case bad.CorrelationID:
				fBad = f
			default:
				fFlaky = f
			}
		}
		return nil
	})

	eventually(t, 10*time.Second, func() error {
		if n := ix.Stats().SkipReasons[flows.SkipNoEventID]; n < 2 {
			return fmt.Errorf("skipped for want of ce_id: %d; want 2", n)
		}
		if _, err := view.Event(ctx, "junk-1"); err != nil {
			return fmt.Errorf("junk-1 with a bad time: %w", err)
		}
		return nil
	})

	// ok: OrderPlaced (shop) -> PaymentRequested (pay), each consumed by
	// the group subscribed to its topic.
	if fOK.Nodes[0].Type != typePlaced || fOK.Nodes[0].Depth != 0 || fOK.Nodes[0].Source != s.source ||
		fOK.Nodes[1].Type != typePayment || fOK.Nodes[1].Depth != 1 || fOK.Nodes[1].ParentID != ok.ID ||
		fOK.Nodes[1].Source != s.pay {
		t.Errorf("causal tree of ok:\n%+v", fOK.Nodes)
	}
	if got := consumed(fOK.Nodes[0]); !maps(got, map[string]string{s.pay: "consumed"}) {
		t.Errorf("consumers of OrderPlaced: %v; want %s consumed", got, s.pay)
	}
	if got := consumed(fOK.Nodes[1]); !maps(got, map[string]string{s.ledger: "consumed"}) {
		t.Errorf("consumers of PaymentRequested: %v; want %s consumed", got, s.ledger)
	}
	if fOK.Status != flows.StatusCompleted || fOK.Nodes[1].SinceStartMs < 0 || !fOK.Nodes[1].Terminal {
		t.Errorf("ok: status %s, payment +%vms terminal %v; want completed, terminal", fOK.Status, fOK.Nodes[1].SinceStartMs, fOK.Nodes[1].Terminal)
	}
	if !slices.Equal(fOK.Lanes, []string{s.source, s.pay, s.ledger}) {
		t.Errorf("lanes: %v; want %v", fOK.Lanes, []string{s.source, s.pay, s.ledger})
	}

	// bad: dead-lettered by pay, on its branch, with the command to see it.
	n := fBad.Nodes[0]
	if len(n.Failures) != 1 || n.Failures[0].Kind != flows.KindDeadLetter || n.Failures[0].Group != s.pay ||
		n.Failures[0].ErrorKind != "permanent" || !strings.HasPrefix(n.Failures[0].Command, "choreo dlq show "+s.pay+" 0:") {
		t.Errorf("failures of bad: %+v", n.Failures)
	}
	if got := consumed(n); got[s.pay] != "dead_letter" {
		t.Errorf("consumers of bad: %v; want %s dead_letter", got, s.pay)
	}
	if fBad.Status != flows.StatusDeadLetter || len(fBad.Reasons) == 0 || fBad.Reasons[0].Kind != flows.ReasonDeadLetter ||
		!slices.Equal(fBad.Reasons[0].WaitingOn, []string{s.pay}) {
		t.Errorf("bad: status %s, reasons %+v; want dead_letter waiting on %s", fBad.Status, fBad.Reasons, s.pay)
	}
	dls, err := view.DeadLetters(ctx, s.pay, 10)
	if err != nil || len(dls) != 1 || dls[0].EventID != bad.ID || dls[0].OriginalTopic != s.orders || dls[0].Service != s.pay {
		t.Errorf("dead letters of %s: %+v, %v", s.pay, dls, err)
	}

	// flaky: a retry by pay, then the payment.
	n, _ = node(fFlaky, typePlaced)
	if len(n.Failures) != 1 || n.Failures[0].Kind != flows.KindRetry || n.Failures[0].Group != s.pay ||
		n.Failures[0].ErrorKind != "retryable" || !n.Failures[0].Consumed || n.Failures[0].At.IsZero() {
		t.Errorf("failures of flaky: %+v", n.Failures)
	}
	if p, ok := node(fFlaky, typePayment); !ok || p.ParentID != flaky.ID {
		t.Errorf("flaky: no payment caused by the order: %+v", fFlaky.Nodes)
	}

	// Lookup by key and by event id.
	if ms, err := view.Lookup(ctx, "flaky", 10); err != nil || len(ms) != 1 || ms[0].CorrelationID != flaky.CorrelationID || ms[0].By != "key" {
		t.Errorf("lookup by key: %+v, %v", ms, err)
	}
	if ms, _ := view.Lookup(ctx, fOK.Nodes[1].EventID, 10); len(ms) != 1 || ms[0].By != "eventId" {
		t.Errorf("lookup by event id: %+v", ms)
	}

	checkCatalog(t, s, view)

	// The ledger stops: a new payment is not consumed within the
	// threshold. Then the payment service stops: a new order stalls.
	s.stop(s.ledger)
	late := s.place("late")
	eventually(t, 30*time.Second, func() error {
		_ = ix.RefreshGroups(ctx)
		f, err := view.Flow(ctx, late.CorrelationID, flows.Thresholds{})
		if err != nil || len(f.Nodes) != 2 {
			return fmt.Errorf("flow late: %d events, %v", len(f.Nodes), err)
		}
		return nil
	})
	s.stop(s.pay)
	stall := s.place("stall")
	th := flows.Thresholds{After: 2 * time.Second}
	var rep flows.StuckReport
	eventually(t, 30*time.Second, func() error {
		_ = ix.RefreshGroups(ctx)
		var err error
		if rep, err = view.Stuck(ctx, th, 0); err != nil {
			return err
		}
		got := map[string][]string{}
		for _, f := range rep.Flows {
			for _, r := range f.Reasons {
				got[f.CorrelationID] = append(got[f.CorrelationID], r.Kind+" "+strings.Join(r.WaitingOn, ","))
			}
		}
		wantStuck := map[string][]string{
			bad.CorrelationID:   {"dead_letter " + s.pay},
			late.CorrelationID:  {"unconsumed " + s.ledger},
			stall.CorrelationID: {"unconsumed " + s.pay, "stalled " + s.pay},
		}
		if fmt.Sprint(got) != fmt.Sprint(wantStuck) {
			return fmt.Errorf("stuck flows:\n got %v\nwant %v", got, wantStuck)
		}
		return nil
	})
	if !rep.Criteria.TerminalLearned || !slices.Equal(rep.Criteria.Terminal, []string{typePayment}) || rep.Criteria.After != 2*time.Second {
		t.Errorf("criteria: %+v; want terminal [%s] learned, after 2s", rep.Criteria, typePayment)
	}
	for _, f := range rep.Flows {
		for _, r := range f.Reasons {
			if r.Command == "" || r.Detail == "" {
				t.Errorf("reason without command or detail: %+v", r)
			}
		}
	}
	// The learned threshold: no flow took long, so the floor.
	if rep, err := view.Stuck(ctx, flows.Thresholds{}, 0); err != nil || !rep.Criteria.AfterLearned || rep.Criteria.After != time.Second {
		t.Errorf("learned criteria: %+v, %v; want after 1s (the floor) learned", rep.Criteria, err)
	}

	// Restart: a new indexer in the same group on the same data
	// directory goes on from its commits; nothing is doubled.
	stopIndex()
	before, err := st.FlowRecords(ctx, ok.CorrelationID)
	if err != nil {
		t.Fatal(err)
	}
	recs1, flows1, _ := st.Counts(ctx)
	st.Close()
	st2 := openStore(t, dir)
	ix2, err := flows.NewIndexer(s.conn, st2, flows.ConsumerGroup(ix.Group()), flows.Topics(s.pattern),
		flows.RefreshInterval(200*time.Millisecond), flows.Logger(s.log))
	if err != nil {
		t.Fatal(err)
	}
	ictx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = ix2.Run(ictx) }()
	defer func() { cancel(); <-done }()
	after := s.place("after-restart")
	eventually(t, 30*time.Second, func() error {
		_, err := st2.Flow(ctx, after.CorrelationID)
		return err
	})
	recs2, flows2, _ := st2.Counts(ctx)
	if recs2 != recs1+1 || flows2 != flows1+1 {
		t.Errorf("after restart: %d records, %d flows; want %d, %d (one new order, nothing indexed twice)", recs2, flows2, recs1+1, flows1+1)
	}
	if got := ix2.Stats().Indexed; got != 1 {
		t.Errorf("restarted indexer indexed %d records; want 1 (it goes on from its committed offsets)", got)
	}
	again, _ := st2.FlowRecords(ctx, ok.CorrelationID)
	if !slices.Equal(before, again) {
		t.Errorf("flow ok changed across the restart:\n got %+v\nwant %+v", again, before)
	}
}

func maps(a, b map[string]string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// checkCatalog checks the catalog and its AsyncAPI document.
func checkCatalog(t *testing.T, s *shop, view *flows.View) {
	t.Helper()
	cat, err := view.Catalog(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(cat.Types) != 2 {
		t.Fatalf("catalog: %d types; want 2: %+v", len(cat.Types), cat.Types)
	}
	placed, payment := cat.Types[0], cat.Types[1]
	if placed.Type != typePlaced || placed.Topic != s.orders || !slices.Equal(placed.Producers, []string{s.source}) ||
		!slices.Equal(placed.Consumers, []string{s.pay}) || !slices.Equal(placed.ReactedBy, []string{s.pay}) || placed.Terminal ||
		placed.Count != 3 || len(placed.SchemaIDs) != 1 || placed.LastSeen.IsZero() || placed.RatePerMinute <= 0 {
		t.Errorf("catalog of OrderPlaced: %+v", placed)
	}
	if payment.Type != typePayment || payment.Topic != s.payments || !slices.Equal(payment.Producers, []string{s.pay}) ||
		!slices.Equal(payment.Consumers, []string{s.ledger}) || !payment.Terminal || !slices.Equal(payment.Causes, []string{typePlaced}) {
		t.Errorf("catalog of PaymentRequested: %+v", payment)
	}
	if len(placed.Registered) != 1 || placed.Registered[0].Subject != s.orders+"-value" || placed.Registered[0].Version != 1 ||
		!placed.Registered[0].Seen || placed.Registered[0].ID != placed.SchemaIDs[0] || len(placed.Schema) == 0 {
		t.Errorf("registered schemas of OrderPlaced: %+v (schema %d bytes)", placed.Registered, len(placed.Schema))
	}
	var publishes, consumes int
	for _, e := range cat.Graph.Edges {
		switch {
		case e.Kind == "publishes" && e.From == "service:"+s.pay && e.To == "type:"+typePayment+"@"+s.payments:
			publishes++
		case e.Kind == "consumes" && e.From == "type:"+typePlaced+"@"+s.orders && e.To == "service:"+s.pay && e.Reacts:
			consumes++
		}
	}
	if publishes != 1 || consumes != 1 {
		t.Errorf("graph edges: %+v", cat.Graph.Edges)
	}

	// The AsyncAPI document, parsed back.
	y, err := cat.AsyncAPIDocument("Shop", "1.0.0").YAML()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(y, &doc); err != nil {
		t.Fatalf("AsyncAPI YAML does not parse: %v\n%s", err, y)
	}
	get := func(v any, path ...string) any {
		for _, p := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[p]
		}
		return v
	}
	if get(doc, "asyncapi") != "3.0.0" || get(doc, "info", "title") != "Shop" || get(doc, "info", "version") != "1.0.0" {
		t.Errorf("AsyncAPI header: asyncapi %v, info %v", get(doc, "asyncapi"), get(doc, "info"))
	}
	channels, _ := get(doc, "channels").(map[string]any)
	if len(channels) != 2 || get(channels, s.orders, "address") != s.orders ||
		get(channels, s.orders, "messages", typePlaced, "$ref") != "#/components/messages/"+typePlaced {
		t.Errorf("AsyncAPI channels: %v", channels)
	}
	ops, _ := get(doc, "operations").(map[string]any)
	actions := map[string]string{}
	for id, op := range ops {
		ref, _ := get(op, "channel", "$ref").(string)
		ch := strings.TrimPrefix(ref, "#/channels/")
		if _, ok := channels[ch]; !ok {
			t.Errorf("operation %s: channel %q is not in the document", id, ref)
		}
		msgs, _ := get(op, "messages").([]any)
		if len(msgs) == 0 {
			t.Errorf("operation %s has no messages", id)
		}
		actions[fmt.Sprint(get(op, "action"))+" "+ch] = id
	}
	for _, k := range []string{"send " + s.orders, "receive " + s.orders, "send " + s.payments, "receive " + s.payments} {
		if actions[k] == "" {
			t.Errorf("AsyncAPI: no %s operation; have %v", k, actions)
		}
	}
	msg := get(doc, "components", "messages", typePlaced)
	if get(msg, "payload", "schemaFormat") != flows.AvroSchemaFormat || get(msg, "payload", "schema", "name") != "OrderPlaced" ||
		get(msg, "correlationId", "location") != "$message.header#/ce_correlationid" {
		t.Errorf("AsyncAPI message: %v", msg)
	}
	// The API serves the same document.
	srv := httptest.NewServer(flows.NewHandler(view))
	defer srv.Close()
	cl, _ := flows.NewClient(srv.URL)
	b, err := cl.AsyncAPI(context.Background(), "json")
	if err != nil || !strings.Contains(string(b), `"asyncapi": "3.0.0"`) {
		t.Errorf("GET /api/catalog/asyncapi?format=json: %v\n%.300s", err, b)
	}
}
