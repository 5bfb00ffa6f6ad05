package benchkit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/schema"
)

// latencyWarmup is how many events go through both hops, unpaced and
// unmeasured, before a latency round: connections, metadata, schema ids
// and group assignments are then all in place.
const latencyWarmup = 20

// latency measures a two-hop choreography at a fixed rate: an event is
// published to topic a; the first service handles it and publishes it on
// to topic b; the second handles that. The publisher is open-loop: each
// event is sent when it is due, on a goroutine of its own, with a
// synchronous publish. The latency of an event runs from the time it was
// due (so that a publisher falling behind counts against the run) to the
// end of the second handler.
//
//   - latency/raw: kgo ProduceSync to publish; two kgo group poll loops, the
//     first decoding each record, encoding it again and sending the poll's
//     records on with one ProduceSync, the second decoding each record;
//   - latency/choreo: Publish; two choreo consumers with default options,
//     the first calling Publish from its handler.
//
// Each round publishes at most two seconds' worth of events at cfg.Rate,
// on fresh topics with cfg.Partitions partitions.
func (r *runner) latency(ctx context.Context) error {
	n := min(r.cfg.Events, 2*r.cfg.Rate)
	parts := r.cfg.Partitions
	set := Settings{Events: n, Partitions: parts, Keys: n, Handler: "hop 1 publishes, hop 2 counts", Rate: r.cfg.Rate}
	rawS := r.newSeries(Latency, "raw", "", set)
	choS := r.newSeries(Latency, "choreo", "raw", set)
	for round := 1; round <= r.cfg.Rounds; round++ {
		of := fmt.Sprintf("round %d/%d", round, r.cfg.Rounds)
		for _, v := range []struct {
			name string
			se   *series
			run  func(ctx context.Context, a, b string, lr *latencyRun) error
		}{
			{"raw", rawS, r.latencyRaw},
			{"choreo", choS, r.latencyChoreo},
		} {
			a := r.env.Name("latency", v.name, strconv.Itoa(round), "a")
			b := r.env.Name("latency", v.name, strconv.Itoa(round), "b")
			for _, t := range []string{a, b} {
				if err := r.env.CreateTopic(ctx, t, parts); err != nil {
					return err
				}
			}
			_, err := r.step(ctx, v.se, "latency "+v.name+" "+of, n, func(ctx context.Context, count *atomic.Int64) (measurement, error) {
				lr := newLatencyRun(n, r.cfg.Rate, count)
				if err := v.run(ctx, a, b, lr); err != nil {
					return measurement{}, err
				}
				return lr.measurement()
			})
			r.env.DeleteTopics(context.WithoutCancel(ctx), []string{a, b}, a, b) // and the choreo groups' topics, named after a and b
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// latencyRun is the state of one latency round: when each event was due,
// when it arrived, and the signals between the publisher and the
// receiving end.
type latencyRun struct {
	n        int
	interval time.Duration
	count    *atomic.Int64 // measured events received

	due     []atomic.Int64 // unix nanos each event was due
	arrived []atomic.Int64 // unix nanos each arrived at hop 2; 0 before
	warm    atomic.Int64   // warm-up events received
	warmed  chan struct{}  // closed when all warm-up events arrived
	all     chan struct{}  // closed when all measured events arrived
	start   time.Time      // when the first measured event was due
	once    sync.Once
	allOnce sync.Once
}

func newLatencyRun(n, rate int, count *atomic.Int64) *latencyRun {
	return &latencyRun{
		n: n, interval: time.Second / time.Duration(rate), count: count,
		due: make([]atomic.Int64, n), arrived: make([]atomic.Int64, n),
		warmed: make(chan struct{}), all: make(chan struct{}),
	}
}

// The keys of a latency round: "w-<i>" for warm-up events, "e-<i>" for
// measured ones; each event has a key of its own.
func warmKey(i int) string  { return "w-" + strconv.Itoa(i) }
func eventKey(i int) string { return "e-" + strconv.Itoa(i) }

// received records the arrival at hop 2 of the event with key.
func (lr *latencyRun) received(key string) {
	now := time.Now().UnixNano()
	if rest, ok := strings.CutPrefix(key, "e-"); ok {
		i, err := strconv.Atoi(rest)
		if err != nil || i < 0 || i >= lr.n || !lr.arrived[i].CompareAndSwap(0, now) {
			return // not ours, or a redelivery
		}
		if lr.count.Add(1) == int64(lr.n) {
			lr.allOnce.Do(func() { close(lr.all) })
		}
		return
	}
	if strings.HasPrefix(key, "w-") && lr.warm.Add(1) == latencyWarmup {
		lr.once.Do(func() { close(lr.warmed) })
	}
}

// latencyOutstanding bounds the publishes under way at once: the
// publisher is open-loop (each event is sent when due, whether or not the
// ones before it are acknowledged), so a slow broker shows as latency,
// not as a lower rate.
const latencyOutstanding = 256

// publish sends the warm-up events one by one, waits for them to arrive,
// then sends the measured events at the run's rate, each on a goroutine of
// its own, and waits for them all to arrive; send publishes one event and
// waits for its acknowledgement.
func (lr *latencyRun) publish(ctx context.Context, send func(ctx context.Context, key string, i int) error) error {
	for i := range latencyWarmup {
		if err := send(ctx, warmKey(i), i); err != nil {
			return fmt.Errorf("warm-up publish: %w", err)
		}
	}
	select {
	case <-lr.warmed:
	case <-ctx.Done():
		return ctx.Err()
	}
	var (
		wg     sync.WaitGroup
		sem    = make(chan struct{}, latencyOutstanding)
		failed = make(chan error, 1)
	)
	defer wg.Wait()
	lr.start = time.Now()
	for i := range lr.n {
		due := lr.start.Add(time.Duration(i) * lr.interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		lr.due[i].Store(due.UnixNano())
		select {
		case sem <- struct{}{}:
		case err := <-failed:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := send(ctx, eventKey(i), i); err != nil {
				select {
				case failed <- fmt.Errorf("publish: %w", err):
				default:
				}
			}
		}()
	}
	select {
	case <-lr.all:
		return nil
	case err := <-failed:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// measurement returns the latencies and the rate received.
func (lr *latencyRun) measurement() (measurement, error) {
	lat := make([]time.Duration, 0, lr.n)
	var last int64
	for i := range lr.n {
		a := lr.arrived[i].Load()
		if a == 0 {
			return measurement{}, fmt.Errorf("event %d of %d never arrived", i, lr.n)
		}
		lat = append(lat, time.Duration(a-lr.due[i].Load()))
		last = max(last, a)
	}
	return measurement{n: lr.n, took: time.Duration(last - lr.start.UnixNano()), lat: lat}, nil
}

// latencyChoreo runs the round with the choreo producer and consumers.
func (r *runner) latencyChoreo(ctx context.Context, a, b string, lr *latencyRun) error {
	p, err := r.newProducer(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = p.Close(context.WithoutCancel(ctx)) }()
	hop1, err := consumer.New(r.env.Conn, r.env.Registry, a+".svc", consumer.Logger(quietLogger))
	if err != nil {
		return fmt.Errorf("choreo consumer: %w", err)
	}
	consumer.Handle(hop1, a, func(ctx context.Context, ev consumer.Event[OrderPlaced]) error {
		_, err := p.Publish(ctx, b, ev.Key, ev.Data)
		return err
	})
	hop2, err := consumer.New(r.env.Conn, r.env.Registry, b+".svc", consumer.Logger(quietLogger))
	if err != nil {
		return fmt.Errorf("choreo consumer: %w", err)
	}
	consumer.Handle(hop2, b, func(_ context.Context, ev consumer.Event[OrderPlaced]) error {
		lr.received(ev.Key)
		return nil
	})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	errs := make(chan error, 2)
	for _, c := range []*consumer.Consumer{hop1, hop2} {
		go func() { errs <- runConsumer(ctx, c, done) }()
	}
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- lr.publish(ctx, func(ctx context.Context, key string, i int) error {
			_, err := p.Publish(ctx, a, key, r.events.Event(i, lr.n))
			return err
		})
	}()
	var err1 error
	left := 2 // consumers still to report
	select {
	case err1 = <-pubErr:
	case err1 = <-errs: // a consumer stopped early
		left--
		if err1 == nil {
			err1 = errors.New("choreo consumer stopped early")
		}
		cancel()
		<-pubErr
	}
	close(done)
	for range left {
		if err := <-errs; err != nil && err1 == nil && !errors.Is(err, context.Canceled) {
			err1 = err
		}
	}
	return err1
}

// latencyRaw runs the round with kgo clients.
func (r *runner) latencyRaw(ctx context.Context, a, b string, lr *latencyRun) error {
	opts, err := r.clientOpts(produceOpts()...)
	if err != nil {
		return err
	}
	pub, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer pub.Close()
	p, err := r.newProducer(ctx)
	if err != nil {
		return err
	}
	tpl, err := r.newTemplate(ctx, p, a)
	_ = p.Close(ctx)
	if err != nil {
		return err
	}
	codec := schema.NewCodec(r.env.Registry)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	// loop runs a group poll loop on topic that hands each poll's records
	// to each.
	loop := func(group, topic string, each func(ctx context.Context, recs []*kgo.Record) error) error {
		opts, err := r.rawConsumerOpts(group, topic)
		if err != nil {
			return err
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			return fmt.Errorf("kafka client: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			lastCommit := time.Now()
			for {
				fs := cl.PollFetches(ctx)
				if ctx.Err() != nil {
					errs <- nil
					return
				}
				if err := fetchErr(fs); err != nil {
					errs <- err
					return
				}
				var batch []*kgo.Record
				fs.EachRecord(func(rec *kgo.Record) { batch = append(batch, rec) })
				if err := each(ctx, batch); err != nil {
					if ctx.Err() == nil {
						errs <- err
					} else {
						errs <- nil
					}
					return
				}
				if time.Since(lastCommit) >= time.Second {
					if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
						errs <- fmt.Errorf("commit: %w", err)
						return
					}
					lastCommit = time.Now()
				}
			}
		}()
		return nil
	}
	// Hop 1 decodes each record, encodes it again and sends the poll's
	// records to b at once, waiting for them (ProduceSync does not linger)
	// before the next poll.
	err = loop(a+".svc", a, func(ctx context.Context, recs []*kgo.Record) error {
		outs := make([]*kgo.Record, 0, len(recs))
		for _, rec := range recs {
			var ev OrderPlaced
			if _, err := codec.Decode(ctx, rec.Value, orderPlacedSchema, &ev); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			v, err := codec.Encode(tpl.schemaID, orderPlacedSchema, &ev)
			if err != nil {
				return fmt.Errorf("encode: %w", err)
			}
			outs = append(outs, &kgo.Record{Topic: b, Key: rec.Key, Value: v, Headers: rec.Headers})
		}
		if len(outs) == 0 {
			return nil
		}
		if err := pub.ProduceSync(ctx, outs...).FirstErr(); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		return nil
	})
	if err == nil { // hop 2 decodes each record and notes its arrival
		err = loop(b+".svc", b, func(ctx context.Context, recs []*kgo.Record) error {
			for _, rec := range recs {
				var ev OrderPlaced
				if _, err := codec.Decode(ctx, rec.Value, orderPlacedSchema, &ev); err != nil {
					return fmt.Errorf("decode: %w", err)
				}
				lr.received(string(rec.Key))
			}
			return nil
		})
	}
	if err != nil {
		cancel()
		wg.Wait()
		return err
	}
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- lr.publish(ctx, func(ctx context.Context, key string, i int) error {
			v, err := codec.Encode(tpl.schemaID, orderPlacedSchema, r.events.Event(i, lr.n))
			if err != nil {
				return fmt.Errorf("encode: %w", err)
			}
			return pub.ProduceSync(ctx, &kgo.Record{Topic: a, Key: []byte(key), Value: v, Headers: tpl.withID()}).FirstErr()
		})
	}()
	var err1 error
	select {
	case err1 = <-pubErr:
	case err1 = <-errs:
		if err1 == nil {
			err1 = errors.New("raw consumer stopped early")
		}
		cancel()
		<-pubErr
	}
	cancel()
	wg.Wait()
	return err1
}
