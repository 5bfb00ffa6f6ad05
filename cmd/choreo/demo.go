package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/consumer"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/examples/events"
	"github.com/choreokit/choreo/examples/notifications/notificationsvc"
	"github.com/choreokit/choreo/examples/orders/ordersvc"
	"github.com/choreokit/choreo/examples/payments/paymentsvc"
	"github.com/choreokit/choreo/examples/shipping/shippingsvc"
	"github.com/choreokit/choreo/schema"
	"github.com/choreokit/choreo/tracing"
)

// demoOptions are the flags of `choreo demo`.
type demoOptions struct {
	orders      int
	chaos       bool
	failureRate float64
	limitCents  int64
	databaseURL string
	timeout     time.Duration
	timelines   int
	seed        uint64
	logFile     string
}

// Limits of the demo's flags.
const maxDemoOrders = 100_000

func newDemoCmd() *cobra.Command {
	var o demoOptions
	var kafka *kafkaFlags
	var reg *registryFlags
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the example shop's services and watch orders go through them",
		Long: `Run the example shop (examples/: the order, payment, shipping and
notification services, the same code as their programs) in this process,
on an embedded Kafka broker and schema registry, or on the ones --brokers
and --registry name. Place --orders orders, some over the payment limit
(declined, so cancelled), while the payment gateway fails some calls
transiently (retried); inject one poison record into the orders topic
(dead-lettered). With --chaos, stop the payment service mid-run and start
it again in the same group.

While it runs, a progress line; at the end, the timelines of a few orders,
a summary (completed, cancelled, retried, dead letters, end-to-end latency)
and the dead letters. Exit 0 only if every order ended consistent: paid,
shipped and completed, or declined and cancelled; charged at most once;
none lost. With DATABASE_URL (or --database-url) the payment service keeps
its idempotency marks, payments and outbox in PostgreSQL.

On a cluster (--brokers), the demo first moves the services' consumer
groups to the end of the topics they read, as kafka-consumer-groups
--reset-offsets --to-latest does: records earlier runs left unhandled are
skipped (their number is printed), so the report is of this run alone. It
stops with an error if one of those groups has members: services running
elsewhere in the same groups would share this run's orders.

The services' logs go to a file (--log-file, or a new one in the temporary
directory), named at the end.`,
		Args: usageArgs(cobra.NoArgs, func(args []string) string {
			return fmt.Sprintf("unexpected argument %q", args[0])
		}),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			conn, err := kafka.config()
			if err != nil {
				return err
			}
			if len(conn.Brokers) > 0 {
				if err := reg.check(); err != nil {
					return usagef("--brokers needs a schema registry: set %s or --registry", envRegistryURL)
				}
			}
			return runDemo(cmd.Context(), o, conn, reg, cmd.OutOrStdout())
		},
	}
	kafka = addKafkaFlags(cmd)
	reg = addRegistryFlag(cmd)
	fs := cmd.Flags()
	fs.IntVar(&o.orders, "orders", 20, "orders to place (every fifth is over the payment limit)")
	fs.BoolVar(&o.chaos, "chaos", false, "stop the payment service mid-run and start it again")
	fs.Float64Var(&o.failureRate, "failure-rate", 0.2, "share of payment gateway calls that fail transiently, 0 to below 1")
	fs.Int64Var(&o.limitCents, "limit-cents", paymentsvc.DefaultLimitCents, "amounts above are declined by the payment service")
	fs.StringVar(&o.databaseURL, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL for the payment service (env DATABASE_URL; default: memory)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait for every order to end")
	fs.IntVar(&o.timelines, "timelines", 3, "order timelines to print")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the amounts and the gateway's failures (default: random)")
	fs.StringVar(&o.logFile, "log-file", "", "file for the services' logs (default: a new file in the temporary directory)")
	_ = cmd.MarkFlagFilename("log-file")
	return cmd
}

// check reports a bad flag value as a usage error.
func (o *demoOptions) check() error {
	switch {
	case o.orders < 1 || o.orders > maxDemoOrders:
		return usagef("--orders %d: want 1 to %d", o.orders, maxDemoOrders)
	case !(o.failureRate >= 0 && o.failureRate < 1):
		return usagef("--failure-rate %v: want at least 0 and below 1", o.failureRate)
	case o.limitCents < 1:
		return usagef("--limit-cents %d: want at least 1", o.limitCents)
	case o.timeout <= 0:
		return usagef("--timeout %v: want more than 0", o.timeout)
	case o.timelines < 0:
		return usagef("--timelines %d: want 0 or more", o.timelines)
	}
	return nil
}

// demoTestHooks lets tests break the demo on purpose, to see its checks
// fail. Nil fields change nothing.
var demoTestHooks struct {
	gateway func(paymentsvc.Gateway) paymentsvc.Gateway // wraps the payment gateway
}

// demoRetries are the services' retry settings in the demo. The defaults
// (in process 100ms then 200ms, then retry topics after 10s, 1m and 10m)
// suit production, where a failing dependency needs time; here they would
// make one unlucky order take ten seconds while the rest take
// milliseconds. Shorter delays let a transient gateway failure recover in
// well under a second and still show every step: in-process retries, and
// now and then a forward through a retry topic (each retry topic is named
// after its delay: payment-service.retry.1-250ms).
//
// A record in a retry topic waits for its time with its partition paused;
// once resumed, the partition is fetched by the client's next fetch, which
// may wait for the one in flight: up to the fetch's maximum wait, 5s by
// default. 100ms keeps the retry's delay near what it says.
func demoRetries() []consumer.Option {
	return []consumer.Option{
		consumer.ClientOptions(kgo.FetchMaxWait(100 * time.Millisecond)),
		consumer.Retry(consumer.RetryPolicy{
			MaxAttempts: 3, InitialInterval: 20 * time.Millisecond, MaxInterval: 100 * time.Millisecond,
			Multiplier: 2, RandomizationFactor: 0.5,
		}),
		consumer.RetryTopics(250*time.Millisecond, time.Second),
		consumer.CommitInterval(200 * time.Millisecond),
		// A route whose handler keeps failing (half its attempts, or ten
		// in a row) is paused by its circuit breaker, 15s by default
		// before a probe. A high --failure-rate can trip it; 1s keeps the
		// run short and still shows the pause.
		consumer.CircuitBreaker(consumer.Breaker{CoolDown: time.Second}),
	}
}

// demo is one run of `choreo demo`.
type demo struct {
	opts     demoOptions
	conn     connection.Config
	reg      *schema.Registry
	regURL   string
	embedded bool
	log      *slog.Logger
	db       *pgxpool.Pool
	gateway  *paymentsvc.SimulatedGateway
	mailer   *countingMailer
	runID    string

	orders        *ordersvc.Service
	shipping      *shippingsvc.Service
	notifications *notificationsvc.Service
	payments      *paymentRunner

	svcErr chan error // a service's Run failing on its own

	placed    []placedOrder // in placing order
	placedMu  sync.Mutex
	poisonKey string
	chaosNote string
	fresh     freshStart // on a cluster: the records of earlier runs skipped
}

// placedOrder is an order the demo placed.
type placedOrder struct {
	id          string
	amountCents int64
}

// runDemo runs the demo and writes its report to out.
func runDemo(ctx context.Context, o demoOptions, conn connection.Config, rf *registryFlags, out io.Writer) (err error) {
	d := &demo{opts: o, conn: conn, svcErr: make(chan error, 8), runID: choreo.NewID()[24:]}
	if o.seed == 0 {
		o.seed = rand.Uint64()
		d.opts.seed = o.seed
	}

	// The stack: embedded unless --brokers names one.
	if len(conn.Brokers) == 0 {
		st, serr := startDev(devConfig{listen: "127.0.0.1:0", registryListen: "127.0.0.1:0", partitions: events.Partitions})
		if serr != nil {
			return serr
		}
		defer func() {
			if cerr := st.close(); cerr != nil && err == nil {
				err = cerr
			}
		}()
		d.conn.Brokers = []string{st.brokerAddr}
		d.regURL, d.embedded = st.registryURL, true
		if d.reg, err = schema.NewRegistry([]string{st.registryURL}); err != nil {
			return err
		}
	} else {
		if d.reg, err = rf.client(); err != nil {
			return err
		}
		d.regURL = rf.url
	}

	logPath, closeLog, err := d.openLog()
	if err != nil {
		return err
	}
	defer closeLog()

	if o.databaseURL != "" {
		cfg, err := pgxpool.ParseConfig(o.databaseURL)
		if err != nil {
			return usagef("--database-url: %v", err)
		}
		cfg.MaxConns = max(cfg.MaxConns, 20) // above the payment consumer's 16 handlers
		if d.db, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
			return fmt.Errorf("database: %w", err)
		}
		defer d.db.Close()
	}
	if d.gateway, err = paymentsvc.NewSimulatedGateway(o.failureRate, o.seed); err != nil {
		return usagef("--failure-rate: %v", err)
	}
	d.mailer = &countingMailer{inner: notificationsvc.LogMailer{Logger: d.log}}

	where := "the embedded Kafka broker and schema registry"
	if !d.embedded {
		where = fmt.Sprintf("Kafka at %s, registry %s", strings.Join(d.conn.Brokers, ","), d.regURL)
	}
	store := "memory"
	if d.db != nil {
		store = "PostgreSQL"
	}
	fmt.Fprintf(out, "choreo demo: %d orders through order-service, payment-service, shipping-service and notification-service\n", o.orders)
	chaos := ""
	if o.chaos {
		chaos = "; chaos: the payment service restarts a third of the way"
	}
	fmt.Fprintf(out, "  on %s; payment store: %s; gateway failure rate %.0f%%; limit %s; seed %d%s\n",
		where, store, o.failureRate*100, money(o.limitCents), o.seed, chaos)

	// The topics first: a consumer started before its source topic exists
	// waits for it, looking again every 2 seconds.
	if err := events.CreateTopics(ctx, d.conn, events.TopicOrders, events.TopicPayments, events.TopicShipments); err != nil {
		return err
	}
	runCtx, stopServices := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopServices()
		wg.Wait()
	}()
	if err := d.startServices(runCtx, &wg); err != nil {
		return err
	}
	if n := d.fresh.total(); n > 0 {
		fmt.Fprintf(out, "  skipped %d record(s) earlier runs left unhandled (%s): the services' groups start at the end of their topics\n", n, d.fresh)
	}
	if err := d.waitReady(runCtx); err != nil {
		return err
	}
	dlqStart, err := d.dlqOffsets(ctx)
	if err != nil {
		return err
	}

	start := time.Now()
	progress := newProgressLine(out)
	stopProgress := progress.run(d.progress)
	if err := d.placeOrders(runCtx, &wg); err != nil {
		stopProgress()
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		return err
	}
	waitErr := d.waitDone(runCtx, start.Add(o.timeout))
	stopProgress()
	if waitErr == nil {
		d.settle(runCtx)
	}
	elapsed := time.Since(start)

	// Stop the services and read what they left.
	stopServices()
	wg.Wait()
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	stats := d.stats()
	deadLetters, dlqErr := d.readDeadLetters(ctx, dlqStart)
	ledger, ledgerErr := d.ledger(ctx)
	if err := errors.Join(dlqErr, ledgerErr); err != nil {
		return errors.Join(waitErr, err)
	}

	// The report, also when orders did not end in time: their timelines
	// and the checks show where they stopped.
	facts := d.facts(ledger)
	problems := checkDemo(facts, deadLetters, d.poisonKey)
	r := demoReport{
		facts: facts, deadLetters: deadLetters, stats: stats, gateway: d.gateway.Stats(), emails: d.mailer.sent(),
		elapsed: elapsed, chaosNote: d.chaosNote, problems: problems, timelines: o.timelines,
	}
	r.write(out)
	d.writeLookAt(out, deadLetters, logPath)
	if waitErr != nil {
		return waitErr
	}
	if len(problems) > 0 {
		first := problems[:min(len(problems), 3)]
		more := ""
		if len(problems) > len(first) {
			more = fmt.Sprintf("; and %d more in the summary", len(problems)-len(first))
		}
		return fmt.Errorf("%d consistency check(s) failed: %s%s", len(problems), strings.Join(first, "; "), more)
	}
	return nil
}

// openLog opens the services' log file and makes d.log write JSON lines
// to it, with the correlation ids of the event being handled.
func (d *demo) openLog() (path string, closeLog func(), err error) {
	var f *os.File
	if d.opts.logFile != "" {
		f, err = os.OpenFile(d.opts.logFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	} else {
		f, err = os.CreateTemp("", "choreo-demo-*.log")
	}
	if err != nil {
		return "", nil, fmt.Errorf("log file: %w", err)
	}
	d.log = slog.New(tracing.NewLogHandler(slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return f.Name(), func() { _ = f.Close() }, nil
}

// startServices creates the four services and runs them on wg.
func (d *demo) startServices(ctx context.Context, wg *sync.WaitGroup) error {
	var err error
	retries := demoRetries()
	if d.orders, err = ordersvc.New(ctx, ordersvc.Config{Conn: d.conn, Registry: d.reg, Logger: d.log, ConsumerOptions: retries}); err != nil {
		return err
	}
	if d.shipping, err = shippingsvc.New(ctx, shippingsvc.Config{Conn: d.conn, Registry: d.reg, Logger: d.log, ConsumerOptions: retries}); err != nil {
		return err
	}
	if d.notifications, err = notificationsvc.New(ctx, notificationsvc.Config{Conn: d.conn, Registry: d.reg, Logger: d.log, Mailer: d.mailer, ConsumerOptions: retries}); err != nil {
		return err
	}
	var gateway paymentsvc.Gateway = d.gateway
	if demoTestHooks.gateway != nil {
		gateway = demoTestHooks.gateway(gateway)
	}
	d.payments = &paymentRunner{cfg: paymentsvc.Config{
		Conn: d.conn, Registry: d.reg, Logger: d.log, Gateway: gateway, LimitCents: d.opts.limitCents, DB: d.db, ConsumerOptions: retries,
	}, svcErr: d.svcErr}
	if err := d.payments.create(ctx); err != nil {
		return err
	}
	if !d.embedded {
		adm, closeAdm, err := d.admin()
		if err != nil {
			return err
		}
		d.fresh, err = startFresh(ctx, adm, d.consumers())
		closeAdm()
		if err != nil {
			return err
		}
	}
	for _, s := range []demoService{d.orders, d.shipping, d.notifications} {
		d.run(ctx, wg, s)
	}
	d.payments.runCurrent(ctx, wg)
	return nil
}

// demoService is what the demo runs of each service.
type demoService interface {
	Run(ctx context.Context) error
	Close(ctx context.Context) error
	Consumer() *consumer.Consumer
}

// run runs s until ctx ends; a failure of its own goes to d.svcErr.
func (d *demo) run(ctx context.Context, wg *sync.WaitGroup, s demoService) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := s.Run(ctx)
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		err = errors.Join(err, s.Close(closeCtx))
		if err != nil {
			d.svcErr <- fmt.Errorf("%s: %w", s.Consumer().Group(), err)
		}
	}()
}

// paymentRunner runs the payment service and, with --chaos, stops it and
// starts a new one in the same group.
type paymentRunner struct {
	cfg    paymentsvc.Config
	svcErr chan error

	mu     sync.Mutex
	svc    *paymentsvc.Service
	stop   context.CancelFunc
	done   chan struct{}
	past   []consumer.Stats // of the instances stopped
	starts int
}

// start creates and runs a new instance.
func (p *paymentRunner) start(ctx context.Context, wg *sync.WaitGroup) error {
	if err := p.create(ctx); err != nil {
		return err
	}
	p.runCurrent(ctx, wg)
	return nil
}

// create creates a new instance, which runCurrent runs.
func (p *paymentRunner) create(ctx context.Context) error {
	svc, err := paymentsvc.New(ctx, p.cfg)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.svc = svc
	p.starts++
	p.mu.Unlock()
	return nil
}

// runCurrent runs the instance create made until ctx ends or restart
// stops it.
func (p *paymentRunner) runCurrent(ctx context.Context, wg *sync.WaitGroup) {
	ictx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	p.mu.Lock()
	svc := p.svc
	p.stop, p.done = stop, done
	p.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		err := svc.Run(ictx)
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err = errors.Join(err, svc.Close(closeCtx)); err != nil {
			p.svcErr <- fmt.Errorf("%s: %w", paymentsvc.Group, err)
		}
	}()
}

// restart stops the running instance (its context cancelled: it finishes
// the events it is handling, commits and leaves the group) and starts a
// new one, which joins the group and takes over from the committed
// offsets.
func (p *paymentRunner) restart(ctx context.Context, wg *sync.WaitGroup) error {
	p.mu.Lock()
	stop, done, svc := p.stop, p.done, p.svc
	p.mu.Unlock()
	stop()
	<-done
	p.mu.Lock()
	p.past = append(p.past, svc.Consumer().Stats())
	p.mu.Unlock()
	return p.start(ctx, wg)
}

// current returns the running instance's consumer.
func (p *paymentRunner) current() *consumer.Consumer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.svc.Consumer()
}

// stats returns the counters of every instance, summed.
func (p *paymentRunner) stats() consumer.Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	sum := p.svc.Consumer().Stats()
	for _, s := range p.past {
		sum = addStats(sum, s)
	}
	return sum
}

func addStats(a, b consumer.Stats) consumer.Stats {
	a.Handled += b.Handled
	a.Duplicates += b.Duplicates
	a.Retried += b.Retried
	a.Forwarded += b.Forwarded
	a.DeadLettered += b.DeadLettered
	a.Skipped += b.Skipped
	return a // not InFlight: a stopped instance has nothing in flight
}

// consumers returns the running consumers by group.
func (d *demo) consumers() map[string]*consumer.Consumer {
	return map[string]*consumer.Consumer{
		ordersvc.Group:        d.orders.Consumer(),
		paymentsvc.Group:      d.payments.current(),
		shippingsvc.Group:     d.shipping.Consumer(),
		notificationsvc.Group: d.notifications.Consumer(),
	}
}

// stats returns each service's consumer counters (all payment instances
// summed).
func (d *demo) stats() map[string]consumer.Stats {
	out := map[string]consumer.Stats{}
	for g, c := range d.consumers() {
		out[g] = c.Stats()
	}
	out[paymentsvc.Group] = d.payments.stats()
	return out
}

// waitReady waits until every consumer has joined its group.
func (d *demo) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var why []string
		for _, c := range d.consumers() {
			if err := c.CheckReady(); err != nil {
				why = append(why, err.Error())
			}
		}
		if len(why) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("services not ready after 60s: %s", strings.Join(why, "; "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-d.svcErr:
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// dlqTopics are the services' dead-letter topics.
func dlqTopics() []string {
	return []string{dlq.Topic(ordersvc.Group), dlq.Topic(paymentsvc.Group), dlq.Topic(shippingsvc.Group), dlq.Topic(notificationsvc.Group)}
}

// dlqOffsets returns the end offsets of the dead-letter topics: the dead
// letters of this run come after them.
func (d *demo) dlqOffsets(ctx context.Context) (kadm.ListedOffsets, error) {
	adm, closeAdm, err := d.admin()
	if err != nil {
		return nil, err
	}
	defer closeAdm()
	offs, err := adm.ListEndOffsets(ctx, dlqTopics()...)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("dead-letter topics: %w", err)
	}
	return offs, nil
}

func (d *demo) admin() (*kadm.Client, func(), error) {
	opts, err := d.conn.ClientOptions()
	if err != nil {
		return nil, nil, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, nil, err
	}
	return kadm.NewClient(cl), cl.Close, nil
}

// amount returns the amount of the i-th order: every fifth is over the
// limit (declined), the others at most the limit.
func (d *demo) amount(rnd *rand.Rand, i int) int64 {
	limit := d.opts.limitCents
	if i%5 == 4 {
		return limit + 1 + rnd.Int64N(limit/4+1)
	}
	return 1 + rnd.Int64N(limit)
}

// placeOrders places the orders through the order service, one every few
// milliseconds, injects the poison record half way, and, with --chaos,
// restarts the payment service a third of the way.
func (d *demo) placeOrders(ctx context.Context, wg *sync.WaitGroup) error {
	rnd := rand.New(rand.NewPCG(d.opts.seed, 1))
	n := d.opts.orders
	for i := range n {
		if i == n/2 {
			if err := d.injectPoison(ctx); err != nil {
				return err
			}
		}
		if d.opts.chaos && i == n/3 {
			if err := d.payments.restart(ctx, wg); err != nil {
				return fmt.Errorf("restarting the payment service: %w", err)
			}
			d.chaosNote = fmt.Sprintf("payment service stopped after order %d of %d was placed and started again in group %s", i, n, paymentsvc.Group)
		}
		amount := d.amount(rnd, i)
		o, err := d.orders.Place(ctx, ordersvc.PlaceRequest{
			Customer: fmt.Sprintf("customer%d@example.com", i+1), AmountCents: amount, Currency: ordersvc.DefaultCurrency,
		})
		if err != nil {
			return fmt.Errorf("placing order %d: %w", i+1, err)
		}
		d.placedMu.Lock()
		d.placed = append(d.placed, placedOrder{id: o.ID, amountCents: amount})
		d.placedMu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-d.svcErr:
			return err
		case <-time.After(5 * time.Millisecond): // a steady stream, not one burst
		}
	}
	if n < 2 {
		return d.injectPoison(ctx)
	}
	return nil
}

// injectPoison writes a record to topic orders that claims to be an
// OrderPlaced but is not Avro: every service that handles OrderPlaced
// dead-letters it, and the others go on.
func (d *demo) injectPoison(ctx context.Context) error {
	opts, err := d.conn.ClientOptions()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	d.poisonKey = "poison-" + d.runID
	rec := &kgo.Record{
		Topic: events.TopicOrders,
		Key:   []byte(d.poisonKey),
		Value: []byte(`{"order_id": "not Avro at all"}`),
		Headers: []kgo.RecordHeader{
			{Key: choreo.HeaderSpecVersion, Value: []byte(choreo.SpecVersion)},
			{Key: choreo.HeaderID, Value: []byte(choreo.NewID())},
			{Key: choreo.HeaderType, Value: []byte(events.OrderPlaced{}.AvroSchema().FullName())},
			{Key: choreo.HeaderSource, Value: []byte("choreo-demo")},
			{Key: choreo.HeaderTime, Value: []byte(time.Now().UTC().Format(time.RFC3339Nano))},
			{Key: choreo.HeaderContentType, Value: []byte(choreo.ContentTypeAvro)},
		},
	}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("injecting the poison record: %w", err)
	}
	return nil
}

// snapshot returns the placed orders so far.
func (d *demo) snapshot() []placedOrder {
	d.placedMu.Lock()
	defer d.placedMu.Unlock()
	return append([]placedOrder(nil), d.placed...)
}

// counts tells how the placed orders stand.
func (d *demo) counts() (placed, completed, cancelled int) {
	for _, p := range d.snapshot() {
		placed++
		o, _ := d.orders.Order(p.id)
		switch o.Status {
		case ordersvc.StatusCompleted:
			completed++
		case ordersvc.StatusCancelled:
			cancelled++
		}
	}
	return placed, completed, cancelled
}

// progress is the progress line's text.
func (d *demo) progress() string {
	placed, completed, cancelled := d.counts()
	var retries, dead int64
	for _, s := range d.stats() {
		retries += s.Retried + s.Forwarded
		dead += s.DeadLettered
	}
	return fmt.Sprintf("orders placed %d/%d, completed %d, cancelled %d; retries %d; dead letters %d",
		placed, d.opts.orders, completed, cancelled, retries, dead)
}

// waitDone waits until every order has ended and the poison record is
// dead-lettered by the services that handle OrderPlaced.
func (d *demo) waitDone(ctx context.Context, deadline time.Time) error {
	for {
		placed, completed, cancelled := d.counts()
		st := d.stats()
		if completed+cancelled == placed && st[paymentsvc.Group].DeadLettered > 0 && st[notificationsvc.Group].DeadLettered > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var stuck []string
			for _, p := range d.snapshot() {
				if o, _ := d.orders.Order(p.id); o.Status != ordersvc.StatusCompleted && o.Status != ordersvc.StatusCancelled {
					stuck = append(stuck, fmt.Sprintf("%s (%s)", p.id, o.Status))
				}
			}
			msg := fmt.Sprintf("after %v, %d of %d orders have not ended", d.opts.timeout, placed-completed-cancelled, placed)
			if len(stuck) > 0 {
				msg += ": " + strings.Join(stuck[:min(len(stuck), 5)], ", ")
			} else {
				msg += "; the poison record was not dead-lettered by both services that handle OrderPlaced"
			}
			return errors.New(msg)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-d.svcErr:
			return err
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// settle waits until the services are idle (nothing in flight, counters
// still), so that a late duplicate would be seen by the checks.
func (d *demo) settle(ctx context.Context) {
	deadline := time.Now().Add(5 * time.Second)
	var last string
	stillSince := time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var b strings.Builder
		busy := false
		stats := d.stats()
		for _, g := range demoGroups() {
			s := stats[g]
			fmt.Fprintf(&b, "%s:%d/%d/%d ", g, s.Handled, s.Duplicates, s.Skipped)
			busy = busy || s.InFlight > 0
		}
		if now := b.String(); busy || now != last {
			last, stillSince = now, time.Now()
		} else if time.Since(stillSince) >= 300*time.Millisecond {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readDeadLetters reads the dead letters written since from.
func (d *demo) readDeadLetters(ctx context.Context, from kadm.ListedOffsets) ([]demoDeadLetter, error) {
	end, err := d.dlqOffsets(ctx)
	if err != nil {
		return nil, err
	}
	start := map[string]map[int32]kgo.Offset{}
	want := 0
	end.Each(func(o kadm.ListedOffset) {
		s := int64(0)
		if f, ok := from.Lookup(o.Topic, o.Partition); ok {
			s = f.Offset
		}
		if o.Offset > s {
			if start[o.Topic] == nil {
				start[o.Topic] = map[int32]kgo.Offset{}
			}
			start[o.Topic][o.Partition] = kgo.NewOffset().At(s)
			want += int(o.Offset - s)
		}
	})
	if want == 0 {
		return nil, nil
	}
	opts, err := d.conn.ClientOptions()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts, kgo.ConsumePartitions(start))...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	codec := schema.NewCodec(d.reg)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out []demoDeadLetter
	for seen := 0; seen < want; {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading dead letters: %d of %d read: %w", seen, want, err)
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) { ferr = errors.Join(ferr, fmt.Errorf("%s/%d: %w", t, p, err)) })
		if ferr != nil {
			return nil, fmt.Errorf("reading dead letters: %w", ferr)
		}
		fetches.EachRecord(func(rec *kgo.Record) {
			if lo, ok := end.Lookup(rec.Topic, rec.Partition); ok && rec.Offset >= lo.Offset {
				return
			}
			seen++
			dl, err := dlq.Decode(ctx, codec, rec)
			if err != nil {
				out = append(out, demoDeadLetter{topic: rec.Topic, partition: rec.Partition, offset: rec.Offset, decodeErr: err.Error()})
				return
			}
			out = append(out, demoDeadLetter{topic: rec.Topic, partition: rec.Partition, offset: rec.Offset, dl: dl})
		})
	}
	return out, nil
}

// ledger returns the payment service's rows for the placed orders (order
// id → status), or nil without a database.
func (d *demo) ledger(ctx context.Context) (map[string]string, error) {
	if d.db == nil {
		return nil, nil
	}
	var ids []string
	for _, p := range d.snapshot() {
		ids = append(ids, p.id)
	}
	rows, err := d.db.Query(ctx, `SELECT order_id, status FROM payments WHERE order_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("reading the payments table: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, status string
		if err := rows.Scan(&id, &status); err != nil {
			return nil, fmt.Errorf("reading the payments table: %w", err)
		}
		if _, dup := out[id]; dup {
			status = "duplicate row"
		}
		out[id] = status
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the payments table: %w", err)
	}
	return out, nil
}

// facts gathers what the services and the gateway say about each order.
func (d *demo) facts(ledger map[string]string) demoFacts {
	f := demoFacts{limitCents: d.opts.limitCents, ledger: ledger}
	for _, p := range d.snapshot() {
		o, ok := d.orders.Order(p.id)
		g, _ := d.gateway.Order(p.id)
		f.orders = append(f.orders, demoOrder{id: p.id, amountCents: p.amountCents, known: ok, view: o, gateway: g})
	}
	return f
}

// writeLookAt says where to look further: the dead letters with choreo
// dlq, and the services' logs.
func (d *demo) writeLookAt(out io.Writer, dls []demoDeadLetter, logPath string) {
	groups := map[string]bool{}
	for _, dl := range dls {
		if dl.dl != nil {
			groups[dl.dl.Group] = true
		}
	}
	group := paymentsvc.Group
	if !groups[group] {
		for g := range groups {
			group = g
		}
	}
	fmt.Fprintln(out)
	if d.embedded {
		fmt.Fprintln(out, "The embedded broker stopped with the demo, and its dead letters with it. To look at them with")
		fmt.Fprintln(out, "choreo's tools, run the demo against a stack that outlives it:")
		fmt.Fprintln(out, "  go run ./cmd/choreo dev                 # in another terminal; it prints the export lines")
		fmt.Fprintln(out, "  go run ./cmd/choreo demo --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081")
		fmt.Fprintf(out, "  go run ./cmd/choreo dlq list %s --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081\n", group)
	} else {
		fmt.Fprintln(out, "Look at the dead letters:")
		fmt.Fprintf(out, "  choreo dlq list %s --brokers %s --registry %s\n", group, strings.Join(d.conn.Brokers, ","), d.regURL)
	}
	fmt.Fprintf(out, "The services' logs (JSON, with correlation ids): %s\n", logPath)
}

// countingMailer counts the e-mails the notification service sends.
type countingMailer struct {
	inner notificationsvc.Mailer
	mu    sync.Mutex
	n     int
}

// Send sends through the inner mailer and counts.
func (m *countingMailer) Send(ctx context.Context, e notificationsvc.Email) error {
	if err := m.inner.Send(ctx, e); err != nil {
		return err
	}
	m.mu.Lock()
	m.n++
	m.mu.Unlock()
	return nil
}

func (m *countingMailer) sent() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}
