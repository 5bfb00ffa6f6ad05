package flows

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/choreokit/choreo/schema"
)

// View answers questions about the index: the flows, one flow's causal
// tree, an event, the catalog, the stuck flows, a service's dead letters.
// The HTTP API (Handler) serves its answers as JSON, and a page can
// render the same values. It is safe for concurrent use.
type View struct {
	store    Store
	registry *schema.Registry
	now      func() time.Time
	minAfter time.Duration
	window   time.Duration
	ttl      time.Duration

	mu      sync.Mutex
	learned *learned
}

// ViewOption configures NewView.
type ViewOption func(*View)

// WithRegistry lets the catalog name the registered schema versions of
// each event type and carry its Avro schema.
func WithRegistry(r *schema.Registry) ViewOption { return func(v *View) { v.registry = r } }

// WithClock sets the view's clock (time.Now), for tests.
func WithClock(now func() time.Time) ViewOption { return func(v *View) { v.now = now } }

// MinAfter sets the floor of the learned stuck threshold (DefaultMinAfter).
func MinAfter(d time.Duration) ViewOption { return func(v *View) { v.minAfter = d } }

// LearnWindow sets how far back the view looks to learn terminal types and
// flow durations (DefaultRetention).
func LearnWindow(d time.Duration) ViewOption { return func(v *View) { v.window = d } }

// LearnTTL sets how long what the view learns from the traffic (terminal
// types, flow durations, who reacts to what: a scan of the whole index)
// is reused before it is learned again (DefaultLearnTTL); 0 learns it
// for every answer.
func LearnTTL(d time.Duration) ViewOption { return func(v *View) { v.ttl = d } }

// DefaultLearnTTL is how long the view reuses what it learned.
const DefaultLearnTTL = 5 * time.Second

// DefaultMinAfter is the floor of the learned stuck threshold: a flow is
// never called stuck after less than this without --after.
const DefaultMinAfter = 30 * time.Second

// NewView returns a view of the index in store.
func NewView(store Store, opts ...ViewOption) *View {
	v := &View{store: store, now: time.Now, minAfter: DefaultMinAfter, window: DefaultRetention, ttl: DefaultLearnTTL}
	for _, o := range opts {
		o(v)
	}
	return v
}

// Store returns the store the view reads.
func (v *View) Store() Store { return v.store }

// Status is where a flow stands.
type Status string

// Flow statuses.
const (
	StatusRunning    Status = "running"     // events are still expected, within the threshold
	StatusCompleted  Status = "completed"   // its last event is of a terminal type, and nothing is pending
	StatusStuck      Status = "stuck"       // no event for longer than the threshold, or an event a group has not consumed within it
	StatusDeadLetter Status = "dead_letter" // an event of it was dead-lettered (and not redriven since)
)

// Reason kinds of a stuck flow.
const (
	ReasonStalled    = "stalled"     // its last event is not terminal and older than the threshold
	ReasonUnconsumed = "unconsumed"  // a subscribed group has not consumed an event within the threshold
	ReasonDeadLetter = "dead_letter" // an event was dead-lettered
)

// Reason is why a flow is stuck, what it waits on and how to look closer.
type Reason struct {
	Kind      string    `json:"kind"` // ReasonStalled, ReasonUnconsumed or ReasonDeadLetter
	Detail    string    `json:"detail"`
	EventID   string    `json:"eventId"`
	Type      string    `json:"type"`
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	WaitingOn []string  `json:"waitingOn"` // the services (groups) it waits on
	Since     time.Time `json:"since"`     // of the event, or the dead letter
	Command   string    `json:"command"`   // the command that shows more
}

// learned is what the view learns from the traffic: the terminal event
// types, the stuck threshold, which services react to which types.
type learned struct {
	at        time.Time
	terminal  map[string]bool
	seen      []string
	reactors  map[string][]string // type -> sources of events it caused
	causes    map[string][]string // type -> types of the events that caused it
	durations []time.Duration
}

func (v *View) learn(ctx context.Context) (*learned, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	if v.learned != nil && now.Sub(v.learned.at) < v.ttl && !now.Before(v.learned.at) {
		return v.learned, nil
	}
	stats, err := v.store.TypeStats(ctx, now)
	if err != nil {
		return nil, err
	}
	reactions, err := v.store.Reactions(ctx)
	if err != nil {
		return nil, err
	}
	l := &learned{at: now, terminal: map[string]bool{}, reactors: map[string][]string{}, causes: map[string][]string{}}
	parents := map[string]bool{}
	for _, r := range reactions {
		parents[r.Cause] = true
		if !slices.Contains(l.reactors[r.Cause], r.Source) {
			l.reactors[r.Cause] = append(l.reactors[r.Cause], r.Source)
		}
		if !slices.Contains(l.causes[r.Effect], r.Cause) {
			l.causes[r.Effect] = append(l.causes[r.Effect], r.Cause)
		}
	}
	for _, s := range stats {
		if s.Type == "" || slices.Contains(l.seen, s.Type) {
			continue
		}
		l.seen = append(l.seen, s.Type)
		if !parents[s.Type] {
			l.terminal[s.Type] = true
		}
	}
	sort.Strings(l.seen)
	if l.durations, err = v.store.Durations(ctx, setKeys(l.terminal), now.Add(-v.window), 10000); err != nil {
		return nil, err
	}
	v.learned = l
	return l, nil
}

func setKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Thresholds is what decides whether a flow is stuck: the time after
// which a flow without news, or an event not consumed, is stuck, and the
// event types that end a flow. Zero values are learned from the traffic.
type Thresholds struct {
	After    time.Duration // 0: learned (p99 of the durations of finished flows × 3, at least MinAfter)
	Terminal []string      // nil: learned (the types no service reacts to: never a causation parent)
}

// Criteria are the thresholds in force, and where they came from.
type Criteria struct {
	After           time.Duration `json:"-"`
	AfterText       string        `json:"after"`        // After as Go duration text
	AfterSeconds    float64       `json:"afterSeconds"` // After in seconds
	AfterLearned    bool          `json:"afterLearned"`
	AfterBasis      string        `json:"afterBasis"` // how it was learned
	Terminal        []string      `json:"terminalTypes"`
	TerminalLearned bool          `json:"terminalLearned"`
}

// criteria resolves th against what was learned.
func (v *View) criteria(l *learned, th Thresholds) Criteria {
	c := Criteria{After: th.After, Terminal: th.Terminal}
	if c.Terminal == nil {
		c.Terminal, c.TerminalLearned = setKeys(l.terminal), true
	}
	if c.After <= 0 {
		c.AfterLearned = true
		if len(l.durations) == 0 {
			c.After, c.AfterBasis = v.minAfter, fmt.Sprintf("no finished flows yet: the floor, %v", v.minAfter)
		} else {
			ds := slices.Clone(l.durations)
			slices.Sort(ds)
			p99 := ds[min(len(ds)-1, (len(ds)*99+99)/100-1)]
			c.After = 3 * p99
			c.AfterBasis = fmt.Sprintf("p99 of %d finished flows (%v) × 3", len(ds), p99.Round(time.Millisecond))
			if c.After < v.minAfter {
				c.After = v.minAfter
				c.AfterBasis += fmt.Sprintf(", raised to the floor %v", v.minAfter)
			}
		}
	}
	c.AfterText, c.AfterSeconds = c.After.String(), c.After.Seconds()
	return c
}

// FlowItem is a flow in a list: its summary and where it stands.
type FlowItem struct {
	FlowSummary
	DurationMs float64  `json:"durationMs"`
	Status     Status   `json:"status"`
	Reasons    []Reason `json:"reasons,omitempty"`
}

// ListOptions selects flows for Flows.
type ListOptions struct {
	FlowFilter
	Status Status // "" for any
	Thresholds
}

// FlowList is an answer of Flows.
type FlowList struct {
	Flows    []FlowItem `json:"flows"`
	Criteria Criteria   `json:"criteria"`
}

// Flows returns the flows matching o, the most recently active first.
func (v *View) Flows(ctx context.Context, o ListOptions) (FlowList, error) {
	l, err := v.learn(ctx)
	if err != nil {
		return FlowList{}, err
	}
	crit := v.criteria(l, o.Thresholds)
	limit := o.Limit
	if limit <= 0 {
		limit = 100
	}
	out := FlowList{Flows: []FlowItem{}, Criteria: crit}
	if o.Status == StatusStuck || o.Status == StatusDeadLetter {
		rep, err := v.stuck(ctx, crit, 0)
		if err != nil {
			return FlowList{}, err
		}
		for _, it := range rep {
			if it.Status != o.Status || !matches(it.FlowSummary, o.FlowFilter) {
				continue
			}
			out.Flows = append(out.Flows, it)
			if len(out.Flows) == limit {
				break
			}
		}
		return out, nil
	}
	pending, err := v.pendingByFlow(ctx, crit)
	if err != nil {
		return FlowList{}, err
	}
	f := o.FlowFilter
	f.Limit = limit
	for scanned := 0; scanned < 20*limit; {
		page, err := v.store.Flows(ctx, f)
		if err != nil {
			return FlowList{}, err
		}
		items, err := v.items(ctx, page, crit, pending)
		if err != nil {
			return FlowList{}, err
		}
		for _, it := range items {
			if o.Status == "" || it.Status == o.Status {
				out.Flows = append(out.Flows, it)
				if len(out.Flows) == limit {
					return out, nil
				}
			}
		}
		if len(page) < f.Limit || o.Status == "" {
			break
		}
		scanned += len(page)
		f.Before = page[len(page)-1].LastActivity
	}
	return out, nil
}

// matches reports whether s passes f's type, service, key and since.
func matches(s FlowSummary, f FlowFilter) bool {
	return (f.Type == "" || slices.Contains(s.Types, f.Type)) &&
		(f.Service == "" || slices.Contains(s.Services, f.Service)) &&
		(f.Key == "" || s.RootKey == f.Key) &&
		(f.Since.IsZero() || !s.LastActivity.Before(f.Since))
}

// pendingByFlow returns the unconsumed events due before the threshold,
// by flow.
func (v *View) pendingByFlow(ctx context.Context, crit Criteria) (map[string][]Pending, error) {
	pend, err := v.store.Unconsumed(ctx, v.now().Add(-crit.After), 5000)
	if err != nil {
		return nil, err
	}
	out := map[string][]Pending{}
	for _, p := range pend {
		out[p.CorrelationID] = append(out[p.CorrelationID], p)
	}
	return out, nil
}

// items gives each summary its status and reasons.
func (v *View) items(ctx context.Context, page []FlowSummary, crit Criteria, pending map[string][]Pending) ([]FlowItem, error) {
	var dl []string
	for _, s := range page {
		if s.DeadLetters > 0 {
			dl = append(dl, s.CorrelationID)
		}
	}
	open, err := v.openDeadLetters(ctx, dl)
	if err != nil {
		return nil, err
	}
	l, err := v.learn(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]FlowItem, 0, len(page))
	for _, s := range page {
		out = append(out, v.item(s, crit, l, pending[s.CorrelationID], open[s.CorrelationID]))
	}
	return out, nil
}

// item decides the status of one flow.
func (v *View) item(s FlowSummary, crit Criteria, l *learned, pending []Pending, deadLetters []Record) FlowItem {
	it := FlowItem{FlowSummary: s, DurationMs: ms(s.Duration())}
	now := v.now()
	terminal := slices.Contains(crit.Terminal, s.LastType)
	for _, d := range deadLetters {
		it.Reasons = append(it.Reasons, Reason{
			Kind:    ReasonDeadLetter,
			Detail:  fmt.Sprintf("%s dead-lettered %s (%s) after %d attempts: %s", d.Group, shortType(d.Type), d.ErrorKind, d.Attempt, d.ErrorMessage),
			EventID: d.EventID, Type: d.Type, Topic: d.Topic, Partition: d.Partition, Offset: d.Offset,
			WaitingOn: []string{d.Group}, Since: d.FailedAt,
			Command: fmt.Sprintf("choreo dlq show %s %d:%d", d.Group, d.Partition, d.Offset),
		})
	}
	seen := map[string]bool{}
	for _, p := range pending {
		k := p.Waiting + " " + p.EventID
		if seen[k] {
			continue
		}
		seen[k] = true
		what := "has not consumed"
		if p.Kind == KindRetry {
			what = "has not retried"
		}
		it.Reasons = append(it.Reasons, Reason{
			Kind: ReasonUnconsumed,
			Detail: fmt.Sprintf("%s %s %s (%s) for %v (committed offset %d, the event is at %d)", p.Waiting, what,
				shortType(p.Type), p.Coordinates(), now.Sub(p.Due()).Round(time.Second), p.Committed, p.Offset),
			EventID: p.EventID, Type: p.Type, Topic: p.Topic, Partition: p.Partition, Offset: p.Offset,
			WaitingOn: []string{p.Waiting}, Since: p.Due(),
			Command: "choreo trace " + s.CorrelationID,
		})
	}
	// A dead letter explains a stall: it is not reported twice.
	if !terminal && len(deadLetters) == 0 && now.Sub(s.LastActivity) > crit.After && s.LastType != "" {
		waiting := slices.Clone(l.reactors[s.LastType])
		if len(waiting) == 0 {
			for _, p := range pending {
				if p.EventID == s.LastEventID && !slices.Contains(waiting, p.Waiting) {
					waiting = append(waiting, p.Waiting)
				}
			}
		}
		sort.Strings(waiting)
		detail := fmt.Sprintf("no event for %v after %s", now.Sub(s.LastActivity).Round(time.Second), shortType(s.LastType))
		switch len(waiting) {
		case 0:
		case 1:
			detail += ", which " + waiting[0] + " reacts to"
		default:
			detail += ", which " + strings.Join(waiting, " and ") + " react to"
		}
		it.Reasons = append(it.Reasons, Reason{
			Kind: ReasonStalled, Detail: detail, EventID: s.LastEventID, Type: s.LastType,
			Topic: s.LastTopic, Partition: s.LastPartition, Offset: s.LastOffset,
			WaitingOn: waiting, Since: s.LastActivity, Command: "choreo trace " + s.CorrelationID,
		})
	}
	switch {
	case len(deadLetters) > 0:
		it.Status = StatusDeadLetter
	case len(it.Reasons) > 0:
		it.Status = StatusStuck
	case terminal:
		it.Status = StatusCompleted
	default:
		it.Status = StatusRunning
	}
	return it
}

// shortType is the last dotted part of an event type: OrderPlaced for
// shop.orders.OrderPlaced.
func shortType(t string) string {
	if i := strings.LastIndexByte(t, '.'); i >= 0 && i < len(t)-1 {
		return t[i+1:]
	}
	return t
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// openDeadLetters returns, by flow, the dead letters of the flows named
// that were not redriven successfully: a redrive of the dead letter that
// its group consumed, with no dead letter of the redrive after it.
func (v *View) openDeadLetters(ctx context.Context, ids []string) (map[string][]Record, error) {
	out := map[string][]Record{}
	if len(ids) == 0 {
		return out, nil
	}
	dls, err := v.store.RecordsOfKind(ctx, KindDeadLetter, ids)
	if err != nil {
		return nil, err
	}
	redrives, err := v.store.RecordsOfKind(ctx, KindRedrive, ids)
	if err != nil {
		return nil, err
	}
	groups, err := v.groups(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range dls {
		if !resolved(d, dls, redrives, groups) {
			out[d.CorrelationID] = append(out[d.CorrelationID], d)
		}
	}
	return out, nil
}

// resolved reports whether dead letter d was redriven, its group consumed
// the redrive, and the redrive was not dead-lettered again.
func resolved(d Record, dls, redrives []Record, groups map[string]*Group) bool {
	from := d.Coordinates()
	for _, o := range dls {
		if o.ReplayedFrom == from {
			return false
		}
	}
	for _, r := range redrives {
		if r.ReplayedFrom != from {
			continue
		}
		if g := groups[r.Group]; g != nil {
			if c, ok := g.Committed(r.Topic, r.Partition); ok && c > r.Offset {
				return true
			}
		}
	}
	return false
}

func (v *View) groups(ctx context.Context) (map[string]*Group, error) {
	gs, err := v.store.Groups(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*Group, len(gs))
	for i := range gs {
		out[gs[i].Name] = &gs[i]
	}
	return out, nil
}

// StuckReport is the answer of Stuck.
type StuckReport struct {
	GeneratedAt time.Time  `json:"generatedAt"`
	Criteria    Criteria   `json:"criteria"`
	Flows       []FlowItem `json:"flows"`
}

// Stuck returns the flows that started and did not finish: no event for
// longer than the threshold while the last is not of a terminal type,
// an event a subscribed group has not consumed within the threshold, or
// a dead letter not redriven since. Each comes with its reasons, the
// services it waits on and a command to look closer. limit (0: 1000)
// caps the flows returned.
func (v *View) Stuck(ctx context.Context, th Thresholds, limit int) (StuckReport, error) {
	l, err := v.learn(ctx)
	if err != nil {
		return StuckReport{}, err
	}
	crit := v.criteria(l, th)
	items, err := v.stuck(ctx, crit, limit)
	if err != nil {
		return StuckReport{}, err
	}
	return StuckReport{GeneratedAt: v.now().UTC(), Criteria: crit, Flows: items}, nil
}

func (v *View) stuck(ctx context.Context, crit Criteria, limit int) ([]FlowItem, error) {
	if limit <= 0 {
		limit = 1000
	}
	now := v.now()
	since := now.Add(-v.window)
	cands := map[string]FlowSummary{}
	stalled, err := v.store.Flows(ctx, FlowFilter{Since: since, Before: now.Add(-crit.After), NotLastTypes: crit.Terminal, Limit: limit})
	if err != nil {
		return nil, err
	}
	for _, s := range stalled {
		cands[s.CorrelationID] = s
	}
	dead, err := v.store.Flows(ctx, FlowFilter{Since: since, DeadLettered: true, Limit: limit})
	if err != nil {
		return nil, err
	}
	for _, s := range dead {
		cands[s.CorrelationID] = s
	}
	pending, err := v.pendingByFlow(ctx, crit)
	if err != nil {
		return nil, err
	}
	for id := range pending {
		if _, ok := cands[id]; ok || len(cands) >= 3*limit {
			continue
		}
		s, err := v.store.Flow(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		cands[id] = s
	}
	page := make([]FlowSummary, 0, len(cands))
	for _, s := range cands {
		page = append(page, s)
	}
	sort.Slice(page, func(i, j int) bool {
		if !page[i].LastActivity.Equal(page[j].LastActivity) {
			return page[i].LastActivity.After(page[j].LastActivity)
		}
		return page[i].CorrelationID < page[j].CorrelationID
	})
	items, err := v.items(ctx, page, crit, pending)
	if err != nil {
		return nil, err
	}
	out := []FlowItem{}
	for _, it := range items {
		if len(it.Reasons) > 0 {
			out = append(out, it)
			if len(out) == limit {
				break
			}
		}
	}
	return out, nil
}

// Consumption is whether one group has consumed an event.
type Consumption struct {
	Group string `json:"group"`
	// Status is consumed (its committed offset is past the event),
	// pending (not yet), retrying (it failed the event and a retry
	// waits), dead_letter (it dead-lettered the event), or redriven (a
	// dead letter of it was redriven and consumed).
	Status    string `json:"status"`
	Committed *int64 `json:"committed,omitempty"` // its committed offset on the partition, when it has one
}

// Failure is a retry-topic forward or a dead letter of an event: who
// failed it, when, why.
type Failure struct {
	Group        string    `json:"group"`
	Kind         Kind      `json:"kind"` // KindRetry or KindDeadLetter
	ErrorKind    string    `json:"errorKind"`
	ErrorMessage string    `json:"errorMessage"`
	Attempt      int       `json:"attempt"`
	At           time.Time `json:"at"`
	SinceStartMs float64   `json:"sinceStartMs"`
	Topic        string    `json:"topic"`
	Partition    int32     `json:"partition"`
	Offset       int64     `json:"offset"`
	NotBefore    time.Time `json:"notBefore,omitzero"` // of a retry
	Consumed     bool      `json:"consumed"`           // a retry its group has taken up; a dead letter redriven and consumed
	Command      string    `json:"command,omitempty"`  // for a dead letter: choreo dlq show …
}

// Node is one event of a flow, in the causal tree.
type Node struct {
	EventID      string        `json:"eventId"`
	ParentID     string        `json:"parentId,omitempty"` // the causation id, when that event is in the flow
	CausationID  string        `json:"causationId,omitempty"`
	Depth        int           `json:"depth"` // 0 for a root
	Children     []string      `json:"children"`
	Type         string        `json:"type"`
	Source       string        `json:"source"`
	Topic        string        `json:"topic"`
	Partition    int32         `json:"partition"`
	Offset       int64         `json:"offset"`
	Key          string        `json:"key"`
	Time         time.Time     `json:"time"`
	SinceStartMs float64       `json:"sinceStartMs"`
	Terminal     bool          `json:"terminal"`
	Copies       int           `json:"copies"` // records of it on its topic beyond the first (republished)
	Seen         bool          `json:"seen"`   // false when only a retry or dead letter of it is indexed
	Consumers    []Consumption `json:"consumers"`
	Failures     []Failure     `json:"failures"` // retries and dead letters, by time
}

// Flow is one flow whole: its status, its events as a causal tree (in
// depth-first order, each with its depth, so a page or a terminal draws it
// top-down), and its lanes (services in order of first appearance) for a
// sequence diagram.
type Flow struct {
	FlowItem
	Criteria Criteria `json:"criteria"`
	Lanes    []string `json:"lanes"`
	Nodes    []Node   `json:"nodes"`   // the events, as a causal tree in depth-first order
	Records  []Record `json:"records"` // every indexed record of the flow, by time
}

// Flow returns the flow with the correlation id, or an error wrapping
// ErrNotFound.
func (v *View) Flow(ctx context.Context, correlationID string, th Thresholds) (Flow, error) {
	s, err := v.store.Flow(ctx, correlationID)
	if err != nil {
		return Flow{}, err
	}
	recs, err := v.store.FlowRecords(ctx, correlationID)
	if err != nil {
		return Flow{}, err
	}
	l, err := v.learn(ctx)
	if err != nil {
		return Flow{}, err
	}
	crit := v.criteria(l, th)
	pending, err := v.pendingByFlow(ctx, crit)
	if err != nil {
		return Flow{}, err
	}
	groups, err := v.groups(ctx)
	if err != nil {
		return Flow{}, err
	}
	var dls, redrives []Record
	for _, r := range recs {
		switch r.Kind {
		case KindDeadLetter:
			dls = append(dls, r)
		case KindRedrive:
			redrives = append(redrives, r)
		}
	}
	var open []Record
	for _, d := range dls {
		if !resolved(d, dls, redrives, groups) {
			open = append(open, d)
		}
	}
	f := Flow{FlowItem: v.item(s, crit, l, pending[correlationID], open), Criteria: crit, Records: recs}
	f.Nodes, f.Lanes = buildTree(s, recs, groups, crit, dls, redrives)
	return f, nil
}

// buildTree makes the causal tree of a flow's records.
func buildTree(s FlowSummary, recs []Record, groups map[string]*Group, crit Criteria, dls, redrives []Record) ([]Node, []string) {
	type entry struct {
		node  Node
		first *Record
	}
	byID := map[string]*entry{}
	var order []string
	for i := range recs {
		r := &recs[i]
		if r.EventID == "" {
			continue
		}
		e, ok := byID[r.EventID]
		if !ok {
			e = &entry{node: Node{EventID: r.EventID, Children: []string{}, Consumers: []Consumption{}, Failures: []Failure{}}}
			byID[r.EventID] = e
			order = append(order, r.EventID)
		}
		switch r.Kind {
		case KindEvent:
			if e.first == nil || !e.node.Seen {
				e.first, e.node.Seen = r, true
			} else {
				e.node.Copies++
			}
		case KindRetry, KindDeadLetter:
			if e.first == nil {
				e.first = r
			}
			fl := Failure{Group: r.Group, Kind: r.Kind, ErrorKind: r.ErrorKind, ErrorMessage: r.ErrorMessage,
				Attempt: r.Attempt, At: r.FailedAt, SinceStartMs: ms(r.FailedAt.Sub(s.Start)), Topic: r.Topic,
				Partition: r.Partition, Offset: r.Offset, NotBefore: r.NotBefore}
			if r.Kind == KindDeadLetter {
				fl.Command = fmt.Sprintf("choreo dlq show %s %d:%d", r.Group, r.Partition, r.Offset)
				fl.Consumed = resolved(*r, dls, redrives, groups)
			} else if g := groups[r.Group]; g != nil {
				c, ok := g.Committed(r.Topic, r.Partition)
				fl.Consumed = ok && c > r.Offset
			}
			e.node.Failures = append(e.node.Failures, fl)
		case KindRedrive:
			if e.first == nil {
				e.first = r
			}
		}
	}
	for _, id := range order {
		e := byID[id]
		r := e.first
		n := &e.node
		n.Type, n.Source, n.Time, n.Key, n.CausationID = r.Type, r.Source, r.Time, r.Key, r.CausationID
		n.Topic, n.Partition, n.Offset = r.Topic, r.Partition, r.Offset
		if !n.Seen && r.OriginalTopic != "" { // where it was published, as the failure says
			n.Topic, n.Partition, n.Offset = r.OriginalTopic, r.OriginalPartition, r.OriginalOffset
		}
		n.SinceStartMs = ms(n.Time.Sub(s.Start))
		n.Terminal = slices.Contains(crit.Terminal, n.Type)
		sort.SliceStable(n.Failures, func(i, j int) bool { return n.Failures[i].At.Before(n.Failures[j].At) })
		n.Consumers = consumption(n, groups)
	}
	var roots []string
	for _, id := range order {
		n := &byID[id].node
		if p, ok := byID[n.CausationID]; ok && n.CausationID != id {
			n.ParentID = n.CausationID
			p.node.Children = append(p.node.Children, id)
		} else {
			roots = append(roots, id)
		}
	}
	byTime := func(ids []string) {
		sort.SliceStable(ids, func(i, j int) bool { return byID[ids[i]].node.Time.Before(byID[ids[j]].node.Time) })
	}
	byTime(roots)
	var out []Node
	visited := map[string]bool{}
	var walk func(id string, depth int)
	walk = func(id string, depth int) {
		if visited[id] { // a cycle of causation ids: never loop
			return
		}
		visited[id] = true
		n := &byID[id].node
		n.Depth = depth
		byTime(n.Children)
		out = append(out, *n)
		for _, c := range n.Children {
			walk(c, depth+1)
		}
	}
	for _, id := range roots {
		walk(id, 0)
	}
	for _, id := range order { // the members of a causation cycle, as roots
		if !visited[id] {
			walk(id, 0)
		}
	}
	// Lanes: publishers and consumers in order of first appearance.
	var lanes []string
	add := func(name string) {
		if name != "" && !slices.Contains(lanes, name) {
			lanes = append(lanes, name)
		}
	}
	chrono := slices.Clone(out)
	sort.SliceStable(chrono, func(i, j int) bool { return chrono[i].Time.Before(chrono[j].Time) })
	for _, n := range chrono {
		add(n.Source)
		for _, c := range n.Consumers {
			add(c.Group)
		}
	}
	return out, lanes
}

// consumption says, for each group subscribed to the event's topic or
// that failed it, whether it has consumed it.
func consumption(n *Node, groups map[string]*Group) []Consumption {
	names := map[string]bool{}
	for name, g := range groups {
		if g.Subscribes(n.Topic) {
			names[name] = true
		}
	}
	for _, f := range n.Failures {
		names[f.Group] = true
	}
	out := []Consumption{}
	for _, name := range setKeys(names) {
		c := Consumption{Group: name, Status: "pending"}
		if g := groups[name]; g != nil {
			if off, ok := g.Committed(n.Topic, n.Partition); ok {
				c.Committed = &off
				if off > n.Offset && n.Seen {
					c.Status = "consumed"
				}
			}
		}
		var lastRetry, lastDead *Failure
		for i := range n.Failures {
			f := &n.Failures[i]
			if f.Group != name {
				continue
			}
			if f.Kind == KindRetry {
				lastRetry = f
			} else {
				lastDead = f
			}
		}
		switch {
		case lastDead != nil && lastDead.Consumed:
			c.Status = "redriven"
		case lastDead != nil:
			c.Status = "dead_letter"
		case lastRetry != nil && !lastRetry.Consumed:
			c.Status = "retrying"
		}
		out = append(out, c)
	}
	return out
}

// EventDetail is one event: its node (as in its flow's tree) and every
// record carrying it.
type EventDetail struct {
	CorrelationID string   `json:"correlationId"`
	Event         Node     `json:"event"`
	Records       []Record `json:"records"`
}

// Event returns the event with the id, or an error wrapping ErrNotFound.
func (v *View) Event(ctx context.Context, id string) (EventDetail, error) {
	recs, err := v.store.EventRecords(ctx, id)
	if err != nil {
		return EventDetail{}, err
	}
	if len(recs) == 0 {
		return EventDetail{}, fmt.Errorf("event %s: %w", id, ErrNotFound)
	}
	corr := recs[0].CorrelationID
	if corr == "" {
		return EventDetail{}, fmt.Errorf("event %s: %w", id, ErrNotFound)
	}
	f, err := v.Flow(ctx, corr, Thresholds{})
	if err != nil {
		return EventDetail{}, err
	}
	for _, n := range f.Nodes {
		if n.EventID == id {
			return EventDetail{CorrelationID: corr, Event: n, Records: recs}, nil
		}
	}
	return EventDetail{}, fmt.Errorf("event %s: %w", id, ErrNotFound)
}

// Match is a flow that Lookup found, and how.
type Match struct {
	By            string    `json:"by"` // correlationId, eventId or key
	CorrelationID string    `json:"correlationId"`
	RootType      string    `json:"rootType"`
	RootKey       string    `json:"rootKey"`
	Start         time.Time `json:"start"`
}

// Lookup finds the flows that q names: as a correlation id, an event id,
// or the key of an event (an order id), most recent first, at most limit.
func (v *View) Lookup(ctx context.Context, q string, limit int) ([]Match, error) {
	if limit <= 0 {
		limit = 20
	}
	out := []Match{}
	add := func(by, id string) error {
		for _, m := range out {
			if m.CorrelationID == id {
				return nil
			}
		}
		s, err := v.store.Flow(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		out = append(out, Match{By: by, CorrelationID: id, RootType: s.RootType, RootKey: s.RootKey, Start: s.Start})
		return nil
	}
	if q == "" {
		return out, nil
	}
	if err := add("correlationId", q); err != nil {
		return nil, err
	}
	recs, err := v.store.EventRecords(ctx, q)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.CorrelationID != "" {
			if err := add("eventId", r.CorrelationID); err != nil {
				return nil, err
			}
		}
	}
	ids, err := v.store.CorrelationsByKey(ctx, q, limit)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if err := add("key", id); err != nil {
			return nil, err
		}
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// DeadLetter is a dead letter of a service as the API lists it.
type DeadLetter struct {
	Record
	Redriven bool   `json:"redriven"` // redriven and consumed since, with no new dead letter
	Command  string `json:"command"`  // choreo dlq show …
	Redrive  string `json:"redrive"`  // choreo dlq redrive … of this one
	Trace    string `json:"trace,omitempty"`
}

// DeadLetters returns a group's dead letters, the most recent first.
func (v *View) DeadLetters(ctx context.Context, group string, limit int) ([]DeadLetter, error) {
	recs, err := v.store.DeadLetters(ctx, group, limit)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range recs {
		if r.CorrelationID != "" && !slices.Contains(ids, r.CorrelationID) {
			ids = append(ids, r.CorrelationID)
		}
	}
	all, err := v.store.RecordsOfKind(ctx, KindDeadLetter, ids)
	if err != nil {
		return nil, err
	}
	redrives, err := v.store.RecordsOfKind(ctx, KindRedrive, ids)
	if err != nil {
		return nil, err
	}
	groups, err := v.groups(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, 0, len(recs))
	for _, r := range recs {
		d := DeadLetter{Record: r, Redriven: resolved(r, all, redrives, groups),
			Command: fmt.Sprintf("choreo dlq show %s %d:%d", r.Group, r.Partition, r.Offset),
			Redrive: fmt.Sprintf("choreo dlq redrive %s %d:%d", r.Group, r.Partition, r.Offset)}
		if r.CorrelationID != "" {
			d.Trace = "choreo trace " + r.CorrelationID
		}
		out = append(out, d)
	}
	return out, nil
}

// ServiceInfo is a service as the index knows it: a consumer group, a
// producer (ce_source), or both under one name.
type ServiceInfo struct {
	Name        string   `json:"name"`
	Group       bool     `json:"group"`    // a consumer group of this name exists
	Producer    bool     `json:"producer"` // events with this ce_source were seen
	State       string   `json:"state,omitempty"`
	Members     int      `json:"members"`
	Topics      []string `json:"topics"`
	DeadLetters int      `json:"deadLetters"` // in the index (at most 1000 counted)
}

// Services returns the services the index knows, by name.
func (v *View) Services(ctx context.Context) ([]ServiceInfo, error) {
	groups, err := v.store.Groups(ctx)
	if err != nil {
		return nil, err
	}
	stats, err := v.store.TypeStats(ctx, v.now())
	if err != nil {
		return nil, err
	}
	dls, err := v.store.DeadLetters(ctx, "", 1000)
	if err != nil {
		return nil, err
	}
	by := map[string]*ServiceInfo{}
	get := func(n string) *ServiceInfo {
		if by[n] == nil {
			by[n] = &ServiceInfo{Name: n, Topics: []string{}}
		}
		return by[n]
	}
	for _, g := range groups {
		s := get(g.Name)
		s.Group, s.State, s.Members, s.Topics = true, g.State, g.Members, g.Topics
	}
	for _, st := range stats {
		if st.Source != "" {
			get(st.Source).Producer = true
		}
	}
	for _, d := range dls {
		get(d.Group).DeadLetters++
	}
	out := make([]ServiceInfo, 0, len(by))
	for _, n := range setKeys(func() map[string]bool {
		m := map[string]bool{}
		for k := range by {
			m[k] = true
		}
		return m
	}()) {
		out = append(out, *by[n])
	}
	return out, nil
}
