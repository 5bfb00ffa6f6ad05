package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/trace"

	"github.com/choreokit/choreo"
	"github.com/choreokit/choreo/dlq"
	"github.com/choreokit/choreo/tracing"
)

type topicPartition struct {
	topic string
	id    int32
}

// laneKey identifies the records that must run one after another.
type laneKey struct {
	tp  topicPartition
	key string
	seq uint64 // Unordered: every record its own lane
}

// lane is a queue of deliveries handled in order by one worker at a time.
type lane struct {
	key   laneKey
	queue []*delivery
}

// delivery is one record on its way through the consumer.
type delivery struct {
	rec     *kgo.Record
	part    *partition
	seq     uint64
	attempt int // handler attempts in this delivery
	md      choreo.Metadata

	ctx     context.Context // the process span's context, with metadata once read
	span    trace.Span
	metrics *tracing.ConsumerMetrics
	outcome tracing.Outcome
	err     error // the failure that decided the outcome

	route   *route                      // its handler, once prepared
	first   time.Time                   // first failure
	backoff *backoff.ExponentialBackOff // in-process retry delays, from the first retry on

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

	partsMu sync.Mutex
	parts   map[topicPartition]*partition

	lanesMu sync.Mutex
	lanes   map[laneKey]*lane
	ready   chan *lane
	quit    chan struct{}
	laneSeq uint64

	space chan struct{} // signalled when records leave flight

	handlerBase   context.Context // parent of handler contexts; outlives Run's ctx
	cancelHandler context.CancelFunc
}

// Run joins the group and handles records until ctx ends. Then it stops
// fetching, waits (up to ShutdownTimeout) for running handlers, commits what
// is done and leaves the group. It returns nil after a clean shutdown.
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
	topics := append(append([]string(nil), sources...), c.retryTopics...)

	rt := &runtime{
		c:       c,
		parts:   map[topicPartition]*partition{},
		lanes:   map[laneKey]*lane{},
		resumes: map[topicPartition]*time.Timer{},
		ready:   make(chan *lane, c.cfg.maxInFlight),
		quit:    make(chan struct{}),
		space:   make(chan struct{}, 1),
	}
	rt.handlerBase, rt.cancelHandler = context.WithCancel(context.WithoutCancel(ctx))
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
	// Provision the service's own topics before joining the group, so a
	// member is ready only when it can dead-letter.
	own := append([]string{c.cfg.deadLetterTopic}, c.retryTopics...)
	if err := ensureTopics(ctx, opts, c, sources, own); err != nil {
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
		kgo.BlockRebalanceOnPoll(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.OnPartitionsAssigned(rt.onAssigned),
		kgo.OnPartitionsRevoked(rt.onRevoked),
		kgo.OnPartitionsLost(rt.onLost),
		// What the client fetches ahead is memory too: bound it by the
		// in-flight byte cap rather than franz-go's default of 50 MiB per
		// broker.
		kgo.FetchMaxBytes(fetchMaxBytes(c.cfg.maxInFlightBytes)),
		// Dead letters and retry forwards carry the original record whole,
		// so the client must accept batches as large as the topics the
		// consumer provisions for them.
		kgo.ProducerBatchMaxBytes(int32(c.cfg.maxValueBytes+1<<20)),
	)
	opts = append(opts, c.cfg.kgoOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("consumer: new client: %w", err)
	}
	rt.cl = cl
	var dlqOpts []dlq.WriterOption
	if len(c.cfg.redact) > 0 {
		dlqOpts = append(dlqOpts, dlq.Redact(c.cfg.redact...))
	}
	rt.dlqWriter = dlq.NewWriter(cl, c.reg, dlqOpts...)

	var workers sync.WaitGroup
	for range c.cfg.concurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			rt.work()
		}()
	}
	commitDone := make(chan struct{})
	commitCtx, stopCommits := context.WithCancel(context.Background())
	go func() {
		defer close(commitDone)
		rt.commitLoop(commitCtx)
	}()

	rt.pollLoop(ctx)

	// Shutdown: revoke everything ourselves (wait, commit), then leave.
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
	workers.Wait()
	cl.Close()
	c.stats.joined.Store(false)
	return err
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
	for {
		c.stats.loop.Store(loopWaiting)
		for c.stats.inFlight.Load() >= int64(c.cfg.maxInFlight) || c.stats.inFlightBytes.Load() >= c.cfg.maxInFlightBytes {
			select {
			case <-rt.space:
			case <-ctx.Done():
				return
			}
		}
		room := c.cfg.maxInFlight - int(c.stats.inFlight.Load())
		fs := rt.cl.PollRecords(ctx, room)
		c.stats.lastPoll.Store(time.Now().UnixNano())
		c.stats.loop.Store(loopBusy)
		if fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
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
	for _, r := range p.Records {
		if isRetry {
			if nb, ok := notBefore(r); ok && nb.After(now) {
				rt.holdUntil(r, nb)
				return
			}
		}
		rt.dispatch(r, tier)
	}
}

// notBefore reads the choreo-not-before header.
func notBefore(r *kgo.Record) (time.Time, bool) {
	for _, h := range r.Headers {
		if h.Key == choreo.HeaderNotBefore {
			t, err := time.Parse(time.RFC3339Nano, string(h.Value))
			return t, err == nil
		}
	}
	return time.Time{}, false
}

// holdUntil pauses r's partition at r until t. It runs on the poll
// goroutine before AllowRebalance, as SetOffsets requires.
func (rt *runtime) holdUntil(r *kgo.Record, t time.Time) {
	tps := map[string][]int32{r.Topic: {r.Partition}}
	rt.cl.PauseFetchPartitions(tps)
	rt.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{r.Topic: {r.Partition: {Epoch: r.LeaderEpoch, Offset: r.Offset}}})
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
		rt.cl.ResumeFetchPartitions(tps)
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

// dispatch takes a polled record on and queues it on its lane.
func (rt *runtime) dispatch(r *kgo.Record, tier int) {
	c := rt.c
	p := rt.partitionOf(r)
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
		k.key = string(r.Key)
	case Unordered:
		rt.laneSeq++
		k.seq = rt.laneSeq
	}
	rt.lanesMu.Lock()
	l, ok := rt.lanes[k]
	if !ok {
		l = &lane{key: k}
		rt.lanes[k] = l
	}
	l.queue = append(l.queue, d)
	if len(l.queue) == 1 {
		rt.ready <- l // never blocks: at most maxInFlight lanes hold records
	}
	rt.lanesMu.Unlock()
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
		rt.lanesMu.Lock()
		d := l.queue[0]
		rt.lanesMu.Unlock()

		if retryIn := rt.process(d); retryIn > 0 {
			// Park the lane (its head stays) and free the worker.
			time.AfterFunc(retryIn, func() { rt.ready <- l })
			continue
		}

		rt.lanesMu.Lock()
		l.queue[0] = nil
		l.queue = l.queue[1:]
		if len(l.queue) > 0 {
			rt.ready <- l
		} else {
			delete(rt.lanes, l.key)
		}
		rt.lanesMu.Unlock()
	}
}

// process handles one delivery unless its partition is being given up, and
// takes it out of flight, unless it is to be retried after the returned
// wait.
func (rt *runtime) process(d *delivery) (retryIn time.Duration) {
	if d.part.start() {
		done, retryIn := rt.handle(d)
		d.part.finish(d.seq, done)
		if retryIn > 0 {
			return retryIn
		}
		rt.end(d, done)
	} else if d.span != nil {
		rt.end(d, false) // given up between retries
	}
	d.metrics.InFlight(rt.handlerBase, -1)
	c := rt.c
	c.stats.inFlight.Add(-1)
	c.stats.inFlightBytes.Add(-int64(len(d.rec.Value)))
	select {
	case rt.space <- struct{}{}:
	default:
	}
	return 0
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

// take removes the trackers of the given partitions from the live set.
func (rt *runtime) take(tps map[string][]int32) []*partition {
	rt.partsMu.Lock()
	defer rt.partsMu.Unlock()
	var out []*partition
	for topic, ids := range tps {
		for _, id := range ids {
			tp := topicPartition{topic, id}
			if p, ok := rt.parts[tp]; ok {
				out = append(out, p)
				delete(rt.parts, tp)
			}
		}
	}
	return out
}

func (rt *runtime) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	n := 0
	for _, ps := range assigned {
		n += len(ps)
	}
	rt.c.stats.assigned.Add(int64(n))
	rt.c.stats.joined.Store(true)
	rt.c.log.Info("partitions assigned", "partitions", assigned)
}

func (rt *runtime) onRevoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	rt.c.log.Info("partitions revoked", "partitions", revoked)
	if err := rt.release(revoked, rt.c.cfg.revokeTimeout, true); err != nil {
		rt.c.log.Warn("commit on revoke failed", "err", err)
	}
}

func (rt *runtime) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	rt.c.log.Warn("partitions lost", "partitions", lost)
	for _, p := range rt.take(lost) {
		p.stop()
		p.cancel()
	}
	rt.c.stats.assigned.Add(-int64(countPartitions(lost)))
}

func countPartitions(m map[string][]int32) int {
	n := 0
	for _, ps := range m {
		n += len(ps)
	}
	return n
}

// release gives partitions up: no new records start, running handlers get
// up to wait to finish (then their contexts are cancelled), and what is done
// is committed when commit is true.
func (rt *runtime) release(tps map[string][]int32, wait time.Duration, commit bool) error {
	parts := rt.take(tps)
	rt.c.stats.assigned.Add(-int64(len(parts)))
	if len(parts) == 0 {
		return nil
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for _, p := range parts {
		select {
		case <-p.stop():
		case <-deadline.C:
			rt.c.log.Warn("handlers still running after the wait; cancelling them", "topic", p.topic, "partition", p.id, "wait", wait)
			for _, q := range parts {
				q.cancel()
			}
			deadline.Reset(time.Hour)
			<-p.stop()
		}
	}
	var err error
	if commit {
		err = rt.commit(context.Background(), parts)
	}
	for _, p := range parts {
		p.cancel()
	}
	return err
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
// commit.
func (rt *runtime) commit(ctx context.Context, parts []*partition) error {
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
