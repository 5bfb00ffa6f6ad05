package reliability_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/kafkatest"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/schema/registry"
)

// stoppableRegistry serves the embedded schema registry over HTTP on a
// fixed loopback port, and can stop serving and serve again on the same
// port with the same state (what a registry restart looks like to its
// clients).
type stoppableRegistry struct {
	t    *testing.T
	reg  *registry.Server
	addr string
	mu   sync.Mutex
	srv  *http.Server
}

func newStoppableRegistry(t *testing.T) *stoppableRegistry {
	t.Helper()
	reg, err := registry.New()
	if err != nil {
		t.Fatal(err)
	}
	r := &stoppableRegistry{t: t, reg: reg}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.serve(ln)
	t.Cleanup(r.stop)
	return r
}

func (r *stoppableRegistry) url() string { return "http://" + r.addr }

func (r *stoppableRegistry) serve(ln net.Listener) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.srv = &http.Server{Handler: r.reg, ReadHeaderTimeout: 5 * time.Second}
	go func(srv *http.Server) { _ = srv.Serve(ln) }(r.srv)
}

// stop closes the listener and every connection: requests are refused.
func (r *stoppableRegistry) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		_ = r.srv.Close()
		r.srv = nil
	}
}

// start serves again on the same address.
func (r *stoppableRegistry) start() {
	r.t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("registry listen again on %s: %v", r.addr, err)
	}
	r.serve(ln)
}

// TestRegistryOutage takes the schema registry down mid-stream while the
// service is redeployed (a new consumer, with no schema cached, replaces
// the old one): the new consumer cannot decode, its circuit breaker opens,
// and nothing is dead-lettered or forwarded for the outage. A record with
// a schema id the registry does not know arrives during the outage: an
// unreachable registry is not an unknown id, so it waits too, and is
// dead-lettered once, as unknown_schema_id, after the registry returns.
// Every event is handled exactly once.
func TestRegistryOutage(t *testing.T) {
	r := newStoppableRegistry(t)
	e := newEnv(t, 4, false, r.url())
	n := size(2000, 10000)
	outage := size(3*time.Second, 30*time.Second)
	group := kafkatest.Group(t)
	// Short: a short cool-down to see several probes; full: the defaults.
	breaker := consumer.Breaker{}
	if !full() {
		breaker.CoolDown = 300 * time.Millisecond
	}
	newConsumer := func() *consumer.Consumer {
		// A fresh registry client: a restarted process has nothing cached.
		c, err := consumer.New(e.conn, newRegistry(t, r.url()), group, consumer.Store(e.sink.store()),
			consumer.CommitInterval(200*time.Millisecond), consumer.CircuitBreaker(breaker),
			consumer.RetryTopics(time.Second), consumer.Retry(consumer.RetryPolicy{MaxAttempts: 3, InitialInterval: 20 * time.Millisecond, Multiplier: 2}))
		if err != nil {
			t.Fatal(err)
		}
		consumer.Handle(c, e.topic, handler(e.sink))
		return c
	}
	a := newConsumer()
	stopA := running(t, a)
	s := e.startStream(0, n, 50, size(50*time.Millisecond, 100*time.Millisecond))
	time.Sleep(time.Second)

	// The outage, and a redeploy during it.
	r.stop()
	began := time.Now()
	if err := stopA(); err != nil {
		t.Fatalf("old consumer: %v", err)
	}
	// Traffic goes on (the producer has the schema's id cached): a burst
	// waits for the new consumer, the record with an unknown id among it.
	burst := e.publish(n, 100)
	unknown := publishUnknownSchema(t, e)
	b := newConsumer()
	stopB := running(t, b)
	route := e.topic + "/" + OrderPlaced{}.AvroSchema().FullName()
	sawOpen := false
	for time.Since(began) < outage {
		if b.Stats().Circuits[route] == "open" {
			sawOpen = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	midOutage := b.Stats()
	r.start()
	back := time.Now()
	sent := append(s.wait(), burst...)
	done := e.waitEffects(sent, 3*time.Minute)
	eventually(t, time.Minute, "the unknown-schema record dead-lettered", func() bool { return b.Stats().DeadLettered >= 1 })
	time.Sleep(500 * time.Millisecond)
	if err := stopB(); err != nil {
		t.Errorf("new consumer: %v", err)
	}
	if !sawOpen {
		t.Errorf("the breaker of %s never opened during the outage (stats %+v)", route, midOutage)
	}
	if midOutage.DeadLettered != 0 || midOutage.Forwarded != 0 {
		t.Errorf("during the outage: %d dead-lettered, %d forwarded; want none", midOutage.DeadLettered, midOutage.Forwarded)
	}
	st := b.Stats()
	if st.Forwarded != 0 || st.DeadLettered != 1 {
		t.Errorf("in all: %d forwarded, %d dead-lettered; want none forwarded and only the unknown-schema record dead-lettered", st.Forwarded, st.DeadLettered)
	}
	dls := readDeadLetters(t, e, dlq.Topic(group), 1)
	if len(dls) != 1 || dls[0].Original.Offset != unknown.Offset || dls[0].Original.Partition != unknown.Partition || dls[0].Error.Kind != choreo.KindUnknownSchema {
		t.Errorf("dead letters %d; want one, the unknown-schema record %d/%d as %s", len(dls), unknown.Partition, unknown.Offset, choreo.KindUnknownSchema)
	}
	tl := count(sent, e.sink.effects(t))
	tl.check(t)
	record(t, e, result{
		Fault:  fmt.Sprintf("schema registry down %v, the service redeployed during it", back.Sub(began).Round(100*time.Millisecond)),
		Events: tl.events, Effects: tl.effects, Duplicates: tl.duplicates, Lost: tl.lost,
		Drain: done.Sub(back),
		Notes: fmt.Sprintf("breaker opened, %d waits at it, 0 dead letters and 0 forwards for the outage; the unknown-id record dead-lettered once after it", st.CircuitWaits),
	})
}

// publishUnknownSchema sends a record whose value names a schema id the
// registry never issued, with valid headers.
func publishUnknownSchema(t *testing.T, e *env) *kgo.Record {
	t.Helper()
	ctx := context.Background()
	rec, _, err := e.prod.Record(ctx, e.topic, "poison", order("poison", 0))
	if err != nil {
		t.Fatal(err)
	}
	rec.Value = append(binary.BigEndian.AppendUint32([]byte{0}, 0x7ffffff0), rec.Value[5:]...)
	cl := e.cluster.Client(t)
	res, err := cl.ProduceSync(ctx, rec).First()
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// readDeadLetters reads the dead letters of topic, waiting for at least
// want of them and then a little longer for any extra copy.
func readDeadLetters(t *testing.T, e *env, topic string, want int) []*dlq.DeadLetter {
	t.Helper()
	cl := e.cluster.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	codec := schema.NewCodec(e.reg)
	var out []*dlq.DeadLetter
	deadline := time.Now().Add(60 * time.Second)
	var extra time.Time
	for time.Now().Before(deadline) && (extra.IsZero() || time.Now().Before(extra)) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		for _, r := range fs.Records() {
			dl, err := dlq.Decode(context.Background(), codec, r)
			if err != nil {
				t.Fatalf("dead letter at %d: %v", r.Offset, err)
			}
			out = append(out, dl)
		}
		if err := fs.Err0(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Logf("reading dead letters: %v", err)
		}
		if len(out) >= want && extra.IsZero() {
			extra = time.Now().Add(2 * time.Second)
		}
	}
	return out
}
