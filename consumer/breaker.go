package consumer

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/choreokit/choreo/tracing"
)

// Breaker configures the circuit breaker of a route (a topic and an event
// type). The breaker looks at the route's latest first attempts: each
// record of the source topic counts once, at its first handler attempt,
// as a failure if that fails with a retryable error (choreo.KindRetryable,
// a handler timeout, a schema registry that cannot be reached, a database
// that refuses connections) and as a success if it succeeds, or if one of
// its in-process retries does (its trouble was its own). Once
// FailureRatio of the last Window of them failed (with at least
// MinAttempts counted) it opens: the route's records wait, uncommitted and
// not counted as attempts (nothing is forwarded to a retry topic or
// dead-lettered for the outage), and fetching the route's topic is paused.
// After CoolDown it lets Probes attempts through (half-open): if they
// succeed it closes and consumption resumes; if one fails it opens again.
//
// Permanent errors (decode and schema errors, choreo.Permanent, panics)
// and duplicates are not counted, so poison never opens a breaker; nor are
// records from retry topics, which failed before, nor a record's retries:
// a record votes once, so a few records that fail on their own, even a
// backlog's tail of them, cannot outvote the rest.
//
// The waiting records form a line, and the half-open breaker picks its
// probes from it: those with the fewest attempts, longest waiting first.
// A probe is a real attempt. One that fails with attempts left opens the
// breaker again and waits at the back of the line; one that fails its
// last attempt is taken to have failed on its own account: it goes on as
// without a breaker (to a retry topic or the dead-letter topic), and the
// next probe goes at once. So records that fail whatever the dependency
// does (a bad deploy) still drain, while in an outage the probes are
// records with attempts to spare.
//
// A zero field takes its default.
type Breaker struct {
	// Window is how many of the route's latest counted attempts the
	// breaker looks at (default 40).
	Window int
	// FailureRatio opens the breaker once this share of the window failed
	// (default 0.5), counted only once the window holds at least
	// MinAttempts (default 20). With the defaults, 20 records failing in
	// a row open it.
	FailureRatio float64
	MinAttempts  int
	// CoolDown is how long the breaker stays open before it lets a probe
	// through (default 15s).
	CoolDown time.Duration
	// Probes is how many attempts the half-open breaker lets through; all
	// must succeed to close it (default 1).
	Probes int
	// Off turns the breaker off: every failure then spends the record's
	// attempts, as without a breaker.
	Off bool
}

// The default breaker settings: conservative, so that a few bad records
// do not pause a route, while an outage pauses it after 20 records.
const (
	defaultBreakerWindow      = 40
	defaultBreakerRatio       = 0.5
	defaultBreakerMinAttempts = 20
	defaultBreakerCoolDown    = 15 * time.Second
	defaultBreakerProbes      = 1
)

// CircuitBreaker sets the circuit breaker of every route (see Breaker).
// Every route has one by default, with the default settings;
// CircuitBreaker(Breaker{Off: true}) turns them off. RouteCircuitBreaker
// sets one route's breaker apart.
func CircuitBreaker(b Breaker) Option { return func(c *config) { c.breaker = b } }

// RouteCircuitBreaker sets the circuit breaker of the route for events of
// eventType (the ce_type, the Avro full name of the event's schema) on
// topic, in place of the consumer's (CircuitBreaker); its zero fields take
// the defaults. A route whose handler calls a dependency of its own (a
// payment gateway) can so have settings of its own, or none (Off).
func RouteCircuitBreaker(topic, eventType string, b Breaker) Option {
	return func(c *config) {
		if c.routeBreakers == nil {
			c.routeBreakers = map[routeName]Breaker{}
		}
		c.routeBreakers[routeName{topic, eventType}] = b
	}
}

// routeName is a route's topic and event type.
type routeName struct{ topic, eventType string }

// String writes the route as Stats().Circuits keys it: topic/eventType
// (a topic name cannot hold a slash).
func (r routeName) String() string { return r.topic + "/" + r.eventType }

// breakerFor returns the settings of a route's breaker, defaults filled in.
func (c *config) breakerFor(topic, eventType string) Breaker {
	b, ok := c.routeBreakers[routeName{topic, eventType}]
	if !ok {
		b = c.breaker
	}
	return b.withDefaults()
}

// withDefaults fills in b's zero fields.
func (b Breaker) withDefaults() Breaker {
	if b.Window == 0 {
		b.Window = defaultBreakerWindow
	}
	if b.FailureRatio == 0 {
		b.FailureRatio = defaultBreakerRatio
	}
	if b.MinAttempts == 0 {
		b.MinAttempts = min(defaultBreakerMinAttempts, b.Window)
	}
	if b.CoolDown == 0 {
		b.CoolDown = defaultBreakerCoolDown
	}
	if b.Probes == 0 {
		b.Probes = defaultBreakerProbes
	}
	return b
}

// validate checks settings with their defaults filled in.
func (b Breaker) validate() error {
	if b.Off {
		return nil
	}
	switch {
	case b.Window < 0:
		return fmt.Errorf("window %d: want at least 1", b.Window)
	case b.FailureRatio <= 0 || b.FailureRatio > 1:
		return fmt.Errorf("failure ratio %v: want more than 0 and at most 1", b.FailureRatio)
	case b.MinAttempts < 0 || b.MinAttempts > b.Window:
		return fmt.Errorf("min attempts %d: want 1 to the window, %d", b.MinAttempts, b.Window)
	case b.CoolDown < 0:
		return errors.New("negative cool-down")
	case b.Probes < 0:
		return fmt.Errorf("probes %d: want at least 1", b.Probes)
	}
	return nil
}

// validateBreakers checks the consumer's and every route's breaker.
func (c *config) validateBreakers() error {
	if err := c.breaker.withDefaults().validate(); err != nil {
		return fmt.Errorf("circuit breaker: %w", err)
	}
	for r, b := range c.routeBreakers {
		if err := b.withDefaults().validate(); err != nil {
			return fmt.Errorf("circuit breaker of %s: %w", r, err)
		}
	}
	return nil
}

// window holds the outcomes of the route's latest first attempts, in the
// order the attempts started, not the order they ended: at the end of a
// backlog the records still failing are the slow ones, and counting them
// as they end would let a tail of a few bad records fill the window.
type window struct {
	slots    []slot // ring indexed by sequence number modulo its length
	next     uint64 // sequence number of the next attempt
	base     uint64 // attempts started before base are forgotten (reset)
	known    int    // slots with an outcome
	failures int    // of those, failures
}

// slot is one attempt's place in the window.
type slot struct {
	seq   uint64
	state uint8 // slotEmpty, slotPending, slotOK, slotFailed
}

const (
	slotEmpty uint8 = iota
	slotPending
	slotOK
	slotFailed
)

func newWindow(size int) *window { return &window{slots: make([]slot, size)} }

// start takes a place for an attempt that is starting and returns its
// sequence number (plus one, so that zero means none).
func (w *window) start() uint64 {
	seq := w.next
	w.next++
	s := &w.slots[seq%uint64(len(w.slots))]
	w.drop(s)
	*s = slot{seq: seq, state: slotPending}
	return seq + 1
}

// end records the outcome of the attempt that took place ref: failed, or
// not counted at all (neutral). An attempt that has left the window, or
// started before a reset, is ignored.
func (w *window) end(ref uint64, failed, neutral bool) {
	if ref == 0 || ref-1 < w.base {
		return
	}
	seq := ref - 1
	s := &w.slots[seq%uint64(len(w.slots))]
	if s.seq != seq || s.state != slotPending {
		return
	}
	switch {
	case neutral:
		s.state = slotEmpty
	case failed:
		s.state = slotFailed
		w.known++
		w.failures++
	default:
		s.state = slotOK
		w.known++
	}
}

// amend turns the failure of the attempt that took place ref into a
// success, if the window still holds it.
func (w *window) amend(ref uint64) {
	if ref == 0 || ref-1 < w.base {
		return
	}
	seq := ref - 1
	s := &w.slots[seq%uint64(len(w.slots))]
	if s.seq == seq && s.state == slotFailed {
		s.state = slotOK
		w.failures--
	}
}

// drop forgets the outcome in s.
func (w *window) drop(s *slot) {
	switch s.state {
	case slotFailed:
		w.failures--
		w.known--
	case slotOK:
		w.known--
	}
	s.state = slotEmpty
}

// reset forgets every outcome, and the attempts under way.
func (w *window) reset() {
	for i := range w.slots {
		w.drop(&w.slots[i])
	}
	w.base = w.next
}

// trips reports whether the window's failures open the breaker.
func (w *window) trips(cfg Breaker) bool {
	return w.known >= cfg.MinAttempts && float64(w.failures) >= cfg.FailureRatio*float64(w.known)
}

// What an attempt reports to its breaker: nil for a success, errFailure
// for a retryable failure, errNeutral for an outcome that says nothing
// about the route's dependencies (a permanent failure, a duplicate, a
// partition given up).
var (
	errFailure = errors.New("retryable failure")
	errNeutral = errors.New("not counted")
)

// waitBreaker is the wait handle returns for a delivery that waits for its
// route's breaker rather than for a time: runLane hands its lane to the
// breaker, which puts it back in line when its state changes.
const waitBreaker = time.Duration(1<<63 - 1)

// breaker is the circuit breaker of one route in a Run: sony/gobreaker's
// two-step breaker, the lanes waiting for it, and what a state change
// does (log line, metric, span event, pausing the topic).
//
// The waiting lanes form a line. When the breaker turns half-open it
// picks the probes itself, from the front of the line (Probes of them),
// rather than letting released lanes race for the slots: a probe that
// fails goes to the back, so probes rotate over the waiting records.
type breaker struct {
	rt    *runtime
	route routeName
	cfg   Breaker
	cb    *gobreaker.TwoStepCircuitBreaker[struct{}]
	state atomic.Int64 // a tracing.CircuitState, for Stats

	// mu is held for every call into cb, so that changed (which cb calls
	// with its own lock held) knows the delivery that caused the change
	// and may touch the fields below.
	mu      sync.Mutex
	cause   *delivery          // the delivery whose call into cb is under way
	counts  *window            // the latest counted attempts
	wakes   uint64             // times waiting lanes were released
	waiting []waiter           // lanes whose head waits, in the order they came
	chosen  map[*delivery]bool // the half-open breaker's probes, released and not yet let through
	release []*lane            // released lanes to put back in line once mu is unlocked
	paused  bool               // this breaker paused its topic
	timer   *time.Timer
	stopped bool
}

// waiter is a lane waiting for the breaker, and its head delivery.
type waiter struct {
	l *lane
	d *delivery
}

// newBreaker makes the breaker of a route for rt.
func newBreaker(rt *runtime, route routeName, cfg Breaker) *breaker {
	b := &breaker{rt: rt, route: route, cfg: cfg, chosen: map[*delivery]bool{}, counts: newWindow(cfg.Window)}
	// gobreaker keeps the state, the cool-down and the half-open probes;
	// the trip rule reads the window of first attempts, which settle
	// fills (gobreaker calls it with b.mu held, as every call into cb
	// holds it).
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:          route.String(),
		MaxRequests:   uint32(cfg.Probes),
		Timeout:       cfg.CoolDown,
		ReadyToTrip:   func(gobreaker.Counts) bool { return b.counts.trips(b.cfg) },
		OnStateChange: b.changed,
		IsExcluded:    func(err error) bool { return err == errNeutral },
	})
	rt.metrics.Circuit(rt.handlerBase, rt.c.group, route.topic, route.eventType, tracing.CircuitClosed)
	return b
}

// allow asks whether d may make an attempt now. If so, d.settle holds the
// function that reports its result (see settle); if not, d waits (wait).
// While the breaker is half-open with probes chosen, only they may try.
// A nil breaker allows everything.
func (b *breaker) allow(d *delivery) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	var err error
	if len(b.chosen) > 0 && !b.chosen[d] {
		err = gobreaker.ErrTooManyRequests // the chosen probes go first
	} else {
		delete(b.chosen, d)
		var done func(error)
		b.cause = d
		done, err = b.cb.Allow()
		b.cause = nil
		if err == nil {
			if d.origin == nil && d.attempt == 0 {
				d.slot = b.counts.start() // a first attempt: it votes
			}
			d.settle = done
			d.probe = tracing.CircuitState(b.state.Load()) == tracing.CircuitHalfOpen
			if d.probe {
				tracing.RecordCircuit(d.ctx, "half-open", "half-open") // this record is the probe
			}
		}
	}
	d.wake = b.wakes
	rel := b.takeRelease()
	b.mu.Unlock()
	b.rt.putBack(rel)
	return err == nil
}

// settle reports the result of d's attempt (nil, errFailure or errNeutral)
// and whether the breaker is closed after it. The window counts the first
// attempt of a record of the source topic; a probe's failure counts if
// the record had attempts left (see Breaker). A nil breaker is always
// closed.
func (b *breaker) settle(d *delivery, result error) (closed bool) {
	if b == nil {
		return true
	}
	first := d.slot != 0 && d.attempt == 1
	switch {
	case result != errFailure:
	case d.probe:
		if d.attempt >= b.rt.c.cfg.retry.MaxAttempts {
			result = errNeutral // its last attempt: its own failure
		}
	case !first:
		result = errNeutral // a retry, or a record from a retry topic
	}
	b.mu.Lock()
	switch {
	case first:
		b.counts.end(d.slot, result == errFailure, result == errNeutral)
		if result != errFailure {
			d.slot = 0
		}
	case d.slot != 0 && result == nil:
		// A record whose first attempt failed succeeded on a retry: the
		// dependency works, the failure was the record's passing trouble
		// (a lock, a conflict). Its vote becomes a success, so a backlog's
		// tail of such records does not open the breaker.
		b.counts.amend(d.slot)
		d.slot = 0
	}
	if done := d.settle; done != nil {
		d.settle = nil
		b.cause = d
		done(result)
		b.cause = nil
		if result == errNeutral && d.probe && tracing.CircuitState(b.state.Load()) == tracing.CircuitHalfOpen {
			b.chooseLocked(1) // the probe said nothing: the next one in line
		}
	}
	closed = tracing.CircuitState(b.state.Load()) == tracing.CircuitClosed
	d.wake = b.wakes
	rel := b.takeRelease()
	b.mu.Unlock()
	b.rt.putBack(rel)
	return closed
}

// wait parks lane l, whose head d was not let through, at the back of the
// line until the breaker releases it; if the breaker released lanes since
// d asked, l goes back in line at once.
func (b *breaker) wait(l *lane, d *delivery) {
	b.mu.Lock()
	if b.wakes != d.wake || b.stopped {
		b.mu.Unlock()
		b.rt.putBack([]*lane{l})
		return
	}
	b.waiting = append(b.waiting, waiter{l, d})
	b.mu.Unlock()
}

// dropped is told that d, which may have been chosen as a probe, was
// dropped without an attempt (its partition was given up): another probe
// is chosen in its place.
func (b *breaker) dropped(d *delivery) {
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.chosen[d] {
		delete(b.chosen, d)
		b.chooseLocked(1)
	}
	rel := b.takeRelease()
	b.mu.Unlock()
	b.rt.putBack(rel)
}

// wakeAll puts every waiting lane back in line: partitions are being given
// up, and a waiting record of theirs must be dropped now rather than hold
// its place in flight until the breaker closes. The others wait again.
func (b *breaker) wakeAll() {
	b.mu.Lock()
	b.releaseLocked()
	rel := b.takeRelease()
	b.mu.Unlock()
	b.rt.putBack(rel)
}

// stop ends the breaker's timer at the end of Run.
func (b *breaker) stop() {
	b.mu.Lock()
	b.stopped = true
	if b.timer != nil {
		b.timer.Stop()
	}
	b.releaseLocked()
	rel := b.takeRelease()
	b.mu.Unlock()
	b.rt.putBack(rel)
}

// releaseLocked releases every waiting lane, in the order they came, and
// forgets the chosen probes.
func (b *breaker) releaseLocked() {
	b.wakes++
	for _, w := range b.waiting {
		b.release = append(b.release, w.l)
	}
	b.waiting = nil
	clear(b.chosen)
}

// chooseLocked releases up to n lanes from the line as the half-open
// breaker's probes: those whose records have had the fewest attempts,
// the longest waiting first. With none waiting, the next records to come
// may probe: fetching resumes.
func (b *breaker) chooseLocked(n int) {
	if len(b.waiting) == 0 {
		b.resumeLocked()
		return
	}
	b.wakes++
	for ; n > 0 && len(b.waiting) > 0; n-- {
		best := 0
		for i, w := range b.waiting {
			if w.d.attempt < b.waiting[best].d.attempt {
				best = i
			}
		}
		w := b.waiting[best]
		b.waiting = append(b.waiting[:best], b.waiting[best+1:]...)
		b.chosen[w.d] = true
		b.release = append(b.release, w.l)
	}
}

// pauseLocked and resumeLocked pause and resume fetching the route's
// topic, once each.
func (b *breaker) pauseLocked() {
	if !b.paused {
		b.paused = true
		b.rt.pauseTopic(b.route.topic)
	}
}

func (b *breaker) resumeLocked() {
	if b.paused {
		b.paused = false
		b.rt.resumeTopic(b.route.topic)
	}
}

// takeRelease returns the lanes to put back in line; mu must be held.
func (b *breaker) takeRelease() []*lane {
	rel := b.release
	b.release = nil
	return rel
}

// tick runs when the cool-down has passed: reading the state moves the
// breaker to half-open (gobreaker moves it lazily), which chooses the
// probes.
func (b *breaker) tick() {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return
	}
	if b.cb.State() == gobreaker.StateOpen { // the timer fired a hair early
		b.timer = time.AfterFunc(10*time.Millisecond, b.tick)
	}
	rel := b.takeRelease()
	b.mu.Unlock()
	b.rt.putBack(rel)
}

// changed is gobreaker's OnStateChange. It runs with b.mu held (every call
// into cb holds it) and cb's own lock, so it must not call into cb.
func (b *breaker) changed(_ string, from, to gobreaker.State) {
	rt := b.rt
	st := circuitState(to)
	// The gauge first: whoever sees the new state in Stats sees it in the
	// gauge too.
	rt.metrics.Circuit(rt.handlerBase, rt.c.group, b.route.topic, b.route.eventType, st)
	b.state.Store(int64(st))
	ctx := rt.handlerBase
	if d := b.cause; d != nil {
		ctx = d.ctx
		tracing.RecordCircuit(d.ctx, circuitState(from).String(), st.String())
	}
	log := rt.c.log.With("topic", b.route.topic, "event_type", b.route.eventType, "from", circuitState(from).String())
	switch to {
	case gobreaker.StateOpen:
		log.WarnContext(ctx, "circuit breaker open: the route's handler keeps failing; its records wait, uncommitted and not counted as attempts, and fetching its topic is paused",
			"cool_down", b.cfg.CoolDown)
		clear(b.chosen)
		b.pauseLocked()
		if b.timer != nil {
			b.timer.Stop()
		}
		if !b.stopped {
			b.timer = time.AfterFunc(b.cfg.CoolDown, b.tick)
		}
	case gobreaker.StateHalfOpen:
		log.InfoContext(ctx, "circuit breaker half-open: letting a probe through", "probes", b.cfg.Probes, "waiting", len(b.waiting))
		b.chooseLocked(b.cfg.Probes)
	case gobreaker.StateClosed:
		log.InfoContext(ctx, "circuit breaker closed: the route's records are handled again")
		b.counts.reset()
		b.resumeLocked()
		b.releaseLocked()
	}
}

// circuitState maps gobreaker's states to the metric's.
func circuitState(s gobreaker.State) tracing.CircuitState {
	switch s {
	case gobreaker.StateOpen:
		return tracing.CircuitOpen
	case gobreaker.StateHalfOpen:
		return tracing.CircuitHalfOpen
	}
	return tracing.CircuitClosed
}

// startBreakers makes the breaker of every route whose breaker is on.
// Run calls it once its client exists and before any worker starts.
func (rt *runtime) startBreakers() {
	c := rt.c
	var bs []*breaker
	for topic, byType := range c.routes {
		for typ, r := range byType {
			cfg := c.cfg.breakerFor(topic, typ)
			if cfg.Off {
				r.breaker = nil
				continue
			}
			r.breaker = newBreaker(rt, routeName{topic, typ}, cfg)
			bs = append(bs, r.breaker)
		}
	}
	rt.circuitMu.Lock()
	rt.breakers = bs
	rt.circuitMu.Unlock()
}

// allBreakers returns the Run's breakers.
func (rt *runtime) allBreakers() []*breaker {
	rt.circuitMu.Lock()
	defer rt.circuitMu.Unlock()
	return rt.breakers
}

// wakeBreakers puts every lane waiting for a breaker back in line (see
// breaker.wakeAll).
func (rt *runtime) wakeBreakers() {
	for _, b := range rt.allBreakers() {
		b.wakeAll()
	}
}

// stopBreakers stops the breakers' timers.
func (rt *runtime) stopBreakers() {
	for _, b := range rt.allBreakers() {
		b.stop()
	}
}

// pauseTopic pauses fetching topic while a breaker of one of its routes is
// open: a whole topic, so that partitions assigned meanwhile are paused
// too. franz-go keeps topic pauses apart from the partition pauses of
// pause and pauseLive, and drops what it buffered for a paused topic, to
// fetch it again on resume.
func (rt *runtime) pauseTopic(topic string) {
	rt.circuitMu.Lock()
	defer rt.circuitMu.Unlock()
	if rt.openBreakers == nil {
		rt.openBreakers = map[string]int{}
	}
	rt.openBreakers[topic]++
	if rt.openBreakers[topic] == 1 {
		rt.cl.PauseFetchTopics(topic)
	}
}

// resumeTopic undoes one pauseTopic; fetching resumes when no breaker of
// the topic is open.
func (rt *runtime) resumeTopic(topic string) {
	rt.circuitMu.Lock()
	defer rt.circuitMu.Unlock()
	if rt.openBreakers[topic] == 0 {
		return
	}
	rt.openBreakers[topic]--
	if rt.openBreakers[topic] == 0 {
		delete(rt.openBreakers, topic)
		rt.cl.ResumeFetchTopics(topic)
	}
}

// putBack puts lanes released by a breaker back in line. It never blocks:
// ready holds as many lanes as there can be records in flight.
func (rt *runtime) putBack(ls []*lane) {
	for _, l := range ls {
		rt.ready <- l
	}
}

// circuits returns each breaker's state by route (topic/eventType).
func (rt *runtime) circuits() map[string]string {
	bs := rt.allBreakers()
	if len(bs) == 0 {
		return nil
	}
	out := make(map[string]string, len(bs))
	for _, b := range bs {
		out[b.route.String()] = tracing.CircuitState(b.state.Load()).String()
	}
	return out
}
