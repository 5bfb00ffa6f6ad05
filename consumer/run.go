package consumer

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/trace"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/connection"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/tracing"
)

type topicPartition struct {
	topic string
	id    int32
}

// laneKey identifies the records that must run one after another.
type laneKey struct {
	tp topicPartition
	// PerKey: a 64-bit hash of the record key (no string per record);
	// keys that collide share a lane, which only orders them more.
	// Unordered: a sequence number, every record its own lane.
	id uint64
}

// lane is a queue of deliveries handled in order by one worker at a time.
// Emptied lanes are kept for reuse (runtime.freeLanes).
type lane struct {
	key   laneKey
	queue []*delivery // queue[head:] waits
	head  int
}

// delivery is one record on its way through the consumer.
type delivery struct {
	rec     *kgo.Record
	part    *partition
	seq     uint64
	attempt int // handler attempts in this delivery
	md      choreo.Metadata

	ctx      context.Context // the process span's context, with metadata once read
	handling choreo.Handling // carries position, metadata and handler scope in ctx
	firstCtx deadlineCtx     // the first handler attempt's context
	span     trace.Span
	metrics  *tracing.ConsumerMetrics
	outcome  tracing.Outcome
	err      error // the failure that decided the outcome

	route   *route                      // its handler, once prepared
	first   time.Time                   // first failure
	backoff *backoff.ExponentialBackOff // in-process retry delays, from the first retry on

	settle func(error) // reports the attempt under way to the route's breaker (breaker.go)
	wake   uint64      // the breaker's wake count when it last answered for d
	probe  bool        // the attempt under way is the half-open breaker's probe
	slot   uint64      // its first attempt's place in the breaker's window, 0 when none

	tier          int           // retry tier the record came from; 0 for a source topic
	priorAttempts int           // attempts before this delivery (from choreo-attempt)
	origin        *dlq.Original // the original record, for one from a retry topic
}

// runtime is the state of one Run.
type runtime struct {
	metrics   *tracing.Metrics
	c         *Consumer
	cl        *kgo.Client
	dlqWriter *dlq.Writer

	timersMu sync.Mutex
	resumes  map[topicPartition]*time.Timer // pending resume of each paused retry partition
	paused   map[topicPartition]pauseReason // why each paused partition is paused

	// commitMu serializes commits: reading the done offsets, committing
	// them and recording them happen as one step, so a commit that read
	// its offsets earlier can never land after a later one (which would
	// move the group's offset back).
	commitMu sync.Mutex

	assignedMu sync.Mutex
	assigned   map[topicPartition]struct{} // partitions owned now

	parkedMu    sync.Mutex
	parkedParts map[*partition]struct{} // partitions with parked records
	wake        context.CancelFunc      // ends the poll under way, if set
	parkedN     atomic.Int64            // records parked, over all partitions

	workers sync.WaitGroup

	partsMu sync.Mutex
	parts   map[topicPartition]*partition

	lanesMu   sync.Mutex
	lanes     map[laneKey]*lane
	ready     chan *lane
	quit      chan struct{}
	laneSeq   uint64
	laneSeed  maphash.Seed
	freeLanes []*lane // emptied lanes, under lanesMu

	space chan struct{} // signalled when records leave flight

	handlerBase   context.Context // parent of handler contexts; outlives Run's ctx
	cancelHandler context.CancelFunc

	fatal fatal // the error a worker ends Run with (FailOnStuckWrite; deadletter.go)

	circuitMu    sync.Mutex
	breakers     []*breaker     // one per route with its breaker on (breaker.go)
	openBreakers map[string]int // topic → breakers of its routes that paused it
}

// Run joins the group and handles records until ctx ends. Then it stops
// fetching, waits (up to ShutdownTimeout) for running handlers, commits what
// is done and leaves the group. It returns nil after a clean shutdown, and
// an error when it cannot start, or, with FailOnStuckWrite, when a
// dead-letter write or forward is stuck (see StuckAfter).
func (c *Consumer) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.ran {
		c.mu.Unlock()
		return errors.New("consumer: Run called twice")
	}
	c.ran = true
	sources := append([]string(nil), c.topics...)
	c.mu.Unlock()
	if len(sources) == 0 {
		return errors.New("consumer: no handlers registered")
	}
	// The redrive topic is read always, as the retry topics are: it is how
	// dead letters come back to this service (dlq.DeadLetter.Replay).
	topics := append(append(append([]string(nil), sources...), c.retryTopics...), c.redriveTopic)

	rt := &runtime{
		c:           c,
		parts:       map[topicPartition]*partition{},
		lanes:       map[laneKey]*lane{},
		laneSeed:    maphash.MakeSeed(),
		resumes:     map[topicPartition]*time.Timer{},
		paused:      map[topicPartition]pauseReason{},
		parkedParts: map[*partition]struct{}{},
		assigned:    map[topicPartition]struct{}{},
		ready:       make(chan *lane, c.cfg.maxInFlight),
		quit:        make(chan struct{}),
		space:       make(chan struct{}, 1),
	}
	rt.handlerBase, rt.cancelHandler = context.WithCancel(context.WithoutCancel(ctx))
	c.rt.Store(rt)
	defer rt.cancelHandler()
	rt.metrics = c.cfg.metrics
	if rt.metrics == nil {
		m, err := tracing.NewMetrics(nil)
		if err != nil {
			return fmt.Errorf("consumer: %w", err)
		}
		rt.metrics = m
	}
	lagReg, err := rt.metrics.RegisterLag(c.group, rt.lag)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	defer func() { _ = lagReg.Unregister() }()

	opts, err := c.conn.ClientOptions()
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	// Credentials or certificates the brokers refuse make one clear
	// error now, not a client retrying for ever (access.go).
	checkCtx, cancelCheck := context.WithTimeout(ctx, 30*time.Second) // brokers still starting get as long as before
	err = connection.Check(checkCtx, c.conn)
	cancelCheck()
	if err != nil {
		if ctx.Err() != nil {
			return nil // asked to stop while starting
		}
		return fmt.Errorf("consumer: %w", err)
	}
	// Provision the service's own topics before joining the group, so a
	// member is ready only when it can dead-letter.
	own := append(append([]string{c.cfg.deadLetterTopic}, c.retryTopics...), c.redriveTopic)
	plan, err := ensureTopics(ctx, opts, c, sources, own)
	if err != nil {
		if ctx.Err() != nil {
			return nil // asked to stop while starting
		}
		return err
	}
	// With Production, fail now, before joining, if dead letters cannot
	// be written for want of the envelope schema.
	if err := c.checkDeadLetterSchema(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // asked to stop while starting
		}
		return err
	}
	// Retry topics of an earlier configuration may still hold records
	// whose source offsets were committed: keep reading them as retry
	// records (c.retryTopics, where forwards go, stays as configured).
	// retryTier is read without a lock once the client runs: fill it now.
	if drain := plan.drainTopics(); len(drain) > 0 {
		for _, t := range drain {
			c.retryTier[t] = plan.drain[t]
		}
		topics = append(topics, drain...)
		c.log.Info("draining retry topics of an earlier configuration: this one no longer writes to them; delete them once the group has no lag on them",
			"topics", drain)
	}
	// Permissions the service lacks make one error naming them, before
	// joining (access.go).
	if err := checkAccess(ctx, opts, c, topics); err != nil {
		if ctx.Err() != nil {
			return nil // asked to stop while starting
		}
		return err
	}
	reset := kgo.NewOffset().AtStart()
	if c.cfg.startAtLatest {
		reset = kgo.NewOffset().AtEnd()
	}
	opts = append(opts,
		kgo.ConsumerGroup(c.group),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(reset),
		kgo.DisableAutoCommit(),
		// Records of aborted transactions never reach handlers, and
		// records of open ones wait until their transaction commits.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.BlockRebalanceOnPoll(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.OnPartitionsAssigned(rt.onAssigned),
		kgo.OnPartitionsRevoked(rt.onRevoked),
		kgo.OnPartitionsLost(rt.onLost),
		// What the client fetches ahead is memory too: bound it by the
		// in-flight byte cap rather than franz-go's default of 50 MiB per
		// broker.
		kgo.FetchMaxBytes(fetchMaxBytes(c.cfg.maxInFlightBytes)),
		// A fetch waits at most half a second for data (the Java
		// client's fetch.max.wait.ms), not franz-go's 5s: a partition
		// resumed (a retry record coming due, a drained backlog) joins
		// the next fetch, which would otherwise wait out the one in
		// flight, so a 10s retry could take 15s.
		kgo.FetchMaxWait(500*time.Millisecond),
		// Dead letters and retry forwards carry the original record whole,
		// so the client must accept batches as large as the topics the
		// consumer provisions for them.
		kgo.ProducerBatchMaxBytes(int32(c.cfg.ownTopicMaxBytes())),
	)
	opts = append(opts, c.cfg.kgoOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("consumer: new client: %w", err)
	}
	rt.cl = cl
	stopWatch := rt.watchSources(ctx, plan.missingSources)
	defer stopWatch()
	rt.dlqWriter = dlq.NewWriter(cl, c.reg, c.dlqWriterOptions()...)
	rt.startBreakers()
	defer rt.stopBreakers()
	// A worker ends Run with an error (FailOnStuckWrite) by cancelling the
	// poll loop's context through rt.fatal; Run then shuts down as when
	// ctx ends and returns that error.
	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	rt.fatal.mu.Lock()
	rt.fatal.cancel = stopPolling
	rt.fatal.mu.Unlock()

	for range c.cfg.concurrency {
		rt.startWorker()
	}
	commitDone := make(chan struct{})
	commitCtx, stopCommits := context.WithCancel(context.Background())
	go func() {
		defer close(commitDone)
		rt.commitLoop(commitCtx)
	}()

	rt.pollLoop(pollCtx)

	// Shutdown: revoke everything ourselves (wait, commit), then leave.
	// The wait is bounded by ShutdownTimeout even for handlers that ignore
	// their context: release leaves those running (not committed past).
	shutdownBy := time.Now().Add(c.cfg.shutdownTimeout)
	err = rt.release(rt.allPartitions(), c.cfg.shutdownTimeout, true)
	stopCommits()
	<-commitDone
	close(rt.quit)
	rt.cancelHandler()
	rt.timersMu.Lock()
	for _, t := range rt.resumes {
		t.Stop()
	}
	rt.timersMu.Unlock()
	rt.waitWorkers(time.Until(shutdownBy))
	cl.Close()
	c.stats.joined.Store(false)
	return errors.Join(rt.fatal.error(), err)
}

// fetchMaxBytes is the most one fetch response may hold: a 64th of the
// in-flight byte cap, between 1 and 16 MiB. Compressed batches grow
// several times when decompressed, the client buffers a response per
// broker, and a record in flight keeps its whole batch alive; with the
// default cap (64 MiB) this is 1 MiB, which keeps a consumer of a large
// backlog well under 200 MB without costing throughput (docs/PERFORMANCE.md).
func fetchMaxBytes(inFlight int64) int32 {
	return int32(min(max(inFlight/64, 1<<20), 16<<20))
}

// pollLoop fetches and dispatches records until ctx ends or the client
// closes, staying under the in-flight caps.
func (rt *runtime) pollLoop(ctx context.Context) {
	c := rt.c
	defer c.stats.loop.Store(loopEnded)
	max := int64(c.cfg.maxInFlight)
	evictTimer := time.NewTimer(time.Hour)
	evictTimer.Stop()
	for {
		c.stats.loop.Store(loopWaiting)
		// Parked records go first: taking them on moves them from
		// parked to in flight, within the same budget.
		rt.feedParked()
		for c.stats.inFlight.Load()+rt.parkedN.Load() >= max || c.stats.inFlightBytes.Load() >= c.cfg.maxInFlightBytes {
			var check <-chan time.Time
			if rt.parkedN.Load() > 0 { // a stuck head may hold the budget
				evictTimer.Reset(stuckAfter / 2)
				check = evictTimer.C
			}
			select {
			case <-rt.space:
			case <-check:
				rt.evictStuck()
			case <-ctx.Done():
				return
			}
			evictTimer.Stop()
			rt.feedParked()
		}
		room := int(max - c.stats.inFlight.Load() - rt.parkedN.Load())
		// A poll that waits is woken when a partition with parked records
		// drains, so they need not wait for other partitions' records.
		pollCtx, wake := ctx, context.CancelFunc(nil)
		if rt.parkedN.Load() > 0 {
			pollCtx, wake = context.WithCancel(ctx)
			rt.setWake(wake)
		}
		fs := rt.cl.PollRecords(pollCtx, room)
		if wake != nil {
			rt.setWake(nil)
			wake()
		}
		c.stats.lastPoll.Store(time.Now().UnixNano())
		c.stats.loop.Store(loopBusy)
		if fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			if accessError(err) { // a permission revoked: retrying cannot help (access.go)
				rt.fatal.fail(fmt.Errorf("consumer: %w", c.conn.Explain(err)))
				return
			}
			c.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
		})
		fs.EachPartition(rt.dispatchPartition)
		rt.cl.AllowRebalance()
		if ctx.Err() != nil {
			return
		}
	}
}

// dispatchPartition dispatches the records of one fetched partition. On a
// retry topic it stops at the first record that is not due yet: it pauses
// the partition, rewinds it to that record and resumes it when the record
// is due, so nothing waits in memory and no other partition waits.
func (rt *runtime) dispatchPartition(p kgo.FetchTopicPartition) {
	tier, isRetry := rt.c.retryTier[p.Topic]
	now := time.Now()
	if len(p.Records) > 0 {
		rt.partitionOf(p.Records[0]).highWatermark.Store(p.HighWatermark)
	}
	if len(p.Records) == 0 {
		return
	}
	limit := int64(rt.c.cfg.maxUncommitted)
	part := rt.partitionOf(p.Records[0])
	if !isRetry && part.hasParked() {
		rt.parkRest(part, p.Records) // behind the records parked before
		return
	}
	for i, r := range p.Records {
		if isRetry {
			if nb, ok := notBefore(r); ok && nb.After(now) {
				rt.holdUntil(r, nb)
				return
			}
		}
		if part.tracked.Load() >= limit {
			if isRetry {
				rt.holdBacklog(r, part, int(limit))
			} else {
				rt.parkRest(part, p.Records[i:])
			}
			return
		}
		rt.dispatch(r, part, tier)
	}
}

// parkRest parks rs, the rest of a fetch of a source partition whose
// backlog is at MaxUncommitted (or that has records parked already), to
// be taken on first as the backlog drains. Parked records count against
// the in-flight budget, so the poll loop takes no more than it would
// otherwise; and a backlog that fills and drains in the normal run of
// things (a fetch of one partition fills the in-flight cap) costs
// nothing, since nothing is fetched again. It runs on the poll goroutine.
func (rt *runtime) parkRest(part *partition, rs []*kgo.Record) {
	if !part.park(rs) {
		rt.parkedN.Add(int64(len(rs)))
	}
	part.fullSince.CompareAndSwap(0, time.Now().UnixNano())
	rt.parkedMu.Lock()
	rt.parkedParts[part] = struct{}{}
	rt.parkedMu.Unlock()
	part.whenDrained(rt.c.cfg.maxUncommitted*3/4, rt.wakePoll)
}

// parkedPartitions returns the partitions with parked records.
func (rt *runtime) parkedPartitions() []*partition {
	rt.parkedMu.Lock()
	defer rt.parkedMu.Unlock()
	parts := make([]*partition, 0, len(rt.parkedParts))
	for p := range rt.parkedParts {
		parts = append(parts, p)
	}
	return parts
}

// unparkAll takes p's parked records out (and out of the budget, unless
// they were held) and reports whether they were held.
func (rt *runtime) unparkAll(p *partition) ([]*kgo.Record, bool) {
	rs, held := p.unpark()
	if !held {
		rt.parkedN.Add(-int64(len(rs)))
	}
	rt.parkedMu.Lock()
	delete(rt.parkedParts, p)
	rt.parkedMu.Unlock()
	return rs, held
}

// feedParked takes on the parked records of partitions whose backlog has
// room again, as far as the in-flight cap allows, and resumes the
// fetching of held partitions it empties. It runs on the poll goroutine.
func (rt *runtime) feedParked() {
	rt.parkedMu.Lock()
	none := len(rt.parkedParts) == 0
	rt.parkedMu.Unlock()
	if none {
		return
	}
	limit := int64(rt.c.cfg.maxUncommitted)
	room := int64(rt.c.cfg.maxInFlight) - rt.c.stats.inFlight.Load()
	for _, p := range rt.parkedPartitions() {
		if p.isStopping() { // given up: its parked records go with it
			rt.unparkAll(p)
			continue
		}
		if room <= 0 || p.tracked.Load() >= limit {
			continue
		}
		rs, held := rt.unparkAll(p)
		i := 0
		for ; i < len(rs) && room > 0 && p.tracked.Load() < limit; i++ {
			rt.dispatch(rs[i], p, 0)
			room--
		}
		switch {
		case i < len(rs):
			if held {
				p.hold() // stays out of the budget
			}
			rt.parkRest(p, rs[i:])
		case held:
			p.fullSince.Store(0)
			rt.resume(topicPartition{p.topic, p.id}, pauseBacklog)
		default:
			p.fullSince.Store(0)
		}
	}
}

// stuckAfter is how long a partition's backlog stays full, with half of it
// done behind a record that is not, before its head counts as stuck.
const stuckAfter = 200 * time.Millisecond

// evictStuck runs when parked records take half the in-flight budget. A
// partition whose backlog has been full for stuckAfter, with half of it
// done behind a record that is not, has a stuck head (a backlog full of
// records in flight is the normal state of a busy partition): its
// fetching is paused and its parked records are held out of the budget,
// which goes to the other partitions. They are taken on, and the
// partition resumed, once its backlog drains.
func (rt *runtime) evictStuck() {
	max := int64(rt.c.cfg.maxInFlight)
	if rt.parkedN.Load() < max/2 {
		return
	}
	limit := int64(rt.c.cfg.maxUncommitted)
	now := time.Now().UnixNano()
	for _, p := range rt.parkedPartitions() {
		since := p.fullSince.Load()
		if since == 0 || time.Duration(now-since) < stuckAfter || p.doneBehind.Load() < limit/2 {
			continue
		}
		if n, ok := p.hold(); ok {
			rt.parkedN.Add(-int64(n))
			rt.pauseLive(p, pauseBacklog)
		}
	}
}

// pauseLive pauses fetching part for why, unless part was given up (a
// revoke's take resumes what it takes, so a pause after it would stay).
func (rt *runtime) pauseLive(part *partition, why pauseReason) {
	tp := topicPartition{part.topic, part.id}
	rt.partsMu.Lock()
	defer rt.partsMu.Unlock()
	if rt.parts[tp] != part {
		return
	}
	rt.timersMu.Lock()
	rt.paused[tp] |= why
	rt.timersMu.Unlock()
	rt.cl.PauseFetchPartitions(map[string][]int32{tp.topic: {tp.id}})
}

// setWake sets the function that wakes the poll loop from a poll.
func (rt *runtime) setWake(fn context.CancelFunc) {
	rt.parkedMu.Lock()
	rt.wake = fn
	rt.parkedMu.Unlock()
}

// wakePoll wakes the poll loop, if it is polling, to take parked records on.
func (rt *runtime) wakePoll() {
	rt.parkedMu.Lock()
	fn := rt.wake
	rt.parkedMu.Unlock()
	if fn != nil {
		fn()
	}
}

// pauseReason is a set of reasons a partition's fetching is paused; it is
// resumed when none is left.
type pauseReason uint8

const (
	pauseNotDue  pauseReason = 1 << iota // retry record not due yet (holdUntil)
	pauseBacklog                         // uncommitted backlog at MaxUncommitted (holdBacklog)
)

// pause pauses fetching r's partition for why and rewinds it to offset,
// so that nothing from there on is dispatched now; it runs on the poll
// goroutine before AllowRebalance, as SetOffsets requires.
func (rt *runtime) pause(r *kgo.Record, offset int64, why pauseReason) {
	tp := topicPartition{r.Topic, r.Partition}
	rt.timersMu.Lock()
	rt.paused[tp] |= why
	rt.timersMu.Unlock()
	rt.cl.PauseFetchPartitions(map[string][]int32{r.Topic: {r.Partition}})
	rt.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{r.Topic: {r.Partition: {Epoch: r.LeaderEpoch, Offset: offset}}})
}

// resume drops why from tp's pause reasons and resumes fetching it when
// none is left.
func (rt *runtime) resume(tp topicPartition, why pauseReason) {
	rt.timersMu.Lock()
	if rt.paused[tp]&why == 0 {
		rt.timersMu.Unlock()
		return // not paused for why
	}
	left := rt.paused[tp] &^ why
	if left == 0 {
		delete(rt.paused, tp)
	} else {
		rt.paused[tp] = left
	}
	rt.timersMu.Unlock()
	if left == 0 {
		rt.cl.ResumeFetchPartitions(map[string][]int32{tp.topic: {tp.id}})
	}
}

// holdBacklog pauses r's partition, a retry topic's, at r since its
// backlog of tracked records is at limit, and resumes it once the backlog
// has fallen to half: however long the record at the head is stuck, a
// restart redelivers fewer than limit records. (A source partition parks
// the rest of its fetch instead: parkRest, evictStuck.)
func (rt *runtime) holdBacklog(r *kgo.Record, part *partition, limit int) {
	rt.pause(r, r.Offset, pauseBacklog)
	tp := topicPartition{r.Topic, r.Partition}
	rt.c.log.Debug("partition paused: uncommitted backlog at its cap", "topic", r.Topic, "partition", r.Partition,
		"offset", r.Offset, "max_uncommitted", limit)
	part.whenDrained(limit/2, func() { rt.resume(tp, pauseBacklog) })
}

// notBefore reads the choreo-not-before header (its last value, as every
// header is read).
func notBefore(r *kgo.Record) (time.Time, bool) {
	v, ok := lastHeader(r.Headers, choreo.HeaderNotBefore)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(v))
	return t, err == nil
}

// lastHeader returns the value of the last header named key: the one rule
// for a repeated header everywhere in the consumer.
func lastHeader(hs []kgo.RecordHeader, key string) ([]byte, bool) {
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].Key == key {
			return hs[i].Value, true
		}
	}
	return nil, false
}

// holdUntil pauses r's partition at r until t. It runs on the poll
// goroutine before AllowRebalance, as SetOffsets requires.
func (rt *runtime) holdUntil(r *kgo.Record, t time.Time) {
	rt.pause(r, r.Offset, pauseNotDue)
	tp := topicPartition{r.Topic, r.Partition}
	rt.timersMu.Lock()
	defer rt.timersMu.Unlock()
	if old, ok := rt.resumes[tp]; ok {
		old.Stop() // the partition was resumed and paused again; one timer each
	}
	var timer *time.Timer
	timer = time.AfterFunc(time.Until(t), func() {
		rt.timersMu.Lock()
		if rt.resumes[tp] == timer {
			delete(rt.resumes, tp)
		}
		rt.timersMu.Unlock()
		rt.resume(tp, pauseNotDue)
	})
	rt.resumes[tp] = timer
}

// partitionOf returns the live tracker of the record's partition, creating
// it on first sight.
func (rt *runtime) partitionOf(r *kgo.Record) *partition {
	tp := topicPartition{r.Topic, r.Partition}
	rt.partsMu.Lock()
	defer rt.partsMu.Unlock()
	p, ok := rt.parts[tp]
	if !ok {
		p = newPartition(rt.handlerBase, r.Topic, r.Partition)
		rt.parts[tp] = p
	}
	return p
}

// dispatch takes a polled record of partition p on and queues it on its
// lane.
func (rt *runtime) dispatch(r *kgo.Record, p *partition, tier int) {
	c := rt.c
	d := &delivery{rec: r, part: p, seq: p.track(r.Offset), tier: tier, metrics: rt.metrics.Consumer(c.group, r.Topic)}
	d.metrics.InFlight(rt.handlerBase, 1)
	n := c.stats.inFlight.Add(1)
	c.stats.inFlightBytes.Add(int64(len(r.Value)))
	for {
		peak := c.stats.peakInFlight.Load()
		if n <= peak || c.stats.peakInFlight.CompareAndSwap(peak, n) {
			break
		}
	}

	k := laneKey{tp: topicPartition{r.Topic, r.Partition}}
	switch c.cfg.ordering {
	case PerKey:
		k.id = maphash.Bytes(rt.laneSeed, r.Key)
	case Unordered:
		rt.laneSeq++
		k.id = rt.laneSeq
	}
	rt.lanesMu.Lock()
	l, ok := rt.lanes[k]
	if !ok {
		if n := len(rt.freeLanes); n > 0 {
			l = rt.freeLanes[n-1]
			rt.freeLanes = rt.freeLanes[:n-1]
			l.key = k
		} else {
			l = &lane{key: k}
		}
		rt.lanes[k] = l
	}
	l.queue = append(l.queue, d)
	if len(l.queue)-l.head == 1 {
		rt.ready <- l // never blocks: at most maxInFlight lanes hold records
	}
	rt.lanesMu.Unlock()
}

// startWorker starts one more worker goroutine.
func (rt *runtime) startWorker() {
	rt.workers.Add(1)
	go func() {
		defer rt.workers.Done()
		rt.work()
	}()
}

// waitWorkers waits up to d for the workers to return. Workers still in a
// handler that ignores its context are left behind (they were counted as
// abandoned): Run's return is bounded by ShutdownTimeout.
func (rt *runtime) waitWorkers(d time.Duration) {
	done := make(chan struct{})
	go func() {
		rt.workers.Wait()
		close(done)
	}()
	t := time.NewTimer(max(d, 100*time.Millisecond))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		rt.c.log.Warn("returning with handlers still running: they ignore their context", "abandoned", rt.c.stats.abandoned.Load())
	}
}

// work runs lanes: the head delivery of a lane, then the lane goes back in
// line if it has more, so a busy key does not starve the others.
func (rt *runtime) work() {
	for {
		var l *lane
		select {
		case l = <-rt.ready:
		case <-rt.quit:
			return
		}
		if retire := rt.runLane(l); retire {
			return
		}
	}
}

// runLane processes the head delivery of l and puts the lane back in line,
// parks it for a retry, or drops it when empty. It reports whether this
// worker must retire: its handler was abandoned and a new worker replaced
// it.
//
// A handler that calls runtime.Goexit (t.Fatal in a test handler, say)
// ends the worker's goroutine with no panic to recover: runLane then
// finishes the delivery as a failed one on a new goroutine, which goes on
// as the worker, so neither the key nor the worker pool is lost.
func (rt *runtime) runLane(l *lane) (retire bool) {
	rt.lanesMu.Lock()
	d := l.queue[l.head]
	rt.lanesMu.Unlock()

	returned := false
	defer func() {
		if !returned { // runtime.Goexit (or a panic outside the handler, which crashes anyway)
			rt.workers.Add(1)
			go func() {
				defer rt.workers.Done()
				if !rt.afterGoexit(l, d) {
					rt.work()
				}
			}()
		}
	}()
	retryIn, retire := rt.process(d)
	returned = true
	if retryIn == waitBreaker { // held by its route's circuit breaker
		d.route.breaker.wait(l, d)
		return retire
	}
	rt.advance(l, retryIn)
	return retire
}

// advance moves lane l on after its head was processed: parked for
// retryIn, or the head dropped and the lane back in line or gone.
func (rt *runtime) advance(l *lane, retryIn time.Duration) {
	if retryIn > 0 {
		// Park the lane (its head stays) and free the worker.
		time.AfterFunc(retryIn, func() { rt.ready <- l })
		return
	}
	rt.lanesMu.Lock()
	l.queue[l.head] = nil
	l.head++
	if l.head < len(l.queue) {
		rt.ready <- l
	} else {
		delete(rt.lanes, l.key)
		l.queue, l.head = l.queue[:0], 0
		if len(rt.freeLanes) < rt.c.cfg.maxInFlight && cap(l.queue) <= 64 {
			rt.freeLanes = append(rt.freeLanes, l)
		}
	}
	rt.lanesMu.Unlock()
}

// afterGoexit finishes delivery d, whose handler called runtime.Goexit,
// as a handler failure of kind panic (dead-lettered, like a panic), and
// moves its lane on. It reports whether the worker must retire.
func (rt *runtime) afterGoexit(l *lane, d *delivery) (retire bool) {
	err := &choreo.Error{Kind: choreo.KindPanic, Err: errors.New("handler called runtime.Goexit (t.Fatal or t.FailNow in a test handler?)")}
	rt.c.log.ErrorContext(d.ctx, "handler exited its goroutine", "topic", d.rec.Topic, "partition", d.rec.Partition, "offset", d.rec.Offset)
	if d.first.IsZero() {
		d.first = time.Now()
	}
	if d.route != nil {
		d.route.breaker.settle(d, errNeutral)
	}
	done := false
	if d.part.ctx.Err() == nil {
		done = rt.deadLetter(d, err, d.first)
	}
	retire = d.part.finish(d.seq, done)
	rt.end(d, done)
	rt.outOfFlight(d)
	rt.advance(l, 0)
	return retire
}

// process handles one delivery unless its partition is being given up, and
// takes it out of flight, unless it is to be retried after the returned
// wait. retire reports a handling that was abandoned (see partition.abandon).
func (rt *runtime) process(d *delivery) (retryIn time.Duration, retire bool) {
	if d.part.start() {
		done, retryIn := rt.handle(d)
		retire = d.part.finish(d.seq, done)
		if retryIn > 0 && !retire {
			return retryIn, false
		}
		rt.end(d, done && retryIn == 0)
	} else {
		if d.route != nil {
			d.route.breaker.dropped(d) // it may have been chosen as a probe
		}
		if d.span != nil {
			rt.end(d, false) // given up between retries
		}
	}
	rt.outOfFlight(d)
	return 0, retire
}

// outOfFlight takes d out of the in-flight counts and wakes the poll loop.
func (rt *runtime) outOfFlight(d *delivery) {
	d.metrics.InFlight(rt.handlerBase, -1)
	c := rt.c
	c.stats.inFlight.Add(-1)
	c.stats.inFlightBytes.Add(-int64(len(d.rec.Value)))
	select {
	case rt.space <- struct{}{}:
	default:
	}
}

func (rt *runtime) allPartitions() map[string][]int32 {
	rt.partsMu.Lock()
	defer rt.partsMu.Unlock()
	m := map[string][]int32{}
	for tp := range rt.parts {
		m[tp.topic] = append(m[tp.topic], tp.id)
	}
	return m
}

// take removes the trackers of the given partitions from the live set, and
// lifts a backlog pause of theirs: paused partitions stay paused in the
// client across assignments, and one assigned again starts afresh.
func (rt *runtime) take(tps map[string][]int32) []*partition {
	var out []*partition
	rt.partsMu.Lock()
	for topic, ids := range tps {
		for _, id := range ids {
			tp := topicPartition{topic, id}
			if p, ok := rt.parts[tp]; ok {
				out = append(out, p)
				delete(rt.parts, tp)
			}
		}
	}
	rt.partsMu.Unlock()
	for _, p := range out {
		rt.resume(topicPartition{p.topic, p.id}, pauseBacklog)
	}
	if len(out) > 0 {
		rt.wakeBreakers() // records of these partitions held by a breaker are dropped, not kept in flight
	}
	return out
}

// own records partitions as owned (add) or no longer owned, and keeps
// Stats().Assigned equal to the number owned.
func (rt *runtime) own(tps map[string][]int32, add bool) {
	rt.assignedMu.Lock()
	defer rt.assignedMu.Unlock()
	for topic, ids := range tps {
		for _, id := range ids {
			if add {
				rt.assigned[topicPartition{topic, id}] = struct{}{}
			} else {
				delete(rt.assigned, topicPartition{topic, id})
			}
		}
	}
	rt.c.stats.assigned.Store(int64(len(rt.assigned)))
}

func (rt *runtime) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	rt.own(assigned, true)
	rt.c.stats.joined.Store(true)
	rt.c.log.Info("partitions assigned", "partitions", assigned)
}

func (rt *runtime) onRevoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	rt.c.log.Info("partitions revoked", "partitions", revoked)
	defer rt.own(revoked, false)
	if err := rt.release(revoked, rt.c.cfg.revokeTimeout, true); err != nil {
		rt.c.log.Warn("commit on revoke failed", "err", err)
	}
}

func (rt *runtime) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	rt.c.log.Warn("partitions lost", "partitions", lost)
	defer rt.own(lost, false)
	for _, p := range rt.take(lost) {
		rt.commitMu.Lock() // a commit under way for it ends first
		p.release()
		rt.commitMu.Unlock()
		p.cancel()
	}
}

// release gives partitions up: no new records start, running handlers get
// most of wait to finish, then their contexts are cancelled and they get
// the rest; what is done is committed when commit is true, and the
// partitions are never committed again. It returns within wait (plus the
// commit) even when a handler ignores its context: such a handler is left
// running and counted (Stats().Abandoned), its worker replaced, and its
// record, not being done, is not committed past.
func (rt *runtime) release(tps map[string][]int32, wait time.Duration, commit bool) error {
	parts := rt.take(tps)
	if len(parts) == 0 {
		return nil
	}
	grace := min(wait/5, 2*time.Second) // for cancelled handlers to return
	if !waitIdle(parts, time.Now().Add(wait-grace)) {
		rt.c.log.Warn("handlers still running at the revoke or shutdown wait; cancelling them", "wait", wait)
		for _, p := range parts {
			p.cancel()
		}
		if !waitIdle(parts, time.Now().Add(grace)) {
			n := 0
			for _, p := range parts {
				n += p.abandon()
			}
			for range n {
				rt.startWorker() // in place of each worker stuck in a handler
			}
			rt.c.stats.abandoned.Add(int64(n))
			rt.c.log.Error("handlers ignore their cancelled context; leaving them running and not committing past their records",
				"abandoned", n, "wait", wait)
		}
	}
	var err error
	rt.commitMu.Lock()
	if commit {
		err = rt.commitLocked(context.Background(), parts, false)
	}
	for _, p := range parts {
		p.release()
	}
	rt.commitMu.Unlock()
	for _, p := range parts {
		p.cancel()
	}
	return err
}

// waitIdle waits until no handler of parts runs, or until the deadline,
// and reports whether they all became idle.
func waitIdle(parts []*partition, deadline time.Time) bool {
	t := time.NewTimer(max(time.Until(deadline), 0))
	defer t.Stop()
	for _, p := range parts {
		select {
		case <-p.stop():
		case <-t.C:
			return false
		}
	}
	return true
}

// lag reports, per live partition, the records between the next offset to
// commit and the high watermark of the last fetch.
func (rt *runtime) lag() []tracing.Lag {
	rt.partsMu.Lock()
	defer rt.partsMu.Unlock()
	out := make([]tracing.Lag, 0, len(rt.parts))
	for _, p := range rt.parts {
		hw := p.highWatermark.Load()
		off, _ := p.toCommit()
		if hw <= 0 || off < 0 {
			continue
		}
		out = append(out, tracing.Lag{Topic: p.topic, Partition: p.id, Lag: max(hw-off, 0)})
	}
	return out
}

// commitLoop commits done offsets every CommitInterval.
func (rt *runtime) commitLoop(ctx context.Context) {
	t := time.NewTicker(rt.c.cfg.commitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rt.partsMu.Lock()
		parts := make([]*partition, 0, len(rt.parts))
		for _, p := range rt.parts {
			parts = append(parts, p)
		}
		rt.partsMu.Unlock()
		if err := rt.commit(ctx, parts); err != nil && ctx.Err() == nil {
			rt.c.log.Warn("periodic commit failed", "err", err)
		}
	}
}

// commit commits the done offsets of parts that moved since their last
// commit, one commit at a time.
func (rt *runtime) commit(ctx context.Context, parts []*partition) error {
	rt.commitMu.Lock()
	defer rt.commitMu.Unlock()
	return rt.commitLocked(ctx, parts, true)
}

// commitLocked is commit with commitMu held.
func (rt *runtime) commitLocked(ctx context.Context, parts []*partition, periodic bool) error {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	type moved struct {
		p   *partition
		off int64
	}
	var ms []moved
	for _, p := range parts {
		off, ok := p.toCommit()
		if !ok {
			continue
		}
		if offsets[p.topic] == nil {
			offsets[p.topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[p.topic][p.id] = kgo.EpochOffset{Epoch: -1, Offset: off}
		ms = append(ms, moved{p, off})
	}
	if len(ms) == 0 {
		return nil
	}
	if hook := rt.c.cfg.commitHook; hook != nil {
		hook(periodic) // tests only: widens the window a racing commit would need
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var commitErr error
	failed := map[topicPartition]bool{}
	rt.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			commitErr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if e := kerr.ErrorForCode(p.ErrorCode); e != nil {
					failed[topicPartition{t.Topic, p.Partition}] = true
					if commitErr == nil {
						commitErr = fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, e)
					}
				}
			}
		}
	})
	for _, m := range ms {
		if !failed[topicPartition{m.p.topic, m.p.id}] && (commitErr == nil || len(failed) > 0) {
			m.p.committedAt(m.off)
		}
	}
	if commitErr != nil {
		return fmt.Errorf("consumer: commit: %w", commitErr)
	}
	rt.c.stats.commits.Add(1)
	return nil
}
