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
// type). The breaker counts the route's handler attempts that fail with a
// retryable error (choreo.KindRetryable, a handler timeout, a schema
// registry that cannot be reached) against those that succeed. Once they
// pass a threshold it opens: the route's records wait, uncommitted and
// not counted as attempts (nothing is forwarded to a retry topic or
// dead-lettered for the outage), and fetching the route's topic is paused.
// After CoolDown it lets Probes attempts through (half-open): if they
// succeed it closes and consumption resumes; if one fails it opens again.
//
// Only attempts at records of the source topic, and probes, are counted.
// Permanent errors (decode and schema errors, choreo.Permanent, panics)
// and duplicates are not, so a poison record never opens a breaker; nor
// are failures of records from retry topics, which failed before and
// say more about themselves than about a dependency (they still wait
// while the breaker is open).
//
// A probe is a real attempt. A probe that fails waits for the next
// cool-down like the rest, at the back of the line; a record that has
// failed as the probe as many times as the retry policy's MaxAttempts
// goes on as without a breaker (to a retry topic or the dead-letter
// topic), so that records that fail on their own cannot hold a route
// forever.
//
// A zero field takes its default; a negative ConsecutiveFailures or
// FailureRatio turns that rule off.
type Breaker struct {
	// ConsecutiveFailures opens the breaker after this many failed
	// attempts in a row (default 10).
	ConsecutiveFailures int
	// FailureRatio opens it once this share of the attempts within Window
	// failed (default 0.5), counted only when there were at least
	// MinAttempts of them (default 20).
	FailureRatio float64
	MinAttempts  int
	// Window is the rolling window the counts are kept over (default 1
	// minute, or twice HandlerTimeout if that is longer). It must be
	// longer than HandlerTimeout: the failure of an attempt that started
	// longer ago than Window is not counted, and an attempt against a
	// dependency that hangs fails only at its deadline.
	Window time.Duration
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
// do not pause a route, while an outage pauses it within a second or so
// of traffic.
const (
	defaultBreakerConsecutive = 10
	defaultBreakerRatio       = 0.5
	defaultBreakerMinAttempts = 20
	defaultBreakerWindow      = time.Minute
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
	return b.withDefaults(c.handlerTimeout)
}

// withDefaults fills in b's zero fields.
func (b Breaker) withDefaults(handlerTimeout time.Duration) Breaker {
	if b.ConsecutiveFailures == 0 {
		b.ConsecutiveFailures = defaultBreakerConsecutive
	}
	if b.FailureRatio == 0 {
		b.FailureRatio = defaultBreakerRatio
	}
	if b.MinAttempts == 0 {
		b.MinAttempts = defaultBreakerMinAttempts
	}
	if b.Window == 0 {
		b.Window = max(defaultBreakerWindow, 2*handlerTimeout)
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
func (b Breaker) validate(handlerTimeout time.Duration) error {
	if b.Off {
		return nil
	}
	switch {
	case b.FailureRatio > 1:
		return fmt.Errorf("failure ratio %v: want at most 1 (or negative for no ratio rule)", b.FailureRatio)
	case b.ConsecutiveFailures < 0 && b.FailureRatio < 0:
		return errors.New("neither consecutive failures nor a failure ratio can open it: set Off instead")
	case b.MinAttempts < 0:
		return fmt.Errorf("min attempts %d: want at least 1", b.MinAttempts)
	case b.Window < 0 || b.CoolDown < 0:
		return errors.New("negative window or cool-down")
	case b.Window <= handlerTimeout:
		return fmt.Errorf("window %v: want more than the handler timeout %v (an attempt that fails at its deadline must still count)", b.Window, handlerTimeout)
	case b.Probes < 0:
		return fmt.Errorf("probes %d: want at least 1", b.Probes)
	}
	return nil
}

// validateBreakers checks the consumer's and every route's breaker.
func (c *config) validateBreakers() error {
	if err := c.breaker.withDefaults(c.handlerTimeout).validate(c.handlerTimeout); err != nil {
		return fmt.Errorf("circuit breaker: %w", err)
	}
	for r, b := range c.routeBreakers {
		if err := b.withDefaults(c.handlerTimeout).validate(c.handlerTimeout); err != nil {
			return fmt.Errorf("circuit breaker of %s: %w", r, err)
		}
	}
	return nil
}

// readyToTrip returns gobreaker's trip rule for b.
func (b Breaker) readyToTrip() func(gobreaker.Counts) bool {
	return func(n gobreaker.Counts) bool {
		if b.ConsecutiveFailures > 0 && n.ConsecutiveFailures >= uint32(b.ConsecutiveFailures) {
			return true
		}
		counted := n.TotalSuccesses + n.TotalFailures
		return b.FailureRatio > 0 && counted >= uint32(b.MinAttempts) &&
			float64(n.TotalFailures) >= b.FailureRatio*float64(counted)
	}
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
	cause   *delivery // the delivery whose call into cb is under way
	wakes   uint64    // times the waiting lanes were released
	waiting []*lane   // lanes whose head waits for a state change
	release []*lane   // released lanes to put back in line once mu is unlocked
	timer   *time.Timer
	stopped bool
}

// newBreaker makes the breaker of a route for rt.
func newBreaker(rt *runtime, route routeName, cfg Breaker) *breaker {
	b := &breaker{rt: rt, route: route, cfg: cfg}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:          route.String(),
		MaxRequests:   uint32(cfg.Probes),
		Interval:      cfg.Window,
		BucketPeriod:  cfg.Window / 10,
		Timeout:       cfg.CoolDown,
		ReadyToTrip:   cfg.readyToTrip(),
		OnStateChange: b.changed,
		IsExcluded:    func(err error) bool { return err == errNeutral },
	})
	rt.metrics.Circuit(rt.handlerBase, rt.c.group, route.topic, route.eventType, tracing.CircuitClosed)
	return b
}

// allow asks whether d may make an attempt now. If so, d.settle holds the
// function that reports its result (see settle); if not, d waits (wait).
// A nil breaker allows everything.
func (b *breaker) allow(d *delivery) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	b.cause = d
	done, err := b.cb.Allow()
	b.cause = nil
	if err == nil {
		d.settle = done
		d.probe = tracing.CircuitState(b.state.Load()) == tracing.CircuitHalfOpen
		if d.probe {
			tracing.RecordCircuit(d.ctx, "half-open", "half-open") // this record is the probe
		}
	}
	d.wake = b.wakes
	rel := b.takeRelease()
	b.mu.Unlock()
	b.rt.putBack(rel)
	return err == nil
}

// settle reports the result of d's attempt (nil, errFailure or errNeutral)
// and whether the breaker is closed after it. A failure of a record from a
// retry topic counts only when it was the probe (see Breaker). A nil
// breaker is always closed.
func (b *breaker) settle(d *delivery, result error) (closed bool) {
	if b == nil {
		return true
	}
	if result == errFailure && d.origin != nil && !d.probe {
		result = errNeutral
	}
	b.mu.Lock()
	if done := d.settle; done != nil {
		d.settle = nil
		b.cause = d
		done(result)
		b.cause = nil
		if result == errNeutral && tracing.CircuitState(b.state.Load()) == tracing.CircuitHalfOpen {
			b.releaseLocked() // the probe said nothing: let another through
		}
	}
	closed = tracing.CircuitState(b.state.Load()) == tracing.CircuitClosed
	d.wake = b.wakes
	rel := b.takeRelease()
	b.mu.Unlock()
	b.rt.putBack(rel)
	return closed
}

// wait parks lane l, whose head d was not let through, until the
// breaker's state changes; if it changed since d asked, l goes back in
// line at once.
func (b *breaker) wait(l *lane, d *delivery) {
	b.mu.Lock()
	if b.wakes != d.wake || b.stopped {
		b.mu.Unlock()
		b.rt.putBack([]*lane{l})
		return
	}
	b.waiting = append(b.waiting, l)
	b.mu.Unlock()
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

// releaseLocked moves the waiting lanes to the release list, in the order
// they came, so the next probe is the record that waited longest.
func (b *breaker) releaseLocked() {
	b.wakes++
	b.release = append(b.release, b.waiting...)
	b.waiting = nil
}

// takeRelease returns the lanes to put back in line; mu must be held.
func (b *breaker) takeRelease() []*lane {
	rel := b.release
	b.release = nil
	return rel
}

// tick runs when the cool-down has passed: reading the state moves the
// breaker to half-open (gobreaker moves it lazily), which releases the
// waiting lanes for the probe.
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
	b.state.Store(int64(st))
	rt.metrics.Circuit(rt.handlerBase, rt.c.group, b.route.topic, b.route.eventType, st)
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
		rt.pauseTopic(b.route.topic)
		if b.timer != nil {
			b.timer.Stop()
		}
		if !b.stopped {
			b.timer = time.AfterFunc(b.cfg.CoolDown, b.tick)
		}
	case gobreaker.StateHalfOpen:
		log.InfoContext(ctx, "circuit breaker half-open: letting a probe through", "probes", b.cfg.Probes)
		rt.resumeTopic(b.route.topic)
		b.releaseLocked()
	case gobreaker.StateClosed:
		log.InfoContext(ctx, "circuit breaker closed: the route's records are handled again")
		if from == gobreaker.StateOpen {
			rt.resumeTopic(b.route.topic)
		}
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
